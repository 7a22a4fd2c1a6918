package agentapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const (
	commitA = "0123456789abcdef0123456789abcdef01234567"
	commitB = "89abcdef0123456789abcdef0123456789abcdef"
	// secretValue is the plaintext inside every test credential; it must
	// never appear in Postgres, logs or envelopes.
	secretValue = "PLAINTEXT-SECRET-7f3a9c41"
)

const templateJSON = `{"name":"Welcome","nodes":[{"name":"Gmail","type":"n8n-nodes-base.gmail","parameters":{"subject":"{{param.greeting}}"},"credentials":{"gmailOAuth2":{"id":"TEMPLATE_GMAIL_UUID","name":"gmail"}}}],"connections":{}}`

// world is a Service on a real Postgres with real keys, served over HTTP.
type world struct {
	t       testing.TB
	st      *store.Store
	svc     *Service
	srv     *httptest.Server
	fleetID *age.X25519Identity
	signer  *dsse.Signer
	trusted dsse.Trusted
	logs    *syncio.Buffer
	reg     *prometheus.Registry
	// cfg is the Service's configuration before newWorld's options.
	cfg Config

	mu     sync.Mutex
	offset time.Duration
	snap   tenants.Snapshot
}

type option func(*Config)

func newWorld(t testing.TB, opts ...option) *world {
	t.Helper()
	w := &world{t: t, logs: &syncio.Buffer{}, reg: prometheus.NewRegistry(), trusted: dsse.Trusted{}}
	var err error
	if w.fleetID, err = age.GenerateX25519Identity(); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	w.signer = dsse.NewSigner(priv)
	w.trusted.Add(w.signer.Public())
	log := slog.New(slog.NewJSONHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w.st, err = store.Open(t.Context(), pgtest.New(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.st.Close)
	fleet := testkit.Fleet()
	fleet.Spec.Recipients = []string{w.fleetID.Recipient().String()}
	fleet.Spec.Sizes = map[string]schema.Size{"s-1vcpu-1gb": {MonthlyUSD: 6}}
	f, errs := schema.DecodeFleet("genesis.yaml", []byte(testkit.FleetYAML(fleet)))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if err := w.st.SyncAccounts(t.Context(), f); err != nil {
		t.Fatal(err)
	}
	tpl, errs := schema.ParseTemplate("templates/workflows/welcome.json", "welcome", []byte(templateJSON))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	w.snap = tenants.Snapshot{Commit: commitA, Fleet: f, Templates: map[string]*schema.Template{"welcome": tpl}, Tenants: map[string]tenants.TenantState{}}
	cfg := Config{
		Store: w.st, Logger: log, Registerer: w.reg, Signer: w.signer, Identities: []age.Identity{w.fleetID},
		PublicURL: "http://reconciler.test", Desired: w.desired, Now: w.now, BatchInterval: 20 * time.Millisecond, Sweep: time.Hour,
	}
	w.cfg = cfg
	for _, o := range opts {
		o(&cfg)
	}
	w.svc = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.svc.Run(ctx) }()
	w.srv = httptest.NewServer(w.svc.Handler())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", w.logs.String())
		}
		w.srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w
}

func (w *world) now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return time.Now().Add(w.offset)
}

func (w *world) advance(d time.Duration) {
	w.mu.Lock()
	w.offset += d
	w.mu.Unlock()
}

func (w *world) desired() (tenants.Snapshot, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.snap, true
}

// replica starts another Service on the same database, configured like
// the world's but for opts (a restart of the reconciler with other flags),
// served over HTTP until the test ends. Its metrics are not registered.
func (w *world) replica(opts ...option) (*Service, *httptest.Server) {
	w.t.Helper()
	cfg := w.cfg
	cfg.Registerer = nil
	for _, o := range opts {
		o(&cfg)
	}
	svc := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	srv := httptest.NewServer(svc.Handler())
	w.t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			w.t.Errorf("Run: %v", err)
		}
	})
	return svc, srv
}

// tenantSpec is what setTenant varies.
type tenantSpec struct {
	state    string
	domains  []string
	greeting string
	n8n      string
}

// setTenant puts workspace id in the desired state, as blob.
func (w *world) setTenant(id, blob string, s tenantSpec) {
	w.t.Helper()
	if s.state == "" {
		s.state = "running"
	}
	if s.greeting == "" {
		s.greeting = "Hello"
	}
	tn := testkit.Tenant(id, "nyc3")
	tn.Spec.State, tn.Spec.N8N.Version, tn.Spec.Domains = schema.State(s.state), s.n8n, s.domains
	for _, name := range []string{"gmail", "slack"} {
		typ := map[string]string{"gmail": "gmailOAuth2", "slack": "slackApi"}[name]
		sealed := testkit.Seal(w.t, w.fleetID.Recipient(), fmt.Sprintf(`{"clientId":"%s-id","clientSecret":"%s"}`, name, secretValue))
		tn.Spec.Credentials = append(tn.Spec.Credentials, schema.Credential{Name: name, Type: typ, Sealed: sealed})
	}
	tn.Spec.Workflows = []schema.Workflow{{Template: "welcome", Credentials: map[string]string{"TEMPLATE_GMAIL_UUID": "gmail"}, Params: map[string]string{"greeting": s.greeting}}}
	yaml := testkit.TenantYAML(tn)
	file := "tenants/" + id + ".yaml"
	t, errs := schema.DecodeTenant(file, []byte(yaml))
	if len(errs) > 0 {
		w.t.Fatalf("tenant: %v\n%s", errs, yaml)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if errs := t.Check(file, schema.Context{Fleet: w.snap.Fleet, Templates: w.snap.Templates}); len(errs) > 0 {
		w.t.Fatalf("tenant: %v", errs)
	}
	next := w.snap
	next.Tenants = map[string]tenants.TenantState{}
	for k, v := range w.snap.Tenants {
		next.Tenants[k] = v
	}
	next.Tenants[id] = tenants.TenantState{ID: id, Tenant: t, File: file, Blob: blob, ValidBlob: blob, Status: tenants.StatusValid}
	w.snap = next
}

func (w *world) setCommit(c string) {
	w.mu.Lock()
	w.snap.Commit = c
	w.mu.Unlock()
}

// provision records workspace's droplet as the reconciler's create does:
// journaled, then finished with its id and address.
func (w *world) provision(ws string, gen int, droplet int, ip string) {
	w.t.Helper()
	ctx := context.Background()
	a := plan.Action{Kind: plan.Create, Workspace: ws, Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Droplet: plan.DropletName(ws, gen), Gen: gen}
	id, err := w.st.Begin(ctx, a, schema.StateRunning, commitA)
	if err != nil {
		w.t.Fatal(err)
	}
	out := store.Outcome{Account: "acct-a", DropletID: droplet, DropletName: a.Droplet, IP: ip, Desired: schema.StateRunning, Commit: commitA}
	if err := w.st.Finish(ctx, id, a, out, nil); err != nil {
		w.t.Fatal(err)
	}
}

// token mints a provisioning token for ws's droplet name, bound to the
// droplet fleet_status records under that name (if any), as if the token
// had gone into the user data of the create that recorded it
// (store.Created binds it then).
func (w *world) token(ws, name string) string {
	w.t.Helper()
	tok := w.unboundToken(ws, name)
	h := hash(tok)
	if _, err := w.st.Pool().Exec(context.Background(), `UPDATE enrollment_tokens t SET droplet_id = f.droplet_id FROM fleet_status f
		WHERE t.token_hash = $1 AND f.workspace = t.workspace AND f.droplet_name = t.droplet_name`, h[:]); err != nil {
		w.t.Fatal(err)
	}
	return tok
}

// unboundToken mints a provisioning token for ws's droplet name, as
// UserData does before the create.
func (w *world) unboundToken(ws, name string) string {
	w.t.Helper()
	tok, err := w.svc.MintToken(context.Background(), ws, name)
	if err != nil {
		w.t.Fatal(err)
	}
	return tok
}

// agent is a droplet's agent keys.
type agent struct {
	id   *age.X25519Identity
	pub  ed25519.PublicKey
	cred string
}

func newAgent(t testing.TB) *agent {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	return &agent{id: id, pub: pub}
}

func (a *agent) request(token, ws, droplet, name string) schema.EnrollRequest {
	return schema.EnrollRequest{Token: token, Workspace: ws, DropletID: droplet, DropletName: name,
		AgeRecipient: a.id.Recipient().String(), SigningKey: string(dsse.MarshalPublicKeyPEM(a.pub)), AgentVersion: "0.1.0"}
}

// do sends a request and returns the status, headers and body.
func (w *world) do(method, path, cred string, hdr map[string]string, body []byte) (int, http.Header, []byte) {
	w.t.Helper()
	req, err := http.NewRequest(method, w.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := w.srv.Client().Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func (w *world) enroll(a *agent, req schema.EnrollRequest) int {
	w.t.Helper()
	b, _ := json.Marshal(req)
	code, _, body := w.do("POST", "/v1/enroll", "", nil, b)
	if code == http.StatusOK {
		var resp schema.EnrollResponse
		if err := schema.DecodeStrict(body, &resp); err != nil {
			w.t.Fatalf("enroll response: %v", err)
		}
		if resp.Workspace != req.Workspace || resp.DropletID != req.DropletID || len(resp.Credential) < 40 {
			w.t.Fatalf("enroll response = %+v", resp)
		}
		a.cred = resp.Credential
		w.firstManifest()
	}
	return code
}

// firstManifest waits until the first manifests queued by enrollments
// are rendered (or refused): enrollment answers first and renders after.
func (w *world) firstManifest() {
	w.t.Helper()
	poll.Until(w.t, "the first manifests", func() bool { return w.svc.firstsPending.Load() == 0 })
}

// mustEnroll provisions and enrolls a droplet of ws.
func (w *world) mustEnroll(ws string, gen, droplet int, ip string) *agent {
	w.t.Helper()
	w.provision(ws, gen, droplet, ip)
	a := newAgent(w.t)
	name := plan.DropletName(ws, gen)
	if code := w.enroll(a, a.request(w.token(ws, name), ws, fmt.Sprint(droplet), name)); code != http.StatusOK {
		w.t.Fatalf("enroll %s: %d", ws, code)
	}
	return a
}

// manifest fetches and verifies the manifest a's credential gets.
func (w *world) manifest(a *agent) (schema.Manifest, string) {
	w.t.Helper()
	code, hdr, body := w.do("GET", "/v1/manifest", a.cred, nil, nil)
	if code != http.StatusOK {
		w.t.Fatalf("GET /v1/manifest: %d %s", code, body)
	}
	return w.verify(body), hdr.Get("ETag")
}

func (w *world) verify(env []byte) schema.Manifest {
	w.t.Helper()
	payload, _, err := dsse.Verify(env, schema.ManifestPayloadType, w.trusted)
	if err != nil {
		w.t.Fatalf("verify envelope: %v", err)
	}
	var m schema.Manifest
	if err := schema.DecodeStrict(payload, &m); err != nil {
		w.t.Fatalf("decode payload: %v", err)
	}
	return m
}

// poll is how these tests wait for a condition: every 5ms, for at most 10s.
var poll = testkit.Poll{Every: 5 * time.Millisecond, Within: 10 * time.Second}

func (w *world) count(sql string, args ...any) int {
	w.t.Helper()
	var n int
	if err := w.st.Pool().QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		w.t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func payloadOf(t testing.TB, env []byte) []byte {
	var e dsse.Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	p, err := base64.StdEncoding.DecodeString(e.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
