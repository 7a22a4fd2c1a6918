package n8nemu

import (
	"fmt"
	"net/http"
	"strings"
)

// SetVersion sets the version the emulator reports (default Version), as
// an n8n container of another image would.
func (s *Server) SetVersion(v string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.version = v
}

func (s *Server) versionOf() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// FailWebhooks makes every webhook call answer 500 with msg, as an n8n
// whose workflows cannot run (a broken release); "" ends it.
func (s *Server) FailWebhooks(msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hookFail = msg
}

// webhook is /webhook/{path}: like n8n's production webhooks, a request to
// the path and method of an active workflow's webhook node starts that
// workflow (answered 200 {"message":"Workflow was started"}, its default
// response mode, and recorded as an execution); any other is 404 "The
// requested webhook ... is not registered."
func (s *Server) webhook(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + strings.Trim(r.PathValue("path"), "/")
	s.mu.Lock()
	var id string
	for _, wid := range s.wfOrder {
		wf := s.workflows[wid]
		if wf == nil || !wf.active {
			continue
		}
		for _, k := range wf.body.webhooks() {
			if webhookMatch(k, key) {
				id = wid
			}
		}
	}
	fail := s.hookFail
	s.mu.Unlock()
	if id == "" {
		writeJSON(w, http.StatusNotFound, map[string]any{"code": 404,
			"message": fmt.Sprintf("The requested webhook %q is not registered.", key),
			"hint":    "The workflow must be active for a production URL to run successfully."})
		return
	}
	if fail != "" {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"code": 0, "message": fail})
		return
	}
	s.RecordExecution(id, s.now())
	writeJSON(w, http.StatusOK, message("Workflow was started"))
}

// webhookMatch reports whether a request "METHOD path" reaches a
// registered "METHOD pattern": segment by segment, a :parameter segment
// matching any non-empty one (n8n's dynamic webhooks).
func webhookMatch(pattern, key string) bool {
	if pattern == key {
		return true
	}
	ps, ks := strings.Split(pattern, "/"), strings.Split(key, "/")
	if len(ps) != len(ks) {
		return false
	}
	for i := range ps {
		if ps[i] != ks[i] && !(strings.HasPrefix(ps[i], ":") && ks[i] != "") {
			return false
		}
	}
	return true
}
