package stateapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/tenants"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func git(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=admin", "-c", "user.email=admin@example.com", "-c", "gc.auto=0"}, args...)...)
	cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func genTenant(id string) string {
	return fmt.Sprintf("apiVersion: genesis.dev/v1\nkind: Tenant\nmetadata:\n  id: %s\n  name: Tenant %s\n  tier: starter\nspec:\n  state: running\n  droplet:\n    region: nyc3\n", id, id)
}

// world is the API on real parts: a bare state repository holding
// state-example (plus n generated tenants ws-gen-NNN), a Writer with its
// own clone, Postgres, and the reconciler's HTTP handler with tokens.
type world struct {
	t      testing.TB
	bare   string
	url    string
	store  *store.Store
	writer *tenants.Writer
	srv    *httptest.Server
	pushed chan struct{}
}

var tokens = map[string]string{"dash": "tok-dash", "root": "tok-admin", "agent": "tok-agent", "slow": "tok-slow"}

func newWorld(t testing.TB, generated int, propose bool) *world {
	t.Helper()
	work := t.TempDir()
	git(t, work, "init", "-q", "-b", "main")
	if out, err := exec.Command("cp", "-r", "../../state-example/genesis.yaml", "../../state-example/tenants", "../../state-example/templates", work).CombinedOutput(); err != nil {
		t.Fatalf("copy state-example: %v\n%s", err, out)
	}
	for i := range generated {
		id := fmt.Sprintf("ws-gen-%03d", i)
		os.WriteFile(filepath.Join(work, "tenants", id+".yaml"), []byte(genTenant(id)), 0o644)
	}
	git(t, work, "add", "-A")
	git(t, work, "commit", "-q", "-m", "example state")
	w := &world{t: t, bare: filepath.Join(t.TempDir(), "state.git"), pushed: make(chan struct{}, 1000)}
	git(t, work, "clone", "-q", "--bare", work, w.bare)
	w.url = "file://" + w.bare
	var err error
	w.store, err = store.Open(t.Context(), pgtest.New(t), quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.store.Close)
	w.writer, err = tenants.NewWriter(tenants.WriterConfig{Remote: w.url, Dir: filepath.Join(t.TempDir(), "writer.git"), Propose: propose,
		Committer: tenants.Identity{Name: "Genesis API", Email: "api@genesis.invalid"}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.writer.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("../../state-example/demo-keys/age.key")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := age.ParseIdentities(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	api := stateapi.New(stateapi.Config{Writer: w.writer, Store: w.store, Identities: ids, Logger: quiet(),
		Pushed: func() { w.pushed <- struct{}{} }})
	toks := []auth.Token{
		{Name: "dash", SHA256: auth.Hash(tokens["dash"]), Scopes: []auth.Scope{auth.Dashboard}},
		{Name: "root", SHA256: auth.Hash(tokens["root"]), Scopes: []auth.Scope{auth.Admin}},
		{Name: "agent", SHA256: auth.Hash(tokens["agent"]), Scopes: []auth.Scope{auth.Agent}},
	}
	a := auth.New(auth.Config{Tokens: toks, Rate: 10000, Burst: 10000, Logger: quiet()})
	w.srv = httptest.NewServer(fleetapi.Handler(fleetapi.HandlerConfig{Store: w.store, Gatherer: prometheus.NewRegistry(), Auth: a, API: api, MetricsTokenRequired: true}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *world) head() string { return git(w.t, w.bare, "rev-parse", "main") }

type resp struct {
	code int
	hdr  http.Header
	body []byte
}

func (r resp) json(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		tb.Fatalf("decode %s: %v", r.body, err)
	}
}

// do sends a request as the named token holder ("" for none). hdr pairs
// are extra headers.
func (w *world) do(who, method, path, body string, hdr ...string) resp {
	w.t.Helper()
	req, err := http.NewRequest(method, w.srv.URL+path, strings.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+tokens[who])
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		w.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

// etag reads a tenant's current ETag through the API.
func (w *world) etag(id string) string {
	w.t.Helper()
	r := w.do("dash", "GET", "/v1/tenants/"+id, "")
	if r.code != 200 {
		w.t.Fatalf("GET %s: %d %s", id, r.code, r.body)
	}
	return r.hdr.Get("ETag")
}

func compact(s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		return s
	}
	return b.String()
}
