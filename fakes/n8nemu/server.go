package n8nemu

import (
	"encoding/json"
	"fmt"
	"html"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Mode is the emulated process state.
type Mode int

const (
	// Ready serves the API.
	Ready Mode = iota
	// StartingUp answers readiness 503 and every other route 200 text/plain
	// "n8n is starting up. Please wait".
	StartingUp
	// Down closes every connection without answering.
	Down
	// Mounting is the few seconds after readiness turned 200 and before
	// n8n mounted its routes: /healthz and /healthz/readiness answer 200,
	// every other route Express's 404 page "Cannot METHOD /path"
	// (text/html).
	Mounting
)

// StartingUpBody is what n8n answers (200, text/plain) on every route but the
// health checks while it is starting.
const StartingUpBody = "n8n is starting up. Please wait"

// Version is the n8n version the emulator reports in /rest/settings.
const Version = "1.123.81"

// Server is the emulator. The zero value is not usable; call New.
type Server struct {
	// URL is the base URL when started with Start; empty otherwise.
	URL string

	mux *http.ServeMux

	mu        sync.Mutex
	mode      Mode
	rnd       *rand.Rand
	now       func() time.Time
	calls     map[string]int
	owner     *user
	sessions  map[string]bool // n8n-auth cookie values
	apiKeys   map[string]apiKey
	creds     map[string]*credential
	workflows map[string]*workflow
	wfOrder   []string // creation order, the listing order
	tags      map[string]*tag
	tagOrder  []string

	executions []*execution // oldest first
	version    string       // reported in the settings (Version unless SetVersion)
	hookFail   string       // when set, webhook calls answer 500 with it

	listed []string // public API route patterns, see PublicRoutes
}

type user struct {
	id, email, firstName, lastName, password string
}

type apiKey struct {
	id, label string
	scopes    map[string]bool
}

// New returns a ready emulator with no owner. seed makes the ids it chooses
// repeatable.
func New(seed uint64) *Server {
	s := &Server{
		mux:       http.NewServeMux(),
		rnd:       rand.New(rand.NewPCG(seed, seed^0x6e386e)),
		now:       func() time.Time { return time.Now().UTC() },
		calls:     map[string]int{},
		sessions:  map[string]bool{},
		apiKeys:   map[string]apiKey{},
		creds:     map[string]*credential{},
		workflows: map[string]*workflow{},
		tags:      map[string]*tag{},
		version:   Version,
	}
	s.routes()
	return s
}

// Start serves a new emulator on 127.0.0.1 until the test ends and returns it
// with URL set.
func Start(t testing.TB) *Server {
	t.Helper()
	s := New(1)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	s.URL = ts.URL
	return s
}

// SetMode switches between Ready, StartingUp and Down.
func (s *Server) SetMode(m Mode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mode = m
}

// Calls returns how many requests each route pattern has answered, e.g.
// "POST /api/v1/workflows". Requests refused for being down or starting up
// count under "down" and "starting".
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.calls)
}

// Writes returns how many public API requests other than GET were answered.
func (s *Server) Writes() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for route, c := range s.calls {
		if strings.Contains(route, " /api/v1/") && !strings.HasPrefix(route, "GET ") {
			n += c
		}
	}
	return n
}

// ResetCalls zeroes the counts returned by Calls and Writes.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.calls)
}

func (s *Server) routes() {
	m := routeTable{s}
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /healthz/readiness", s.readiness)
	m.HandleFunc("GET /rest/settings", s.settings)
	m.HandleFunc("POST /rest/owner/setup", s.ownerSetup)
	m.HandleFunc("POST /rest/login", s.login)
	m.HandleFunc("GET /rest/api-keys/scopes", s.session(s.apiKeyScopes))
	m.HandleFunc("POST /rest/api-keys", s.session(s.createAPIKey))
	m.HandleFunc("GET /rest/api-keys", s.session(s.listAPIKeys))
	m.HandleFunc("DELETE /rest/api-keys/{id}", s.session(s.deleteAPIKey))
	m.HandleFunc("PATCH /rest/me/password", s.session(s.changePassword))
	m.HandleFunc("GET /rest/credentials", s.session(s.restCredentials))

	m.HandleFunc("GET /api/v1/credentials/schema/{type}", s.public("credential:create", s.credentialSchema))
	m.HandleFunc("POST /api/v1/credentials", s.public("credential:create", s.createCredential))
	m.HandleFunc("DELETE /api/v1/credentials/{id}", s.public("credential:delete", s.deleteCredential))
	m.unlisted("GET /api/v1/credentials", s.public("", methodNotAllowed))
	m.unlisted("PATCH /api/v1/credentials/{id}", s.public("", methodNotAllowed))

	m.HandleFunc("POST /api/v1/workflows", s.public("workflow:create", s.createWorkflow))
	m.HandleFunc("GET /api/v1/workflows", s.public("workflow:list", s.listWorkflows))
	m.HandleFunc("GET /api/v1/workflows/{id}", s.public("workflow:read", s.getWorkflow))
	m.HandleFunc("PUT /api/v1/workflows/{id}", s.public("workflow:update", s.putWorkflow))
	m.HandleFunc("DELETE /api/v1/workflows/{id}", s.public("workflow:delete", s.deleteWorkflow))
	m.HandleFunc("POST /api/v1/workflows/{id}/activate", s.public("workflow:activate", s.activateWorkflow))
	m.HandleFunc("POST /api/v1/workflows/{id}/deactivate", s.public("workflow:deactivate", s.deactivateWorkflow))
	m.HandleFunc("GET /api/v1/workflows/{id}/tags", s.public("workflowTags:list", s.getWorkflowTags))
	m.HandleFunc("PUT /api/v1/workflows/{id}/tags", s.public("workflowTags:update", s.putWorkflowTags))

	m.HandleFunc("POST /api/v1/tags", s.public("tag:create", s.createTag))
	m.HandleFunc("GET /api/v1/tags", s.public("tag:list", s.listTags))
	m.HandleFunc("GET /api/v1/tags/{id}", s.public("tag:read", s.getTag))
	m.HandleFunc("DELETE /api/v1/tags/{id}", s.public("tag:delete", s.deleteTag))

	m.HandleFunc("GET /api/v1/executions", s.public("execution:list", s.listExecutions))

	m.unlisted("/webhook/{path...}", s.webhook)

	m.unlisted("/api/v1/", s.public("", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, message("not found"))
	}))
}

// routeTable registers routes on the server's mux and remembers the public
// API routes n8n's OpenAPI document describes.
type routeTable struct{ s *Server }

// HandleFunc registers a route of n8n's API.
func (m routeTable) HandleFunc(pattern string, h http.HandlerFunc) {
	m.s.mux.HandleFunc(pattern, h)
	if strings.Contains(pattern, " /api/v1/") {
		m.s.listed = append(m.s.listed, pattern)
	}
}

// unlisted registers a route n8n answers outside its OpenAPI document
// (the 405s of 1.x credentials, the catch-all 404).
func (m routeTable) unlisted(pattern string, h http.HandlerFunc) { m.s.mux.HandleFunc(pattern, h) }

// PublicRoutes returns the public API routes the emulator serves, as
// "METHOD /api/v1/path/{param}" patterns, in registration order. Each must
// exist with the same method in n8n's OpenAPI document (the e2e suite and
// the contract test check it).
func (s *Server) PublicRoutes() []string { return slices.Clone(s.listed) }

// ServeHTTP answers like n8n in the current mode.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	mode := s.mode
	switch mode {
	case Down:
		s.calls["down"]++
	case StartingUp, Mounting:
		if r.URL.Path != "/healthz" && r.URL.Path != "/healthz/readiness" {
			s.calls["starting"]++
		}
	}
	s.mu.Unlock()

	switch mode {
	case Down:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		// Not hijackable (an HTTP/2 or recorder writer): the nearest thing.
		w.WriteHeader(http.StatusBadGateway)
		return
	case StartingUp:
		switch r.URL.Path {
		case "/healthz":
			s.healthz(w, r)
		case "/healthz/readiness":
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "error"})
		default:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			fmt.Fprint(w, StartingUpBody)
		}
		return
	case Mounting:
		switch r.URL.Path {
		case "/healthz":
			s.healthz(w, r)
		case "/healthz/readiness":
			s.readiness(w, r)
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintf(w, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot %s %s</pre>\n</body>\n</html>\n",
				r.Method, html.EscapeString(r.URL.Path))
		}
		return
	}

	_, pattern := s.mux.Handler(r)
	s.mu.Lock()
	s.calls[pattern]++
	s.mu.Unlock()
	s.mux.ServeHTTP(w, r)
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readiness(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// settings is GET /rest/settings: like n8n 1.x, the full settings (with
// versionCli) for a signed-in user, the public ones (without) otherwise.
func (s *Server) settings(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(authCookie)
	s.mu.Lock()
	signedIn := err == nil && s.sessions[c.Value]
	ownerSet := s.owner != nil
	s.mu.Unlock()
	if !signedIn {
		writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"settingsMode": "public",
			"userManagement": map[string]any{"authenticationMethod": "email", "showSetupOnFirstLoad": !ownerSet}}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"settingsMode": "authenticated", "versionCli": s.versionOf()}})
}

// public wraps a public API handler with n8n's API key check. scope "" only
// needs a valid key.
func (s *Server) public(scope string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-N8N-API-KEY")
		if key == "" {
			writeJSON(w, http.StatusUnauthorized, message("'X-N8N-API-KEY' header required"))
			return
		}
		s.mu.Lock()
		k, ok := s.apiKeys[key]
		s.mu.Unlock()
		if !ok {
			writeJSON(w, http.StatusUnauthorized, message("unauthorized"))
			return
		}
		if scope != "" && !k.scopes[scope] {
			writeJSON(w, http.StatusForbidden, message("Forbidden"))
			return
		}
		h(w, r)
	}
}

func methodNotAllowed(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusMethodNotAllowed, message(r.Method+" method not allowed"))
}

func message(m string) map[string]string { return map[string]string{"message": m} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// newID returns a 16-character id like n8n's nanoid ids. Callers hold s.mu.
func (s *Server) newID() string {
	var b [16]byte
	for i := range b {
		b[i] = idAlphabet[s.rnd.IntN(len(idAlphabet))]
	}
	return string(b[:])
}

func (s *Server) stamp() string { return s.now().Format("2006-01-02T15:04:05.000Z") }
