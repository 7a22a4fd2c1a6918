package caddy

import (
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
)

// Ask is Caddy's on-demand TLS permission endpoint: GET ?domain=<name>
// answers 200 for a declared domain and 403 otherwise. Caddy asks at every
// first handshake for a name and again when it loads a stored certificate,
// so it answers from memory. Safe for concurrent use.
type Ask struct {
	domains atomic.Pointer[map[string]bool]
	log     *slog.Logger
}

// NewAsk returns an Ask that allows domains. log may be nil.
func NewAsk(log *slog.Logger, domains ...string) *Ask {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Ask{log: log.With("component", "caddy-ask")}
	a.Set(domains)
	return a
}

// Set replaces the allowed domains at once.
func (a *Ask) Set(domains []string) {
	m := make(map[string]bool, len(domains))
	for _, d := range domains {
		m[normalizeDomain(d)] = true
	}
	a.domains.Store(&m)
}

// Allowed reports whether domain may get a certificate.
func (a *Ask) Allowed(domain string) bool {
	return (*a.domains.Load())[normalizeDomain(domain)]
}

func normalizeDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// ServeHTTP answers Caddy's permission request.
func (a *Ask) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	domain := r.URL.Query().Get("domain")
	switch {
	case domain == "":
		http.Error(w, "domain query parameter required", http.StatusBadRequest)
	case a.Allowed(domain):
		w.WriteHeader(http.StatusOK)
	default:
		a.log.InfoContext(r.Context(), "certificate refused for undeclared domain", "domain", domain)
		http.Error(w, "domain not declared", http.StatusForbidden)
	}
}
