package n8nemu

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/mail"
	"slices"
	"strings"
	"unicode"
)

// ownerScopes returns the scope list GET /rest/api-keys/scopes gives an owner.
func ownerScopes() []string {
	// As n8n 1.123.81 lists them, in its order: no credential:list or
	// credential:update (the 1.x public API has neither).
	return []string{
		"credential:create", "credential:delete", "credential:move",
		"project:create", "project:delete", "project:list", "project:update",
		"securityAudit:generate", "sourceControl:pull",
		"tag:create", "tag:delete", "tag:list", "tag:read", "tag:update",
		"user:changeRole", "user:create", "user:delete", "user:enforceMfa", "user:list", "user:read",
		"variable:create", "variable:delete", "variable:list", "variable:update",
		"workflow:create", "workflow:delete", "workflow:list", "workflow:move", "workflow:read", "workflow:update",
		"workflowTags:update", "workflowTags:list", "workflow:activate", "workflow:deactivate",
		"execution:delete", "execution:read", "execution:retry", "execution:list",
	}
}

const authCookie = "n8n-auth"

// restError is the body n8n's REST layer answers errors with.
func restError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"code": status, "message": msg})
}

// decodeStrict decodes a JSON object into v, refusing unknown fields.
func decodeStrict(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 16<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("trailing data after the JSON body")
	}
	return nil
}

// checkPassword applies n8n's password rules, with its messages.
func checkPassword(p string) string {
	n := len([]rune(p))
	switch {
	case n < 8 || n > 64:
		return "Password must be 8 to 64 characters long."
	case !strings.ContainsFunc(p, unicode.IsDigit):
		return "Password must contain at least 1 number."
	case !strings.ContainsFunc(p, unicode.IsUpper):
		return "Password must contain at least 1 uppercase letter."
	}
	return ""
}

func (s *Server) ownerSetup(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Email     string `json:"email"`
		FirstName string `json:"firstName"`
		LastName  string `json:"lastName"`
		Password  string `json:"password"`
	}
	s.mu.Lock()
	done := s.owner != nil
	s.mu.Unlock()
	if done {
		restError(w, http.StatusBadRequest, "Instance owner already setup")
		return
	}
	if err := decodeStrict(r, &body); err != nil {
		restError(w, http.StatusBadRequest, "Invalid request body")
		return
	}
	if a, err := mail.ParseAddress(body.Email); err != nil || a.Address != body.Email {
		restError(w, http.StatusBadRequest, "Invalid email address")
		return
	}
	if body.FirstName == "" || body.LastName == "" || len(body.FirstName) > 32 || len(body.LastName) > 32 {
		restError(w, http.StatusBadRequest, "First and last name are required (at most 32 characters)")
		return
	}
	if msg := checkPassword(body.Password); msg != "" {
		restError(w, http.StatusBadRequest, msg)
		return
	}
	s.mu.Lock()
	if s.owner != nil {
		s.mu.Unlock()
		restError(w, http.StatusBadRequest, "Instance owner already setup")
		return
	}
	s.owner = &user{id: s.newID(), email: body.Email, firstName: body.FirstName, lastName: body.LastName, password: body.Password}
	u := *s.owner
	cookie := s.newSession()
	s.mu.Unlock()
	http.SetCookie(w, cookie)
	writeJSON(w, http.StatusOK, map[string]any{"data": userJSON(u)})
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Email    string `json:"emailOrLdapLoginId"`
		Password string `json:"password"`
		MFACode  string `json:"mfaCode,omitempty"`
	}
	if err := decodeStrict(r, &body); err != nil {
		restError(w, http.StatusBadRequest, "Invalid request body")
		return
	}
	s.mu.Lock()
	o := s.owner
	if o == nil || !strings.EqualFold(o.email, body.Email) || o.password != body.Password {
		s.mu.Unlock()
		restError(w, http.StatusUnauthorized, "Wrong username or password. Do you have caps lock on?")
		return
	}
	u := *o
	cookie := s.newSession()
	s.mu.Unlock()
	http.SetCookie(w, cookie)
	writeJSON(w, http.StatusOK, map[string]any{"data": userJSON(u)})
}

// newSession makes a session cookie. Callers hold s.mu.
func (s *Server) newSession() *http.Cookie {
	v := s.newID() + s.newID()
	s.sessions[v] = true
	return &http.Cookie{Name: authCookie, Value: v, Path: "/", HttpOnly: true, SameSite: http.SameSiteLaxMode}
}

func userJSON(u user) map[string]any {
	return map[string]any{"id": u.id, "email": u.email, "firstName": u.firstName, "lastName": u.lastName, "role": "global:owner"}
}

// session wraps a REST handler that needs the n8n-auth cookie.
func (s *Server) session(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(authCookie)
		s.mu.Lock()
		ok := err == nil && s.sessions[c.Value]
		s.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"status": "error", "message": "Unauthorized"})
			return
		}
		h(w, r)
	}
}

func (s *Server) apiKeyScopes(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"data": ownerScopes()})
}

func (s *Server) createAPIKey(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Label     *string         `json:"label"`
		Scopes    []string        `json:"scopes"`
		ExpiresAt json.RawMessage `json:"expiresAt"`
	}
	if err := decodeStrict(r, &body); err != nil {
		restError(w, http.StatusBadRequest, "Invalid request body")
		return
	}
	if body.Label == nil || *body.Label == "" {
		restError(w, http.StatusBadRequest, "Required")
		return
	}
	if len([]rune(*body.Label)) > 50 {
		// n8n answers its zod issue as the body.
		writeJSON(w, http.StatusBadRequest, map[string]any{"code": "too_big", "maximum": 50, "type": "string",
			"inclusive": true, "exact": false, "message": "String must contain at most 50 character(s)", "path": []string{"label"}})
		return
	}
	if len(body.Scopes) == 0 {
		restError(w, http.StatusBadRequest, "scopes: at least one scope is required")
		return
	}
	for _, sc := range body.Scopes {
		if !slices.Contains(ownerScopes(), sc) {
			restError(w, http.StatusBadRequest, "Invalid scopes for user role")
			return
		}
	}
	exp := bytes.TrimSpace(body.ExpiresAt)
	if len(exp) != 0 && string(exp) != "null" {
		var n float64
		if err := json.Unmarshal(exp, &n); err != nil {
			restError(w, http.StatusBadRequest, "expiresAt: must be a unix time in seconds or null")
			return
		}
	}
	s.mu.Lock()
	for _, k := range s.apiKeys {
		if k.label == *body.Label {
			s.mu.Unlock()
			// A label is unique per user: the database's unique index
			// fails the insert, and n8n answers 500.
			writeJSON(w, http.StatusInternalServerError, map[string]any{"code": 0, "message": "There is already an entry with this name"})
			return
		}
	}
	// n8n's key is a JWT of the user and the issue time in seconds: a
	// second key in the same second is the same key, refused by the
	// database's unique index.
	sum := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", s.owner.id, s.now().Unix())))
	raw := "n8n_api_" + hex.EncodeToString(sum[:24])
	if _, dup := s.apiKeys[raw]; dup {
		s.mu.Unlock()
		writeJSON(w, http.StatusInternalServerError, map[string]any{"code": 0, "message": "There is already an entry with this name"})
		return
	}
	k := apiKey{id: s.newID(), label: *body.Label, scopes: map[string]bool{}}
	for _, sc := range body.Scopes {
		k.scopes[sc] = true
	}
	s.apiKeys[raw] = k
	now := s.stamp()
	s.mu.Unlock()
	var expires any
	if len(exp) != 0 && string(exp) != "null" {
		expires = json.RawMessage(exp)
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{
		"id": k.id, "label": k.label, "apiKey": "******" + raw[len(raw)-4:], "rawApiKey": raw,
		"scopes": body.Scopes, "expiresAt": expires, "createdAt": now, "updatedAt": now,
	}})
}
