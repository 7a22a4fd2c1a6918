# Genesis fleet control. `make help` lists every target.
SHELL := /bin/bash
GO ?= go
BIN := bin
CACHE := $(CURDIR)/.cache
DEMO_ARGS ?=
GOTEST_FLAGS ?= -race -count=1
BINARIES := genesis genesis-reconciler genesis-agent genesis-dosim genesis-load genesis-demo

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets and what they do.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install the system packages tests and the demo need (Postgres, age, promtool, Chromium) when missing.
	@./scripts/install-deps

.PHONY: build
build: ## Build the binaries into bin/.
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

.PHONY: caddy
caddy: ## Build the pinned Caddy (v2.11.9) from its Go module into .cache/caddy/ (tests do it when missing).
	@./scripts/build-caddy

.PHONY: weed
weed: ## Build the pinned SeaweedFS (weed, the object-storage tests' S3 server) from its Go module into .cache/weed/ (tests do it when missing).
	@./scripts/build-weed

.PHONY: pebble
pebble: ## Build the pinned Pebble (v2.10.3, Let's Encrypt's test ACME CA) and pebble-challtestsrv from their Go module into .cache/pebble/ (tests do it when missing).
	@./scripts/build-pebble

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
unit: deps caddy weed pebble ## Unit, integration and e2e tests (real Postgres, git, age, Caddy, SeaweedFS's S3, the simulator, agents) with the race detector.
	$(GO) test $(GOTEST_FLAGS) ./...

.PHONY: test
test: deps lint openapi-lint unit reliability e2e-n8n ## Everything CI runs: lint, vet, the OpenAPI linter, unit, integration and e2e tests, the reliability suite and the real-n8n suite.

# The reliability suite (README "Reliability suite"): the real reconciler
# binary SIGKILLed after every journal write of create, hibernate, wake and
# destroy, and DigitalOcean and Postgres faults; without the race detector.
# Its table goes to bin/reliability.md. ~4 min on 2 cores.
RELIABILITY_OUT := $(BIN)/reliability.md

.PHONY: reliability
reliability: deps ## Reliability suite: SIGKILL at every journaled step, DigitalOcean and Postgres faults (~4 min); table in bin/reliability.md.
	@mkdir -p $(BIN)
	GENESIS_RELIABILITY=1 GENESIS_RELIABILITY_OUT=$(CURDIR)/$(RELIABILITY_OUT) $(GO) test -count=1 -parallel 4 -timeout 10m -run '^TestReliability$$' -v ./cmd/genesis-reconciler/ \
	  | grep -v '^=== ' ; test $${PIPESTATUS[0]} -eq 0
	@cat $(RELIABILITY_OUT)

.PHONY: openapi-lint
openapi-lint: ## Lint api/openapi.yaml with Redocly's linter (@redocly/cli 2.11.1 from npm into .cache, first time ~1 min).
	@./scripts/lint-openapi

# The tests that run against a real n8n when GENESIS_N8N_BIN is set (see
# fakes/n8ntest); without it they run against the emulator in make unit.
E2E_N8N_TESTS := ^(TestRealStack|TestVersionNeedsOwner|TestBootstrap|TestBootstrapPasswordRules|TestPublicAPIAuth|TestCredentials|TestCredentialsMethodNotAllowed|TestWorkflowLifecycle|TestWorkflowValidation|TestWorkflowReadOnlyFields|TestExampleTemplatesActivate|TestActivationConflicts|TestListPaginationAndTags|TestWritesCount|TestOpenAPIContract|TestConvergeFromEmptyThenIdempotent|TestConvergeExampleTemplates|TestCredentialRotation|TestRotationWithWorkflowFailureKeepsOldCredential|TestWorkflowRemovalLeavesHandMadeAlone|TestN8NBackupRestore)$$

.PHONY: e2e-n8n
e2e-n8n: ## Install n8n 1.123.81 from npm into .cache (first time ~6 min) and run the real-n8n suite (~3.5 min)
	@bin=$$(./scripts/install-n8n) && \
	 GENESIS_N8N_BIN="$$bin" $(GO) test -count=1 -timeout 20m -run '$(E2E_N8N_TESTS)' ./agent/n8n/ ./agent/converge/ ./agent/backup/ ./cmd/genesis-agent/

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 30s).
	@./scripts/fuzz-all $${FUZZTIME:-30s}

# make bench: the repository's go benchmarks (bounded: one size each where
# the full sweep takes long), then the load tool's scenarios against a
# reconciler subprocess on real Postgres. Figures, each against a baseline
# measured in the same run, go into bench/results.md. ~14 min on 2 cores.
BENCH_OUT := $(BIN)/bench-go.txt
LOAD := $(BIN)/genesis-load
LOAD_FLAGS ?= --markdown bench/results.md

.PHONY: bench
bench: ## Benchmarks and the load tool (genesis-load), as ratios against in-run baselines, into bench/results.md (~16 min).
	@./scripts/install-deps bench
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/genesis-load
	set -o pipefail; $(GO) test -run '^$$' -bench 'Manifest304/http|Bare304/http' -count 3 ./reconciler/agentapi/ | tee $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'HeartbeatIngest|HeartbeatRawUpsert' -benchtime 90000x ./reconciler/agentapi/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'CommitToApplied' -benchtime 1x ./reconciler/agentapi/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'Compute' -benchtime 10x ./reconciler/plan/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'ColdLoad/tenants=15000|RawYAMLDecode/tenants=15000' -benchtime 1x ./tenants/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'Provision1000/boot=0s' -benchtime 1x ./reconciler/cloud/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'TakeRestore' -benchtime 3x ./agent/backup/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'Rollout15000' -benchtime 1x ./reconciler/rollouts/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'WakeOnRequest' -benchtime 1x ./localfleet/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'ActivatorHold' -benchtime 3000x ./reconciler/activator/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'Prober15000' -benchtime 2x ./reconciler/availability/ | tee -a $(BENCH_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'Overview100k/(render|raw)' -benchtime 20x ./reconciler/console/ | tee -a $(BENCH_OUT)
	$(LOAD) gobench --input $(BENCH_OUT) $(LOAD_FLAGS)
	$(LOAD) http304 --agents 100 --connections 64 --duration 5s $(LOAD_FLAGS)
	$(LOAD) heartbeat --agents 10000 --speedup 120 --duration 20s --credentials 1 --connections 128 $(LOAD_FLAGS)
	$(LOAD) longpoll --agents 18000 --duration 5m $(LOAD_FLAGS) # 18,000: the open-file hard limit here is 20,000 (README)
	$(LOAD) converge --agents 1000 $(LOAD_FLAGS)

# make bench-scale: the fleet past one process (issue 23). genesis-load scale
# starts SCALE_REPLICAS genesis-reconciler processes on one Postgres
# (replica 0 --role full, leading, with the DigitalOcean simulator seeded
# with every tenant's droplet; the others --role serve) and spreads
# SCALE_AGENTS agents over processes of 15,000 (each under the 20,000
# open-file limit) dialing from many 127.0.0.0/8 addresses; it stops at its
# --time-limit (SCALE_LIMIT) and reports what it measured. Then the
# one-tenant-commit benchmarks at 100,000 tenants (sync with the incremental
# and the whole-set uniqueness check, plan; ~3 min) and the decoded fleet's
# heap per tenant (~2 min). ~17 min on 2 cores; the
# machine should be quiet.
SCALE_AGENTS ?= 100000
SCALE_REPLICAS ?= 6
# SCALE_EDIT=1 adds the phase of a commit editing every tenant file
# (--edit-phase: ~6 min more at 100,000, and up to 10 more waiting for
# the leader's journal of the edit).
SCALE_EDIT ?=
# SCALE_TLS=1: the replicas serve TLS and every agent keeps its own HTTP/2
# connection, as on droplets (--tls; figures under scenario scale-tls).
SCALE_TLS ?=
SCALE_LIMIT ?= $(if $(SCALE_EDIT),28m,$(if $(SCALE_TLS),24m,12m))
# SCALE_MEMLIMIT: GOMEMLIMIT of each replica (as the systemd unit and the
# pod set it from their memory limit); empty: none. Below a replica's live
# heap it thrashes: 640MiB at 100,000 agents made the first sweep 2.4×
# slower and left no time for the heartbeat phase (bench/results.md).
SCALE_MEMLIMIT ?=
BENCH_SCALE_OUT := $(BIN)/bench-scale-go.txt

.PHONY: bench-scale
bench-scale: ## 100,000 agents over 6 reconciler replicas on one Postgres (genesis-load scale) and the one-tenant commit at 100,000 tenants, into bench/results.md (~15 min).
	@./scripts/install-deps bench
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ ./cmd/genesis-load ./cmd/genesis-reconciler
	$(LOAD) scale --agents $(SCALE_AGENTS) --replicas $(SCALE_REPLICAS) --credentials 1 --connections 384 --duration 30s --time-limit $(SCALE_LIMIT) $(if $(SCALE_MEMLIMIT),--replica-memory-limit $(SCALE_MEMLIMIT)) $(if $(SCALE_EDIT),--edit-phase) $(if $(SCALE_TLS),--tls) $(LOAD_FLAGS)
	set -o pipefail; $(GO) test -run '^$$' -bench 'IncrementalOneTenant' -benchtime 3x -timeout 30m ./tenants/ | tee $(BENCH_SCALE_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'ComputeIncremental' -benchtime 10x ./reconciler/plan/ | tee -a $(BENCH_SCALE_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'SnapshotHeap' -benchtime 1x -timeout 30m ./tenants/ | tee -a $(BENCH_SCALE_OUT)
	set -o pipefail; $(GO) test -run '^$$' -bench 'ParkedConnMemory' -benchtime 1x ./reconciler/service/ | tee -a $(BENCH_SCALE_OUT)
	$(LOAD) gobench --as 'go test -bench (scale)' --input $(BENCH_SCALE_OUT) $(LOAD_FLAGS)

.PHONY: db
db: deps build ## Start a throwaway local Postgres and print its DATABASE_URL (Ctrl-C stops it).
	$(BIN)/genesis-demo devdb

.PHONY: demo
demo: deps build caddy weed pebble ## Run the demo on state-example/ (DEMO_ARGS=--once to exit after it).
	$(BIN)/genesis-demo run --bin $(BIN) --caddy "$$(./scripts/build-caddy)" --weed "$$(./scripts/build-weed)" --pebble "$$(./scripts/build-pebble)" --state state-example $(DEMO_ARGS)

.PHONY: clean
clean: ## Remove built binaries and caches.
	rm -rf $(BIN) $(CACHE)
