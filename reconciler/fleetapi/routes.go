package fleetapi

import (
	"net/http"
	"sort"

	"genesis.dev/fleet/reconciler/auth"
)

// routeScope is the scope each route needs, by ServeMux pattern: adding a
// route is one line here. A route not listed needs admin. Public routes are
// open; agent routes check the droplet's own credential (agentapi); /metrics
// is public unless HandlerConfig.MetricsTokenRequired. Without an
// Authenticator (only with genesis-reconciler --insecure-no-auth: the
// binary refuses to start without tokens otherwise) nothing asks for a
// token and the tenant API is not served.
func routeScope(pattern string) auth.Scope {
	switch pattern {
	case "GET /healthz", "GET /readyz", "POST /hooks/git":
		return auth.Public
	case "GET /metrics":
		return auth.Metrics
	case "POST /v1/enroll", "GET /v1/manifest", "POST /v1/heartbeat", "POST /v1/agent/reenroll",
		"POST /v1/agent/backups", "POST /v1/agent/backups/{id}", "GET /v1/agent/backups/{id}", "POST /v1/agent/backups/{id}/restored":
		return auth.Agent
	case "GET /v1/fleet", "GET /v1/observed",
		"GET /v1/tenants", "GET /v1/tenants/{id}", "POST /v1/tenants", "PUT /v1/tenants/{id}",
		"PATCH /v1/tenants/{id}", "DELETE /v1/tenants/{id}", "POST /v1/tenants/{id}/credentials",
		"POST /v1/tenants/{id}/wake", "GET /v1/rollouts", "GET /v1/rollouts/{id}":
		return auth.Dashboard
	case "POST /v1/tenants/{id}/retry", "POST /v1/tenants/{id}/actions", "POST /v1/rollouts/{id}/pause", "POST /v1/rollouts/{id}/resume", "POST /v1/rollouts/{id}/abort":
		return auth.Admin
	}
	return auth.Admin
}

// agentRoutes are the agent protocol's routes (agentapi.Service.Handler
// serves them; each checks the droplet's own credential).
var agentRoutes = []string{"POST /v1/enroll", "GET /v1/manifest", "POST /v1/heartbeat", "POST /v1/agent/reenroll",
	"POST /v1/agent/backups", "POST /v1/agent/backups/{id}", "GET /v1/agent/backups/{id}", "POST /v1/agent/backups/{id}/restored"}

// router is a ServeMux that puts every route behind the check its scope
// asks for and remembers the patterns it serves.
type router struct {
	mux      *http.ServeMux
	auth     *auth.Authenticator
	metrics  bool
	patterns []string
}

func newRouter(cfg HandlerConfig) *router {
	return &router{mux: http.NewServeMux(), auth: cfg.Auth, metrics: cfg.MetricsTokenRequired}
}

func (rt *router) Handle(pattern string, h http.Handler) {
	rt.patterns = append(rt.patterns, pattern)
	switch scope := routeScope(pattern); {
	case rt.auth == nil: // --insecure-no-auth
	case scope == auth.Public, scope == auth.Agent:
	case scope == auth.Metrics && !rt.metrics:
	default:
		h = rt.auth.Require(scope, h)
	}
	rt.mux.Handle(pattern, h)
}

func (rt *router) HandleFunc(pattern string, f func(http.ResponseWriter, *http.Request)) {
	rt.Handle(pattern, http.HandlerFunc(f))
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) { rt.mux.ServeHTTP(w, r) }

// Routes lists the patterns Handler serves for cfg, sorted.
func Routes(cfg HandlerConfig) []string {
	rt := Handler(cfg).(*router)
	out := append([]string(nil), rt.patterns...)
	sort.Strings(out)
	return out
}

// apiActor names the caller of an API request for audit_log: its token's
// name, or "api" when no tokens are configured.
func apiActor(r *http.Request) string {
	if id, ok := auth.FromContext(r.Context()); ok && id.Name != "" {
		return id.Name
	}
	return "api"
}
