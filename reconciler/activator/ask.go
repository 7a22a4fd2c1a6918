package activator

import "net/http"

// Ask is Caddy's on-demand TLS permission endpoint for the activator's
// front: GET ?domain=<name> answers 200 only while name is a declared name
// (stable name or tracking domain) of a tenant no droplet serves
// (hibernated, hibernating, waking, booting, …), and 403 otherwise: an
// unknown name, a running tenant, or before Run read the statuses once.
// Caddy asks at every first handshake and when it loads a stored
// certificate, so Ask answers from memory: the desired state (Lookup) and
// the status table Run refreshes every AskRefresh.
func (h *Handler) Ask() http.Handler { return http.HandlerFunc(h.serveAsk) }

// Allowed reports whether domain may get a certificate (Ask).
func (h *Handler) Allowed(domain string) bool {
	name, ok := ParseHost(domain)
	if !ok {
		return false
	}
	tn, ok := h.cfg.Lookup(name)
	if !ok {
		return false
	}
	tbl := h.statuses.Load()
	if tbl == nil {
		return false
	}
	return !tbl.m[tn.Workspace].served()
}

func (h *Handler) serveAsk(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	domain := r.URL.Query().Get("domain")
	switch {
	case domain == "":
		http.Error(w, "domain query parameter required", http.StatusBadRequest)
	case h.Allowed(domain):
		h.m.asks.WithLabelValues("allowed").Inc()
		w.WriteHeader(http.StatusOK)
	default:
		h.m.asks.WithLabelValues("refused").Inc()
		h.log.Info("certificate refused", "domain", domain)
		http.Error(w, "not a hibernated tenant's name", http.StatusForbidden)
	}
}
