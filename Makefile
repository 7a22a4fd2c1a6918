# Genesis fleet control. `make help` lists every target.
SHELL := /bin/bash
GO ?= go
BIN := bin
CACHE := $(CURDIR)/.cache
DEMO_ARGS ?=
GOTEST_FLAGS ?= -race -count=1
BINARIES := genesis genesis-reconciler genesis-agent genesis-dosim

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets and what they do.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the system packages tests and the demo need (Postgres, age, promtool) when missing.
	@./scripts/install-deps

.PHONY: build
build: ## Build the four binaries into bin/.
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

.PHONY: caddy
caddy: ## Build the pinned Caddy (v2.11.9) from its Go module into .cache/caddy/ (tests do it when missing).
	@./scripts/build-caddy

.PHONY: vet
vet: ## go vet every package.
	$(GO) vet ./...

.PHONY: lint
lint: vet ## gofmt check, go vet, and go mod tidy leaving no diff.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@cp go.mod $(CACHE)-go.mod.bak; cp go.sum $(CACHE)-go.sum.bak; \
	 $(GO) mod tidy; \
	 if ! git diff --quiet -- go.mod go.sum; then echo "go mod tidy changed go.mod/go.sum"; git --no-pager diff -- go.mod go.sum; \
	   cp $(CACHE)-go.mod.bak go.mod; cp $(CACHE)-go.sum.bak go.sum; rm -f $(CACHE)-go.*.bak; exit 1; fi; \
	 rm -f $(CACHE)-go.*.bak

.PHONY: unit
unit: deps caddy ## Unit, integration and e2e tests (real Postgres, git, age, Caddy, the simulator, agents) with the race detector.
	$(GO) test $(GOTEST_FLAGS) ./...

.PHONY: test
test: deps lint unit e2e-n8n ## Everything CI runs: lint, vet, unit, integration and e2e tests, and the real-n8n suite.

# The tests that run against a real n8n when GENESIS_N8N_BIN is set (see
# agent/n8n/n8ntest); without it they run against the emulator in make unit.
E2E_N8N_TESTS := ^(TestBootstrap|TestBootstrapPasswordRules|TestPublicAPIAuth|TestCredentials|TestCredentialsMethodNotAllowed|TestWorkflowLifecycle|TestWorkflowValidation|TestWorkflowReadOnlyFields|TestExampleTemplatesActivate|TestActivationConflicts|TestListPaginationAndTags|TestWritesCount|TestOpenAPIContract|TestConvergeFromEmptyThenIdempotent|TestConvergeExampleTemplates|TestCredentialRotation|TestRotationWithWorkflowFailureKeepsOldCredential|TestWorkflowRemovalLeavesHandMadeAlone)$$

.PHONY: e2e-n8n
e2e-n8n: ## Install n8n 1.123.81 from npm into .cache (first time ~6 min) and run the real-n8n suite (~2 min)
	@bin=$$(./scripts/install-n8n) && \
	 GENESIS_N8N_BIN="$$bin" $(GO) test -count=1 -timeout 20m -run '$(E2E_N8N_TESTS)' ./agent/n8n/ ./agent/converge/

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s).
	@./scripts/fuzz-all $${FUZZTIME:-30s}

.PHONY: bench
bench: deps ## Benchmarks (go test -bench), reported as ratios against in-run baselines.
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: db
db: deps build ## Start a throwaway local Postgres and print its DATABASE_URL (Ctrl-C stops it).
	$(BIN)/genesis dev-db

.PHONY: demo
demo: deps build caddy ## Run the demo on state-example/ (DEMO_ARGS=--once to exit after it).
	$(BIN)/genesis demo --bin $(BIN) --caddy "$$(./scripts/build-caddy)" --state state-example $(DEMO_ARGS)

.PHONY: clean
clean: ## Remove built binaries and caches.
	rm -rf $(BIN) $(CACHE)
