package reconciler

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// maxHookBody bounds a push webhook's body.
const maxHookBody = 1 << 20

// HandlerConfig wires the HTTP API.
type HandlerConfig struct {
	Reconciler *Reconciler
	Store      *store.Store
	Gatherer   prometheus.Gatherer
	// WebhookSecret verifies POST /hooks/git (X-Hub-Signature-256); empty
	// refuses every hook.
	WebhookSecret []byte
	// Trigger fetches the state repository now (the tenants watcher's
	// Trigger); used when Events is nil.
	Trigger func()
	// Events announces a push webhook to every replica (events.go).
	Events *Events
	// Observations serves GET /v1/observed from the leader's stored
	// observation (observed.go); nil makes one from Store with defaults.
	Observations *Observations
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
		mux.Handle("POST /v1/enroll", cfg.Agents)
		mux.Handle("GET /v1/manifest", cfg.Agents)
		mux.Handle("POST /v1/heartbeat", cfg.Agents)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := cfg.Store.Ping(r.Context()); err != nil {
			httpError(w, http.StatusServiceUnavailable, "database: "+err.Error())
			return
		}
		if _, ok := cfg.Reconciler.Snapshot(); !ok {
			httpError(w, http.StatusServiceUnavailable, "state repository not read yet")
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/fleet", func(w http.ResponseWriter, r *http.Request) {
		rows, err := cfg.Store.Fleet(r.Context())
		if err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
		writeJSON(w, fleetView(rows, cfg.Reconciler))
	})
	mux.HandleFunc("POST /v1/tenants/{id}/wake", func(w http.ResponseWriter, r *http.Request) {
		handleWake(w, r, cfg.Reconciler)
	})
	mux.HandleFunc("POST /v1/tenants/{id}/retry", retryHandler(cfg.Reconciler))
	if cfg.Observations == nil {
		cfg.Observations = NewObservations(ObservationsConfig{Store: cfg.Store})
	}
	mux.Handle("GET /v1/observed", cfg.Observations)
	mux.HandleFunc("POST /hooks/git", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxHookBody))
		if err != nil {
			httpError(w, http.StatusRequestEntityTooLarge, "body too large")
			return
		}
		if err := tenants.VerifySignature(cfg.WebhookSecret, body, r.Header.Get(tenants.SignatureHeader)); err != nil {
			httpError(w, http.StatusUnauthorized, err.Error())
			return
		}
		switch {
		case cfg.Events != nil:
			if err := cfg.Events.Pushed(r.Context()); err != nil {
				httpError(w, http.StatusServiceUnavailable, "fetching here, but the leader could not be told (retry the delivery): "+err.Error())
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

// TenantView is one tenant in GET /v1/fleet: what git declares next to
// what the reconciler last recorded.
type TenantView struct {
	store.FleetRow
	Declared   bool     `json:"declared"`
	Valid      bool     `json:"valid"`
	FileErrors []string `json:"file_errors,omitempty"`
	Commit     string   `json:"desired_commit,omitempty"`
	// MonthlyUSD is what the tenant costs now: its droplet's size price,
	// or its snapshot's storage when hibernated.
	MonthlyUSD float64 `json:"monthly_usd"`
}

type fleetDoc struct {
	Commit string `json:"commit"`
	// SyncError is why the latest state repository sync failed (e.g. a
	// history rewrite refused); the fleet is reconciled at Commit meanwhile.
	SyncError string       `json:"sync_error,omitempty"`
	Leader    bool         `json:"leader"`
	At        time.Time    `json:"at"`
	Tenants   []TenantView `json:"tenants"`
	Orphans   any          `json:"orphans"`
	Refused   any          `json:"refused,omitempty"`
	Deferred  []string     `json:"deferred,omitempty"`
	Cost      fleetCost    `json:"cost"`
}

func fleetView(rows []store.FleetRow, r *Reconciler) fleetDoc {
	snap, _ := r.Snapshot()
	p := r.LastPlan()
	doc := fleetDoc{Commit: snap.Commit, Leader: r.Leading(), At: time.Now().UTC(), Orphans: p.Orphans, Refused: p.Refused, Deferred: p.Deferred}
	if err := r.SyncError(); err != nil {
		doc.SyncError = err.Error()
	}
	seen := map[string]bool{}
	for _, row := range rows {
		v := TenantView{FleetRow: row, Commit: snap.Commit}
		if ts, ok := snap.Tenants[row.Workspace]; ok {
			v.Declared, v.Valid = true, ts.Status == tenants.StatusValid
			for _, e := range ts.Errors {
				v.FileErrors = append(v.FileErrors, e.Error())
			}
		}
		v.MonthlyUSD = tenantCost(snap.Fleet, row, &doc.Cost)
		// A row whose file is gone: desired "undeclared", ORPHANED while
		// it holds a droplet or snapshot (lifecycle.Render). Spares are
		// the fleet's own, never declared.
		lc, desired := lifecycle.Render(true, lifecycle.State(row.Lifecycle), v.Declared || schema.IsSpareWorkspace(row.Workspace), row.Desired,
			row.DropletID != 0 || row.SnapshotID != "")
		v.Lifecycle, v.Desired = string(lc), desired
		seen[row.Workspace] = true
		doc.Tenants = append(doc.Tenants, v)
	}
	for _, id := range snap.IDs() {
		if seen[id] {
			continue
		}
		ts := snap.Tenants[id]
		declared := ""
		if ts.Tenant != nil {
			declared = string(ts.Tenant.Spec.State)
		}
		// No row yet: PENDING when it should run, NOT_CREATED (nothing to do) when hibernated or absent.
		lc, desired := lifecycle.Render(false, "", true, declared, false)
		v := TenantView{FleetRow: store.FleetRow{Workspace: id, Lifecycle: string(lc), Desired: desired}, Declared: true, Valid: ts.Status == tenants.StatusValid, Commit: snap.Commit}
		for _, e := range ts.Errors {
			v.FileErrors = append(v.FileErrors, e.Error())
		}
		doc.Tenants = append(doc.Tenants, v)
	}
	return doc
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// errNoSnapshot is returned before the first sync.
var errNoSnapshot = errors.New("no desired state yet")
