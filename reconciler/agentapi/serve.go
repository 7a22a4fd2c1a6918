package agentapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// parseWait reads ?wait= as a Go duration ("30s") or whole seconds ("30"),
// capped at MaxWait.
func parseWait(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.Atoi(s)
		if nerr != nil {
			return 0, errors.New("wait must be a duration such as 30s")
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 {
		return 0, errors.New("wait must not be negative")
	}
	return min(d, MaxWait), nil
}

// matches reports whether an If-None-Match header names etag (a list of
// entity tags, weak or strong, or *).
func matches(header, etag string) bool {
	if header == "" || etag == "" {
		return false
	}
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.TrimPrefix(t, "W/") == etag {
			return true
		}
	}
	return false
}

func (s *Service) handleManifest(w http.ResponseWriter, r *http.Request) {
	wait, err := parseWait(r.URL.Query().Get("wait"))
	if err != nil {
		s.m.servedInc("400")
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	ref, err := s.authenticate(r)
	if err != nil {
		s.m.servedInc("500")
		s.log.Error("authenticate failed", "err", err)
		httpError(w, http.StatusInternalServerError, "authentication unavailable")
		return
	}
	if ref == nil {
		s.m.servedInc("401")
		w.Header().Set("WWW-Authenticate", `Bearer realm="genesis"`)
		httpError(w, http.StatusUnauthorized, "bad credential")
		return
	}
	// The droplet comes from the credential alone.
	e, err := s.manifestFor(r.Context(), ref.droplet)
	if err != nil {
		s.m.servedInc("500")
		s.log.Error("load manifest failed", "droplet", ref.droplet, "err", err)
		httpError(w, http.StatusInternalServerError, "manifest unavailable")
		return
	}
	inm := r.Header.Get("If-None-Match")
	if e.version > 0 && matches(inm, e.etag) && wait > 0 {
		s.m.longpolls.Inc()
		timer := time.NewTimer(wait)
	poll:
		for matches(inm, e.etag) {
			select {
			case <-s.changed(ref.droplet, e.etag):
				if e, err = s.manifestFor(r.Context(), ref.droplet); err != nil {
					break poll
				}
			case <-timer.C:
				break poll
			case <-s.stopped:
				break poll
			case <-r.Context().Done():
				break poll
			}
		}
		timer.Stop()
		s.m.longpolls.Dec()
		if err == nil && e.version > 0 && !matches(inm, e.etag) && !e.published.IsZero() {
			// A long-poll answered with a manifest published while it
			// waited: the fan-out's delay for this droplet.
			s.m.delivery.Observe(max(0, s.cfg.Now().Sub(e.published)).Seconds())
		}
		if err != nil {
			s.m.servedInc("500")
			s.log.Error("load manifest failed", "droplet", ref.droplet, "err", err)
			httpError(w, http.StatusInternalServerError, "manifest unavailable")
			return
		}
	}
	switch {
	case e.version == 0:
		s.m.servedInc("404")
		httpError(w, http.StatusNotFound, "no manifest yet")
	case matches(inm, e.etag):
		s.m.servedInc("304")
		h := w.Header()
		h["Etag"] = []string{e.etag}
		h["Cache-Control"] = []string{"no-cache"}
		w.WriteHeader(http.StatusNotModified)
	default:
		body, err := s.body(r.Context(), ref.droplet, e)
		if err != nil {
			s.m.servedInc("500")
			s.log.Error("load manifest failed", "droplet", ref.droplet, "err", err)
			httpError(w, http.StatusInternalServerError, "manifest unavailable")
			return
		}
		s.m.servedInc("200")
		h := w.Header()
		h["Etag"] = []string{e.etag}
		h["Cache-Control"] = []string{"no-cache"}
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	}
}
