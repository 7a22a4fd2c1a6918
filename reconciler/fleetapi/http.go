package fleetapi

import (
	"context"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/tenants"
)

// maxHookBody bounds a push webhook's body.
const maxHookBody = 1 << 20

// Fleet is the loop as GET /v1/fleet and /readyz read it.
type Fleet interface {
	Snapshot() (tenants.Snapshot, bool)
	LastPlan() plan.Plan
	Leading() bool
	SyncError() error
}

// Waker wakes a hibernated tenant (POST /v1/tenants/{id}/wake). Its errors
// name their status by an api error kind (api.Status).
type Waker interface {
	Wake(ctx context.Context, id, actor string) (store.FleetRow, error)
}

// Retrier takes a tenant out of FAILED or its backoff (POST
// /v1/tenants/{id}/retry); store.ErrNotFailed when it was neither.
type Retrier interface {
	Retry(ctx context.Context, id, actor, reason string) error
}

// Operator records an operator's remediation step (POST
// /v1/tenants/{id}/actions). Its errors name their status by an api error
// kind (api.Status).
type Operator interface {
	Operate(ctx context.Context, id, action, actor, reason string) error
}

// Loop is the reconciler's loop as the API uses it: *reconciler.Reconciler.
type Loop interface {
	Fleet
	Waker
	Retrier
	Operator
}

// Observations loads the leader's stored observation (GET /v1/observed):
// *reconciler.Observations. Any error is answered 503.
type Observations interface {
	Load(ctx context.Context) (api.Observed, error)
}

// Pusher announces a push webhook to every replica: *reconciler.Events.
type Pusher interface {
	Pushed(ctx context.Context) error
}

// HandlerConfig wires the HTTP API.
type HandlerConfig struct {
	Reconciler Loop
	Store      *store.Store
	Gatherer   prometheus.Gatherer
	// WebhookSecret verifies POST /hooks/git (X-Hub-Signature-256); empty
	// refuses every hook.
	WebhookSecret []byte
	// Trigger fetches the state repository now (the tenants watcher's
	// Trigger); used when Events is nil.
	Trigger func()
	// Events announces a push webhook to every replica
	// (reconciler.Events).
	Events Pusher
	// Observations serves GET /v1/observed from the leader's stored
	// observation (reconciler.Observations); nil answers it 503.
	Observations Observations
	// Agents serves the agent protocol (POST /v1/enroll, GET /v1/manifest,
	// POST /v1/heartbeat); nil leaves them unserved.
	Agents http.Handler
	// Auth checks bearer tokens and scopes (routes.go); nil when no tokens
	// are configured: then the tenant API is not served.
	Auth *auth.Authenticator
	// MetricsTokenRequired puts /metrics behind the metrics scope.
	MetricsTokenRequired bool
	// API serves the tenant API (/v1/tenants...); nil leaves it unserved.
	API *stateapi.API
	// RecoveryPoints is every tenant's recovery point
	// ((*backup.Service).Points), shown as recovery_point in GET
	// /v1/fleet; nil leaves it out.
	RecoveryPoints func() map[string]backup.Point
	// Availability serves GET /v1/availability (reconciler/availability);
	// nil answers it 503.
	Availability AvailabilityReport
}

// Handler serves every replica's HTTP API: health, readiness, metrics, the
// fleet, the observed state for genesis plan, the push webhook and the
// agent protocol.
func Handler(cfg HandlerConfig) http.Handler {
	mux := newRouter(cfg)
	if cfg.API != nil && cfg.Auth != nil {
		for pattern, h := range cfg.API.Handlers() {
			mux.Handle(pattern, h)
		}
	}
	if cfg.Agents != nil {
		for _, pattern := range agentRoutes {
			mux.Handle(pattern, cfg.Agents)
		}
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := cfg.Store.Ping(r.Context()); err != nil {
			api.WriteProblem(w, http.StatusServiceUnavailable, "database: "+err.Error())
			return
		}
		if _, ok := cfg.Reconciler.Snapshot(); !ok {
			api.WriteProblem(w, http.StatusServiceUnavailable, "state repository not read yet")
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/availability", serveAvailability(cfg.Availability))
	mux.HandleFunc("GET /v1/fleet", func(w http.ResponseWriter, r *http.Request) {
		rows, err := cfg.Store.Fleet(r.Context())
		if err != nil {
			api.WriteProblem(w, http.StatusInternalServerError, err.Error())
			return
		}
		doc := View(rows, cfg.Reconciler)
		if cfg.RecoveryPoints != nil {
			withRecoveryPoints(&doc, cfg.RecoveryPoints())
		}
		api.WriteJSON(w, http.StatusOK, doc)
	})
	mux.HandleFunc("POST /v1/tenants/{id}/wake", func(w http.ResponseWriter, r *http.Request) {
		handleWake(w, r, cfg.Reconciler)
	})
	mux.HandleFunc("POST /v1/tenants/{id}/retry", retryHandler(cfg.Reconciler))
	mux.HandleFunc("POST /v1/tenants/{id}/actions", actionHandler(cfg.Reconciler))
	rolloutRoutes(mux, cfg.Store)
	mux.HandleFunc("GET /v1/observed", func(w http.ResponseWriter, r *http.Request) {
		handleObserved(w, r, cfg.Observations)
	})
	mux.HandleFunc("POST /hooks/git", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHookBody))
		if err != nil {
			api.WriteProblem(w, http.StatusRequestEntityTooLarge, "body too large")
			return
		}
		if err := tenants.VerifySignature(cfg.WebhookSecret, body, r.Header.Get(tenants.SignatureHeader)); err != nil {
			api.WriteProblem(w, http.StatusUnauthorized, err.Error())
			return
		}
		switch {
		case cfg.Events != nil:
			if err := cfg.Events.Pushed(r.Context()); err != nil {
				api.WriteProblem(w, http.StatusServiceUnavailable, "fetching here, but the leader could not be told (retry the delivery): "+err.Error())
				return
			}
		case cfg.Trigger != nil:
			cfg.Trigger()
		}
		w.WriteHeader(http.StatusAccepted)
		w.Write([]byte("fetching\n"))
	})
	return mux
}
