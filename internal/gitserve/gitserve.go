// Package gitserve serves bare git repositories over git's smart HTTP
// protocol, behind HTTP basic auth, for tests: the real git-http-backend
// runs as a CGI program under net/http/cgi, so clients (go-git, the git CLI)
// speak to it exactly as they would to a hosting service. Every request must
// carry one of the accepted user name/password pairs or it is answered 401
// with a WWW-Authenticate challenge; Refuse makes the server answer every
// request with an error, to drive a client's failure path.
package gitserve

import (
	"crypto/subtle"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// Server is a running git HTTP server on 127.0.0.1; it stops when the test
// ends.
type Server struct {
	// URL is the server's base URL (http://127.0.0.1:PORT); a repository
	// ROOT/NAME is served at URL + "/" + NAME.
	URL string
	// Requests counts the requests that passed authentication.
	Requests atomic.Int64
	refuse   atomic.Int32
	service  atomic.Value // string: the git service refused ("" for any)
}

// Login is an accepted user name and password (either may be empty).
type Login struct{ User, Password string }

// Start serves the bare repositories under root (pushes included) to
// clients that present one of logins.
func Start(t testing.TB, root string, logins ...Login) *Server {
	t.Helper()
	exe, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Fatalf("gitserve: git --exec-path: %v", err)
	}
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(exe)), "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1",
			"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
			// Pushes are allowed (receive-pack needs it without REMOTE_USER).
			"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=http.receivepack", "GIT_CONFIG_VALUE_0=true"},
	}
	s := &Server{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if !ok || !accepted(logins, user, pass) {
			w.Header().Set("WWW-Authenticate", `Basic realm="gitserve"`)
			http.Error(w, "authentication required", http.StatusUnauthorized)
			return
		}
		if svc, _ := s.service.Load().(string); s.refuse.Load() > 0 && (svc == "" || r.URL.Query().Get("service") == svc || strings.HasSuffix(r.URL.Path, "/"+svc)) {
			s.refuse.Add(-1)
			http.Error(w, "refused by the test", http.StatusServiceUnavailable)
			return
		}
		s.Requests.Add(1)
		backend.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Refuse makes the next n authenticated requests for service
// ("git-upload-pack": fetches, "git-receive-pack": pushes, "": any) fail
// with 503.
func (s *Server) Refuse(n int, service string) {
	s.service.Store(service)
	s.refuse.Store(int32(n))
}

func accepted(logins []Login, user, pass string) bool {
	for _, l := range logins {
		if subtle.ConstantTimeCompare([]byte(l.User), []byte(user)) == 1 && subtle.ConstantTimeCompare([]byte(l.Password), []byte(pass)) == 1 {
			return true
		}
	}
	return false
}
