package agentapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
	"genesis.dev/fleet/tenants"
)

func testutilCount(t testing.TB, c prometheus.Collector) float64 {
	t.Helper()
	return testutil.ToFloat64(c)
}

func TestManifest(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{domains: []string{"track.acme.com"}})
	w.setTenant("ws-beta", "blob2", tenantSpec{n8n: "1.124.0"})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	b := w.mustEnroll("ws-beta", 1, 2001, "203.0.113.8")

	code, hdr, env := w.do("GET", "/v1/manifest", a.cred, nil, nil)
	if code != http.StatusOK {
		t.Fatalf("GET: %d %s", code, env)
	}
	sum := sha256.Sum256(env)
	if got, want := hdr.Get("ETag"), `"`+hex.EncodeToString(sum[:])+`"`; got != want {
		t.Errorf("ETag = %s, want %s", got, want)
	}
	m := w.verify(env)
	if m.Type != schema.ManifestType || m.Workspace != "ws-acme" || m.Droplet != "1001" || m.Version != 1 || m.Commit != commitA ||
		m.N8N.Version != "1.123.81" || m.State != "running" {
		t.Errorf("manifest header = %+v", m)
	}
	if diff := cmp.Diff([]string{"track.acme.com", "203.0.113.7.sslip.io"}, m.Domains); diff != "" {
		t.Errorf("domains (-want +got):\n%s", diff)
	}
	if d := m.Expires.Sub(m.IssuedAt); d != 24*time.Hour {
		t.Errorf("lifetime = %s, want 24h", d)
	}
	if len(m.Workflows) != 1 {
		t.Fatalf("workflows = %d, want 1", len(m.Workflows))
	}
	wf := m.Workflows[0]
	wsum := sha256.Sum256(wf.JSON)
	if wf.Name != "welcome" || wf.SHA256 != hex.EncodeToString(wsum[:]) {
		t.Errorf("workflow %s sha256 %s, want the digest of its json", wf.Name, wf.SHA256)
	}
	if !strings.Contains(string(wf.JSON), `"TEMPLATE_GMAIL_UUID"`) || !strings.Contains(string(wf.JSON), `"subject":"Hello"`) {
		t.Errorf("workflow json keeps placeholders and fills params? %s", wf.JSON)
	}
	// Credentials open only with this droplet's identity and are bound to
	// this slot.
	if len(m.Credentials) != 2 {
		t.Fatalf("credentials = %d, want 2", len(m.Credentials))
	}
	for _, c := range m.Credentials {
		data, err := sealing.Open(a.id, c, "ws-acme", "1001")
		if err != nil {
			t.Fatalf("open %s with the droplet's identity: %v", c.Name, err)
		}
		var v map[string]string
		if err := json.Unmarshal(data, &v); err != nil || v["clientSecret"] != secretValue || v["clientId"] != c.Name+"-id" {
			t.Errorf("credential %s data = %s", c.Name, data)
		}
		if _, err := sealing.Open(b.id, c, "ws-acme", "1001"); err == nil {
			t.Errorf("credential %s opens with another droplet's identity", c.Name)
		}
		if _, err := sealing.Open(w.fleetID, c, "ws-acme", "1001"); err == nil {
			t.Errorf("credential %s opens with the fleet identity", c.Name)
		}
		if _, err := sealing.Open(a.id, c, "ws-acme", "2001"); !errors.Is(err, sealing.ErrBinding) {
			t.Errorf("credential %s for another droplet slot: err = %v, want ErrBinding", c.Name, err)
		}
		other := c
		other.Name = map[string]string{"gmail": "slack", "slack": "gmail"}[c.Name]
		if _, err := sealing.Open(a.id, other, "ws-acme", "1001"); !errors.Is(err, sealing.ErrBinding) {
			t.Errorf("credential %s moved to slot %s: err = %v, want ErrBinding", c.Name, other.Name, err)
		}
	}

	// 304 with If-None-Match, from memory.
	etag := hdr.Get("ETag")
	for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
		if code, h, body := w.do("GET", "/v1/manifest", a.cred, map[string]string{"If-None-Match": inm}, nil); code != http.StatusNotModified || len(body) != 0 || h.Get("ETag") != etag {
			t.Errorf("If-None-Match %s: %d (%d bytes), ETag %s", inm, code, len(body), h.Get("ETag"))
		}
	}
	if code, _, _ := w.do("GET", "/v1/manifest", a.cred, map[string]string{"If-None-Match": `"stale"`}, nil); code != http.StatusOK {
		t.Errorf("stale If-None-Match: %d, want 200", code)
	}

	// Each credential gets only its own droplet's manifest.
	mb, _ := w.manifest(b)
	if mb.Workspace != "ws-beta" || mb.Droplet != "2001" || mb.N8N.Version != "1.124.0" {
		t.Errorf("beta's manifest names %s/%s n8n %s", mb.Workspace, mb.Droplet, mb.N8N.Version)
	}
	for _, c := range mb.Credentials {
		if _, err := sealing.Open(a.id, c, "ws-beta", "2001"); err == nil {
			t.Error("acme's agent opens beta's credential")
		}
	}
	for _, cred := range []string{"", "nope", a.cred + "x", strings.ToUpper(a.cred)} {
		if code, _, _ := w.do("GET", "/v1/manifest", cred, nil, nil); code != http.StatusUnauthorized {
			t.Errorf("credential %q: %d, want 401", cred, code)
		}
	}
	if code, _, _ := w.do("GET", "/v1/manifest?wait=soon", a.cred, nil, nil); code != http.StatusBadRequest {
		t.Errorf("bad wait: %d, want 400", code)
	}
	for code, want := range map[string]float64{"200": 3, "304": 4, "401": 4} {
		if got := testutilCount(t, w.svc.m.served.WithLabelValues(code)); got < want {
			t.Errorf("genesis_manifests_served_total{code=%s} = %v, want at least %v", code, got, want)
		}
	}
}

func TestManifest404(t *testing.T) {
	w := newWorld(t)
	// Enrolled, but the tenant is not (validly) in git: no manifest yet.
	a := w.mustEnroll("ws-ghost", 1, 3001, "203.0.113.10")
	if code, _, _ := w.do("GET", "/v1/manifest", a.cred, nil, nil); code != http.StatusNotFound {
		t.Fatalf("GET without a manifest: %d, want 404", code)
	}
	// Once the tenant appears the sweep renders it, and the 404 is gone.
	w.setTenant("ws-ghost", "blob1", tenantSpec{})
	if n, err := w.svc.Sweep(t.Context()); err != nil || n != 1 {
		t.Fatalf("Sweep = %d, %v; want 1 manifest", n, err)
	}
	if m, _ := w.manifest(a); m.Version != 1 {
		t.Errorf("version = %d, want 1", m.Version)
	}
}

// longPoll starts a GET ?wait= with If-None-Match and returns a channel
// with its status and body.
func (w *world) longPoll(cred, etag, wait string) <-chan [2]any {
	out := make(chan [2]any, 1)
	go func() {
		req, _ := http.NewRequest("GET", w.srv.URL+"/v1/manifest?wait="+wait, nil)
		req.Header.Set("Authorization", "Bearer "+cred)
		req.Header.Set("If-None-Match", etag)
		resp, err := w.srv.Client().Do(req)
		if err != nil {
			out <- [2]any{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		var body []byte
		buf := make([]byte, 1<<16)
		for {
			n, err := resp.Body.Read(buf)
			body = append(body, buf[:n]...)
			if err != nil {
				break
			}
		}
		out <- [2]any{resp.StatusCode, body}
	}()
	return out
}

func TestLongPoll(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	_, etag := w.manifest(a)

	// Nothing new: the wait ends with 304.
	r := <-w.longPoll(a.cred, etag, "100ms")
	if r[0] != http.StatusNotModified {
		t.Fatalf("long-poll without a change: %v, want 304", r[0])
	}

	done := w.longPoll(a.cred, etag, "30s")
	poll.Until(t, "the long-poll to wait", func() bool { return testutilCount(t, w.svc.m.longpolls) == 1 })
	select {
	case r := <-done:
		t.Fatalf("long-poll returned %v before a new version existed", r[0])
	case <-time.After(50 * time.Millisecond):
	}
	w.setTenant("ws-acme", "blob2", tenantSpec{greeting: "Welcome back"})
	w.setCommit(commitB)
	if err := w.svc.RenderAction(t.Context(), plan.Action{Kind: plan.UpdateManifest, Workspace: "ws-acme"}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r[0] != http.StatusOK {
			t.Fatalf("long-poll: %v %s, want 200", r[0], r[1])
		}
		m := w.verify(r[1].([]byte))
		if m.Version != 2 || m.Commit != commitB || !strings.Contains(string(m.Workflows[0].JSON), "Welcome back") {
			t.Errorf("long-poll got version %d commit %s", m.Version, m.Commit)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not return after a new version was issued")
	}
	if got := testutilCount(t, w.svc.m.longpolls); got != 0 {
		t.Errorf("long-polls waiting = %v after it returned", got)
	}
	// The 304 after the first wait is no delivery; the 200 is one.
	if got := testutil.CollectAndCount(w.svc.m.delivery); got != 1 {
		t.Fatalf("delivery histogram has %d series, want 1", got)
	}
	if got := histogramCount(t, w.svc.m.delivery); got != 1 {
		t.Errorf("genesis_manifest_delivery_seconds count = %d, want 1", got)
	}
}

// histogramCount is how many observations h has.
func histogramCount(t testing.TB, h prometheus.Histogram) uint64 {
	t.Helper()
	var m dto.Metric
	if err := h.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// TestLongPollAcrossReplicas: a manifest issued by one replica reaches a
// long-poll waiting on another through LISTEN/NOTIFY.
func TestLongPollAcrossReplicas(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	_, etag := w.manifest(a)

	other := &world{t: t, st: w.st, fleetID: w.fleetID, signer: w.signer, trusted: w.trusted, logs: w.logs, snap: w.snap}
	replica := New(Config{Store: w.st, Logger: w.svc.cfg.Logger, Signer: w.signer, Identities: []age.Identity{w.fleetID},
		Desired: w.desired, Sweep: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- replica.Run(ctx) }()
	defer func() { cancel(); <-ran }()
	other.svc = replica
	other.srv = httptest.NewServer(replica.Handler())
	defer other.srv.Close()

	done := other.longPoll(a.cred, etag, "30s")
	poll.Until(t, "the replica's long-poll to wait", func() bool { return testutilCount(t, replica.m.longpolls) == 1 })
	w.setTenant("ws-acme", "blob2", tenantSpec{greeting: "Hi"})
	if err := w.svc.RenderWorkspace(t.Context(), "ws-acme"); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r[0] != http.StatusOK || w.verify(r[1].([]byte)).Version != 2 {
			t.Fatalf("replica long-poll: %v", r[0])
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the replica's long-poll did not see the new version")
	}
}

func TestVersionsAndResign(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	sweep := func(want int) {
		t.Helper()
		n, err := w.svc.Sweep(t.Context())
		if err != nil || n != want {
			t.Fatalf("Sweep = %d, %v; want %d", n, err, want)
		}
	}
	// Nothing changed: cached, nothing issued, even for another commit.
	w.setCommit(commitB)
	sweep(0)
	if err := w.svc.RenderWorkspace(t.Context(), "ws-acme"); err != nil {
		t.Fatal(err)
	}
	sweep(0)
	// 15h into a 24h lifetime more than a third remains: still cached.
	w.advance(15 * time.Hour)
	sweep(0)
	// 17h in, less than a third remains: re-signed without a change.
	w.advance(2 * time.Hour)
	sweep(1)
	m, _ := w.manifest(a)
	if m.Version != 2 || !m.Expires.After(w.now().Add(23*time.Hour)) {
		t.Errorf("re-signed manifest: version %d expires %s", m.Version, m.Expires)
	}
	if got := testutilCount(t, w.svc.m.expiry); got < 23*3600 || got > 24*3600 {
		t.Errorf("genesis_manifest_expiry_seconds = %v, want about 24h", got)
	}
	// Each input change issues a new version: the tenant, a template, the
	// fleet default n8n version, the droplet's address.
	w.setTenant("ws-acme", "blob2", tenantSpec{domains: []string{"a.example.com"}})
	sweep(1)
	w.mu.Lock()
	tpl, errs := schema.ParseTemplate("templates/workflows/welcome.json", "welcome", []byte(strings.Replace(templateJSON, "Welcome", "Welcome v2", 1)))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	w.snap.Templates = map[string]*schema.Template{"welcome": tpl}
	fleet := *w.snap.Fleet
	fleet.Spec.Defaults.N8NVersion = "1.123.82"
	w.mu.Unlock()
	sweep(1)
	w.mu.Lock()
	w.snap.Fleet = &fleet
	w.mu.Unlock()
	sweep(1)
	if _, err := w.st.Pool().Exec(t.Context(), `UPDATE fleet_status SET ip = '203.0.113.99' WHERE workspace = 'ws-acme'`); err != nil {
		t.Fatal(err)
	}
	sweep(1)
	sweep(0)
	m, _ = w.manifest(a)
	if m.Version != 6 || m.N8N.Version != "1.123.82" || m.Domains[1] != "203.0.113.99.sslip.io" || !strings.Contains(string(m.Workflows[0].JSON), "Welcome v2") {
		t.Errorf("final manifest: version %d n8n %s domains %v", m.Version, m.N8N.Version, m.Domains)
	}
	// Versions strictly increase and each is recorded as issued.
	rows, err := w.st.Pool().Query(t.Context(), `SELECT version FROM manifests WHERE droplet_id = 1001 ORDER BY issued_at, version`)
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for rows.Next() {
		var v int64
		rows.Scan(&v)
		versions = append(versions, v)
	}
	if diff := cmp.Diff([]int64{1, 2, 3, 4, 5, 6}, versions); diff != "" {
		t.Errorf("versions (-want +got):\n%s", diff)
	}
	if got := w.count(`SELECT manifest_version_issued FROM fleet_status WHERE workspace = 'ws-acme'`); got != 6 {
		t.Errorf("manifest_version_issued = %d, want 6", got)
	}
	if got := testutilCount(t, w.svc.m.issued); got != 6 {
		t.Errorf("genesis_manifests_issued_total = %v, want 6", got)
	}
}

// TestNoPlaintext: the credentials' plaintext is nowhere in Postgres, in
// any envelope's payload or in the logs.
func TestNoPlaintext(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	w.setTenant("ws-acme", "blob2", tenantSpec{greeting: "x"})
	if err := w.svc.RenderWorkspace(t.Context(), "ws-acme"); err != nil {
		t.Fatal(err)
	}
	// A credential that is not a JSON object fails without echoing it.
	w.mu.Lock()
	tn := *w.snap.Tenants["ws-acme"].Tenant
	tn.Spec.Credentials = append([]schema.Credential{}, tn.Spec.Credentials...)
	tn.Spec.Credentials[0].Sealed = testkit.Seal(t, w.fleetID.Recipient(), "not json "+secretValue)
	st := w.snap.Tenants["ws-acme"]
	st.Tenant, st.ValidBlob = &tn, "blob3"
	w.snap.Tenants = map[string]tenants.TenantState{"ws-acme": st}
	w.mu.Unlock()
	err := w.svc.RenderWorkspace(t.Context(), "ws-acme")
	if err == nil || strings.Contains(err.Error(), secretValue) {
		t.Errorf("render of a non-JSON credential: %v", err)
	}
	w.manifest(a)

	var tables []string
	rows, err := w.st.Pool().Query(t.Context(), `SELECT tablename FROM pg_tables WHERE schemaname = 'public'`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var s string
		rows.Scan(&s)
		tables = append(tables, s)
	}
	for _, table := range tables {
		var n int
		if err := w.st.Pool().QueryRow(t.Context(), `SELECT count(*) FROM `+table+` t WHERE strpos(t::text, $1) > 0`, secretValue).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("plaintext credential in %d rows of %s", n, table)
		}
	}
	envs, err := w.st.Pool().Query(t.Context(), `SELECT envelope FROM manifests`)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for envs.Next() {
		var env []byte
		envs.Scan(&env)
		seen++
		if strings.Contains(string(env), secretValue) || strings.Contains(string(payloadOf(t, env)), secretValue) {
			t.Error("plaintext credential in a stored envelope")
		}
	}
	if seen != 2 {
		t.Errorf("%d manifests stored, want 2", seen)
	}
	if strings.Contains(w.logs.String(), secretValue) || strings.Contains(w.logs.String(), a.cred) {
		t.Error("a secret is in the logs")
	}
	if !strings.Contains(w.logs.String(), "manifest issued") {
		t.Error("logs were not captured")
	}
}

// TestManifestStableName: with spec.dns, the manifest names the tenant's
// stable name in stable_name and among its domains (before the sslip.io
// fallback); the agent's caddy component waits for its certificate.
func TestManifestStableName(t *testing.T) {
	w := newWorld(t)
	w.snap.Fleet.Spec.DNS = &schema.DNS{Zone: "t.genesis.test"}
	w.setTenant("ws-acme", "blob1", tenantSpec{domains: []string{"track.acme.com"}})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	code, _, env := w.do("GET", "/v1/manifest", a.cred, nil, nil)
	if code != http.StatusOK {
		t.Fatalf("GET: %d %s", code, env)
	}
	m := w.verify(env)
	if m.StableName != "ws-acme.t.genesis.test" {
		t.Errorf("stable_name = %q", m.StableName)
	}
	if diff := cmp.Diff([]string{"track.acme.com", "ws-acme.t.genesis.test", "203.0.113.7.sslip.io"}, m.Domains); diff != "" {
		t.Errorf("domains (-want +got):\n%s", diff)
	}
}
