package n8nemu

import (
	"net/http"
	"sort"
)

// The REST routes a secret rotation uses, as n8n 1.x has them:
// GET /rest/api-keys lists the owner's keys (redacted), DELETE
// /rest/api-keys/{id} deletes one, PATCH /rest/me/password changes the
// owner's password given the current one (n8n's MeController: 400
// "Provided current password is incorrect." for a wrong one, its password
// rules for the new one).

func (s *Server) listAPIKeys(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	out := make([]map[string]any, 0, len(s.apiKeys))
	for raw, k := range s.apiKeys {
		scopes := make([]string, 0, len(k.scopes))
		for sc := range k.scopes {
			scopes = append(scopes, sc)
		}
		sort.Strings(scopes)
		out = append(out, map[string]any{"id": k.id, "label": k.label, "apiKey": "******" + raw[len(raw)-4:], "scopes": scopes, "expiresAt": nil})
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i]["id"].(string) < out[j]["id"].(string) })
	writeJSON(w, http.StatusOK, map[string]any{"data": out})
}

func (s *Server) deleteAPIKey(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	s.mu.Lock()
	found := false
	for raw, k := range s.apiKeys {
		if k.id == id {
			delete(s.apiKeys, raw)
			found = true
		}
	}
	s.mu.Unlock()
	if !found {
		restError(w, http.StatusNotFound, "API Key not found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"success": true}})
}

func (s *Server) changePassword(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Current string `json:"currentPassword"`
		New     string `json:"newPassword"`
		MFACode string `json:"mfaCode,omitempty"`
	}
	if err := decodeStrict(r, &body); err != nil {
		restError(w, http.StatusBadRequest, "Invalid request body")
		return
	}
	if body.Current == "" || body.New == "" {
		restError(w, http.StatusBadRequest, "Invalid payload")
		return
	}
	if msg := checkPassword(body.New); msg != "" {
		restError(w, http.StatusBadRequest, msg)
		return
	}
	s.mu.Lock()
	if s.owner == nil || s.owner.password != body.Current {
		s.mu.Unlock()
		restError(w, http.StatusBadRequest, "Provided current password is incorrect.")
		return
	}
	s.owner.password = body.New
	u := *s.owner
	cookie := s.newSession()
	s.mu.Unlock()
	http.SetCookie(w, cookie)
	writeJSON(w, http.StatusOK, map[string]any{"data": userJSON(u)})
}
