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
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func quiet() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
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

// worldOption changes the API's configuration before it starts.
type worldOption func(*stateapi.Config)

func newWorld(t testing.TB, generated int, propose bool, opts ...worldOption) *world {
	t.Helper()
	repo := testkit.NewStateRepo(t)
	repo.CopyExample("genesis.yaml", "tenants", "templates")
	for i := range generated {
		tn := testkit.Tenant(fmt.Sprintf("ws-gen-%03d", i), "nyc3")
		tn.Metadata.Name, tn.Metadata.Tier = "Tenant "+tn.Metadata.ID, schema.TierStarter
		repo.WriteTenant(tn)
	}
	repo.Commit("example state")
	w := &world{t: t, bare: repo.Push(), pushed: make(chan struct{}, 1000)}
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
	ids := testkit.DemoIdentities(t)
	cfg := stateapi.Config{Writer: w.writer, Store: w.store, Identities: ids, Logger: quiet(),
		Pushed: func() { w.pushed <- struct{}{} }}
	for _, o := range opts {
		o(&cfg)
	}
	api := stateapi.New(cfg)
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

func (w *world) head() string { return testkit.Git(w.t, w.bare, "rev-parse", "main") }

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
