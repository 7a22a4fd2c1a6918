package client_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/api/client"
)

// server answers the routes the tests call as the reconciler would.
func server(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/fleet", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			api.WriteProblem(w, http.StatusUnauthorized, "unknown token")
			return
		}
		json.NewEncoder(w).Encode(api.Fleet{Commit: "c1", Tenants: []api.FleetTenant{{TenantStatus: api.TenantStatus{Workspace: "ws-a", Lifecycle: "HIBERNATED"}}}})
	})
	mux.HandleFunc("GET /v1/observed", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"observed_at":"2026-01-01T00:00:00Z","leader":"r-1","Status":{},"Extra":1}`))
	})
	mux.HandleFunc("POST /v1/tenants/{id}/wake", func(w http.ResponseWriter, r *http.Request) {
		api.WriteProblem(w, http.StatusConflict, "cannot wake "+r.PathValue("id"))
	})
	mux.HandleFunc("PATCH /v1/tenants/{id}", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := r.Header["If-Match"]; !ok {
			api.WriteProblem(w, http.StatusPreconditionRequired, "If-Match is required")
			return
		}
		if r.Header.Get("Content-Type") != "application/merge-patch+json" || r.Header.Get("If-Match") != `"e1"` || r.Header.Get("X-Correlation-Id") != "c-1" {
			api.WriteProblem(w, http.StatusBadRequest, "headers")
			return
		}
		w.WriteHeader(http.StatusOK)
		json.NewEncoder(w).Encode(api.WriteResult{Commit: "c2", File: "tenants/" + r.PathValue("id") + ".yaml"})
	})
	mux.HandleFunc("POST /v1/tenants/{id}/retry", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("upstream gone\n")) // not problem details: a proxy's answer
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func TestClient(t *testing.T) {
	srv := server(t)
	ctx := t.Context()
	c := client.New(srv.URL+"/", "tok", nil)

	f, err := c.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := f.Tenant("ws-a"); !ok || got.Lifecycle != "HIBERNATED" || f.Commit != "c1" {
		t.Errorf("Fleet = %+v", f)
	}

	// The ETag as the header carries it, or bare as api.Tenant.ETag does.
	for _, etag := range []string{`"e1"`, "e1"} {
		res, err := c.PatchTenant(ctx, "ws-a", etag, []byte(`{"spec":{"state":"running"}}`), "c-1")
		if diff := cmp.Diff(api.WriteResult{Commit: "c2", File: "tenants/ws-a.yaml"}, res); err != nil || diff != "" {
			t.Errorf("PatchTenant(If-Match %s): %v (-want +got):\n%s", etag, err, diff)
		}
	}

	for _, tt := range []struct {
		name   string
		call   func() error
		status int
		kind   error
		msg    string
	}{
		{"no token", func() error { _, err := client.New(srv.URL, "", nil).Fleet(ctx); return err }, 401, nil,
			"GET /v1/fleet: 401 Unauthorized: unknown token"},
		{"conflict", func() error { _, err := c.Wake(ctx, "ws-a"); return err }, 409, api.ErrConflict,
			"POST /v1/tenants/ws-a/wake: 409 Conflict: cannot wake ws-a"},
		{"no If-Match", func() error {
			_, err := c.PatchTenant(ctx, "ws-a", "", []byte(`{"spec":{"state":"running"}}`), "c-1")
			return err
		}, 428, nil, "PATCH /v1/tenants/ws-a: 428 Precondition Required: If-Match is required"},
		{"not problem details", func() error { _, err := c.Retry(ctx, "ws-a"); return err }, 503, api.ErrUnavailable,
			"POST /v1/tenants/ws-a/retry: 503 Service Unavailable: upstream gone"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			var e *client.Error
			if !errors.As(err, &e) || e.StatusCode != tt.status || err.Error() != tt.msg {
				t.Fatalf("err = %v, want a %d *client.Error %q", err, tt.status, tt.msg)
			}
			for _, k := range []error{api.ErrNotFound, api.ErrConflict, api.ErrUnavailable} {
				if got, want := errors.Is(err, k), k == tt.kind; got != want {
					t.Errorf("errors.Is(err, %v) = %v, want %v", k, got, want)
				}
			}
		})
	}

	// An observation with a field the client does not know is refused.
	if _, err := c.Observed(ctx); err == nil || !strings.Contains(err.Error(), `unknown field "Extra"`) {
		t.Errorf("Observed: %v, want unknown field refused", err)
	}
}

func TestEntityTag(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"e1", `"e1"`},
		{`"e1"`, `"e1"`},
		{`W/"e1"`, `W/"e1"`},
	} {
		t.Run(tt.in, func(t *testing.T) {
			if got := client.EntityTag(tt.in); got != tt.want {
				t.Errorf("EntityTag(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}
