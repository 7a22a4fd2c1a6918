package console

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/net/html"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// The rig's tokens: an admin and a dashboard-only caller.
const (
	adminToken = "gen_admin-token-for-console-tests"
	dashToken  = "gen_dashboard-token-for-console-tests"
	metrToken  = "gen_metrics-token-for-console-tests"
)

// rig is a console on a real Postgres, in front of the real API handler
// (fleetapi with a real reconciler loop that never runs passes), served by
// httptest on 127.0.0.1. Its snapshot's tiers and domains are recorded as
// the leader's pass records them (SetTenantFacts).
type rig struct {
	st    *store.Store
	rec   *reconciler.Reconciler
	con   *Console
	srv   *httptest.Server
	reg   *prometheus.Registry
	apiH  http.Handler
	authn *auth.Authenticator
}

// rigOptions change a rig.
type rigOptions struct {
	insecure bool
	// stateAPI makes the API's tenant endpoints (GET, PATCH
	// /v1/tenants/{id}) on the rig's store: without it they answer 404.
	stateAPI func(*store.Store) *stateapi.API
	// config changes the console's configuration before New.
	config func(*Config)
}

func newRig(t *testing.T, insecure bool) *rig {
	t.Helper()
	return newRigWith(t, rigOptions{insecure: insecure})
}

func newRigWith(t *testing.T, o rigOptions) *rig {
	t.Helper()
	insecure := o.insecure
	ctx := t.Context()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, pgtest.New(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	fleet := testkit.Fleet()
	snap := tenants.Snapshot{Commit: "0123456789abcdef0123456789abcdef01234567", Fleet: fleet, Tenants: map[string]tenants.TenantState{}}
	add := func(id string, tier schema.Tier, state schema.State, domains ...string) {
		snap.Tenants[id] = tenants.TenantState{ID: id, Status: tenants.StatusValid, Tenant: &schema.Tenant{
			Metadata: schema.TenantMeta{ID: id, Tier: tier},
			Spec:     schema.TenantSpec{State: state, Droplet: schema.DropletSpec{Region: "nyc3"}, Domains: domains}}}
	}
	add("ws-acme", schema.TierPro, schema.StateRunning, "track.acme.example")
	add("ws-beta", schema.TierStarter, schema.StateRunning) // hibernated by its idle policy
	add("ws-gamma", schema.TierEnterprise, schema.StateRunning, "links.gamma.example")
	for i := range 120 {
		add(fmt.Sprintf("ws-bulk-%03d", i), schema.TierStarter, schema.StateRunning)
	}
	if err := st.SyncAccounts(ctx, fleet); err != nil {
		t.Fatal(err)
	}
	acct := fleet.Spec.Accounts[0].Name
	for _, q := range []string{
		`INSERT INTO fleet_status (workspace, droplet_id, droplet_name, account, region, size, state, desired_state, health, n8n_version, manifest_version_issued, manifest_version_applied)
		VALUES ('ws-acme', 1001, 'genesis-ws-acme-1', '` + acct + `', 'nyc3', 's-1vcpu-1gb', 'ACTIVE_HEALTHY', 'running', 'healthy', '1.2.3', 3, 3),
		       ('ws-gamma', 1003, 'genesis-ws-gamma-1', '` + acct + `', 'nyc3', 's-1vcpu-1gb', 'ACTIVE_DEGRADED', 'running', 'degraded', '1.2.4', 2, 1)`,
		`INSERT INTO fleet_status (workspace, account, region, state, desired_state, snapshot_id, snapshot_size_gb)
		VALUES ('ws-beta', '` + acct + `', 'nyc3', 'HIBERNATED', 'running', '777', 5)`,
		`INSERT INTO fleet_status (workspace, region, state, desired_state, health)
		SELECT 'ws-bulk-' || lpad(i::text, 3, '0'), 'sfo3', 'PENDING', 'running', 'unknown' FROM generate_series(0, 119) i`,
		`INSERT INTO audit_log (actor, action, workspace, detail) VALUES ('alice', 'tenant.updated', 'ws-acme', '{"via":"api"}')`,
		`INSERT INTO operations (workspace, kind, state, started_at, finished_at) VALUES ('ws-acme', 'create', 'succeeded', now(), now())`,
	} {
		if _, err := st.Pool().Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	rec := reconciler.New(reconciler.Config{Store: st, Logger: log})
	rec.Deliver(ctx, snap, nil)
	facts := map[string]store.TenantFacts{}
	for id, ts := range snap.Tenants {
		facts[id] = store.FactsOf(ts.Tenant)
	}
	if err := st.SetTenantFacts(ctx, facts, true); err != nil {
		t.Fatal(err)
	}
	var authn *auth.Authenticator
	if !insecure {
		authn = auth.New(auth.Config{Logger: log, Tokens: []auth.Token{
			{Name: "admin", SHA256: auth.Hash(adminToken), Scopes: []auth.Scope{auth.Admin}},
			{Name: "dash", SHA256: auth.Hash(dashToken), Scopes: []auth.Scope{auth.Dashboard}},
			{Name: "prom", SHA256: auth.Hash(metrToken), Scopes: []auth.Scope{auth.Metrics}},
		}})
	}
	reg := prometheus.NewRegistry()
	var sapi *stateapi.API
	if o.stateAPI != nil {
		sapi = o.stateAPI(st)
	}
	apiH := fleetapi.Handler(fleetapi.HandlerConfig{Reconciler: rec, Store: st, Gatherer: reg, Auth: authn, API: sapi})
	cfg := Config{Store: st, API: apiH, Auth: authn, Key: DeriveKey([]byte("test key material")), Desired: rec.Snapshot,
		Gatherer: reg, Logger: log, Registerer: reg, Heartbeat: 200 * time.Millisecond}
	if o.config != nil {
		o.config(&cfg)
	}
	con, srv := serveConsole(t, cfg, apiH)
	return &rig{st: st, rec: rec, con: con, srv: srv, reg: reg, apiH: apiH, authn: authn}
}

// serveConsole runs a console made of cfg, and serves it with the API
// apiH beside it, until the test ends.
func serveConsole(t *testing.T, cfg Config, apiH http.Handler) (*Console, *httptest.Server) {
	t.Helper()
	con, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- con.Run(hctx) }()
	mux := http.NewServeMux()
	mux.Handle("/console/", con.Handler())
	mux.Handle("/", apiH)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		<-done
	})
	return con, srv
}

// quietLog discards what it is given.
func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func (r *rig) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: r.srv.URL, hc: &http.Client{Jar: jar, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// get fetches a path; it returns the status, the body and the answer.
func (b *browser) get(path string) (int, string, *http.Response) {
	b.t.Helper()
	resp, err := b.hc.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp
}

// post sends a form with this server as Origin (origin "" sends none;
// "-" the server's own).
func (b *browser) post(path, origin string, form url.Values) (int, string, *http.Response) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin == "-" {
		origin = b.base
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the first CSRF token in a page.
func csrf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no csrf token in page:\n%s", page)
	}
	return m[1]
}

// login logs b in with token; it fails the test unless that worked.
func (b *browser) login(token string) {
	b.t.Helper()
	_, page, _ := b.get("/console/login")
	code, body, resp := b.post("/console/login", "-", url.Values{"csrf": {csrf(b.t, page)}, "token": {token}})
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/console/" {
		b.t.Fatalf("login = %d %s:\n%s", code, resp.Header.Get("Location"), body)
	}
}

// doc parses a page.
func doc(t *testing.T, page string) *html.Node {
	t.Helper()
	n, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

// find lists the elements for which match holds.
func find(n *html.Node, match func(*html.Node) bool) []*html.Node {
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && match(n) {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return out
}

func byID(root *html.Node, id string) *html.Node {
	ns := find(root, func(n *html.Node) bool { v, _ := attr(n, "id"); return v == id })
	if len(ns) == 0 {
		return nil
	}
	return ns[0]
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.TrimSpace(b.String())
}

// tenantRows are the overview's data-tenant ids, in order.
func tenantRows(root *html.Node) []string {
	var out []string
	for _, n := range find(root, func(n *html.Node) bool { _, ok := attr(n, "data-tenant"); return ok && n.Data == "tr" }) {
		v, _ := attr(n, "data-tenant")
		out = append(out, v)
	}
	return out
}

// TestLoginLogout: the login page, a refused token (401, shown in
// #login-error), a token without the dashboard scope (403), a good login
// and its cookie's attributes, the pages behind it, and logout.
func TestLoginLogout(t *testing.T) {
	r := newRig(t, false)
	b := r.browser(t)
	code, _, resp := b.get("/console/")
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Fatalf("unauthenticated overview = %d %s, want 303 to the login page", code, resp.Header.Get("Location"))
	}
	code, page, resp := b.get("/console/login")
	if code != 200 {
		t.Fatalf("login page = %d", code)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || strings.Contains(csp, "unsafe") {
		t.Errorf("CSP = %q", csp)
	}
	root := doc(t, page)
	for _, id := range []string{"login", "token", "login-submit", "nav", "nav-overview", "theme-toggle", "flash"} {
		if byID(root, id) == nil {
			t.Errorf("login page lacks #%s", id)
		}
	}
	if tp, _ := attr(byID(root, "token"), "type"); tp != "password" {
		t.Errorf("#token type = %q", tp)
	}
	for _, tc := range []struct {
		name, token string
		code        int
		want        string
	}{
		{"unknown token", "gen_nope", 401, "unknown token"},
		{"no dashboard scope", metrToken, 403, "lacks the dashboard scope"},
		{"empty", "", 401, "enter an API token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, page, _ := b.get("/console/login")
			code, body, _ := b.post("/console/login", "-", url.Values{"csrf": {csrf(t, page)}, "token": {tc.token}})
			if code != tc.code {
				t.Errorf("status = %d, want %d", code, tc.code)
			}
			e := byID(doc(t, body), "login-error")
			if e == nil || !strings.Contains(text(e), tc.want) {
				t.Errorf("#login-error missing or without %q:\n%s", tc.want, body)
			} else if role, _ := attr(e, "role"); role != "alert" {
				t.Errorf("#login-error role = %q", role)
			}
		})
	}
	_, page, _ = b.get("/console/login")
	code, _, resp = b.post("/console/login", "-", url.Values{"csrf": {csrf(t, page)}, "token": {adminToken}})
	if code != http.StatusSeeOther {
		t.Fatalf("login = %d", code)
	}
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == sessionCookie {
			sess = c
		}
	}
	if sess == nil {
		t.Fatal("no session cookie")
	}
	if !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Path != "/console" || sess.MaxAge != int(DefaultSessionTTL.Seconds()) {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/console, Max-Age 12h", sess)
	}
	if sess.Secure {
		t.Errorf("session cookie is Secure on plain http to 127.0.0.1 (the browser would drop it)")
	}
	if strings.Contains(sess.Value, adminToken) {
		t.Errorf("session cookie holds the token in the clear")
	}
	code, page, _ = b.get("/console/")
	if code != 200 {
		t.Fatalf("overview after login = %d", code)
	}
	root = doc(t, page)
	body := find(root, func(n *html.Node) bool { return n.Data == "body" })[0]
	if s, _ := attr(body, "data-scopes"); s != "admin dashboard" {
		t.Errorf("data-scopes = %q", s)
	}
	for _, id := range []string{"nav", "nav-overview", "nav-rollouts", "nav-accounts", "logout", "theme-toggle", "flash"} {
		if byID(root, id) == nil {
			t.Errorf("overview lacks #%s", id)
		}
	}
	code, _, resp = b.post("/console/logout", "-", url.Values{"csrf": {csrf(t, page)}})
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/console/login" {
		t.Fatalf("logout = %d %s", code, resp.Header.Get("Location"))
	}
	if code, _, _ := b.get("/console/"); code != http.StatusSeeOther {
		t.Errorf("overview after logout = %d, want 303", code)
	}
}

// TestSecureCookieRule: Secure unless plain http to loopback.
func TestSecureCookieRule(t *testing.T) {
	for _, tc := range []struct {
		host string
		tls  bool
		want bool
	}{
		{"127.0.0.1:8080", false, false}, {"localhost:8080", false, false}, {"[::1]:80", false, false},
		{"fleet.example.com", false, true}, {"127.0.0.1:8443", true, true}, {"10.0.0.5:8080", false, true},
	} {
		r := httptest.NewRequest("GET", "/console/", nil)
		r.Host = tc.host
		r.TLS = nil
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := secureCookie(r); got != tc.want {
			t.Errorf("secureCookie(%s, tls=%v) = %v, want %v", tc.host, tc.tls, got, tc.want)
		}
	}
}

// TestCSRF: a POST without the token, with a wrong one, or from another
// origin is refused, and nothing happens.
func TestCSRF(t *testing.T) {
	r := newRig(t, false)
	b := r.browser(t)
	b.login(adminToken)
	_, page, _ := b.get("/console/tenants/ws-beta")
	good := csrf(t, page)
	for _, tc := range []struct {
		name, origin, token string
	}{
		{"no token", "-", ""},
		{"wrong token", "-", "AAAA" + good[4:]},
		{"cross origin", "https://evil.example", good},
		{"cross origin referer", "null", good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := b.post("/console/tenants/ws-beta/act", tc.origin, url.Values{"csrf": {tc.token}, "action": {"wake"}})
			if code != http.StatusForbidden {
				t.Errorf("status = %d, want 403:\n%s", code, body)
			}
		})
	}
	var n int
	if err := r.st.Pool().QueryRow(t.Context(), `SELECT count(*) FROM audit_log WHERE action = 'wake.requested'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("wakes audited = %d (%v), want 0", n, err)
	}
	// The login form's token too.
	b2 := r.browser(t)
	code, _, _ := b2.post("/console/login", "-", url.Values{"token": {adminToken}})
	if code != http.StatusForbidden {
		t.Errorf("login without its csrf token = %d, want 403", code)
	}
	// Another session's token does not fit this one.
	b2.login(adminToken)
	code, _, _ = b2.post("/console/tenants/ws-beta/act", "-", url.Values{"csrf": {good}, "action": {"wake"}})
	if code != http.StatusForbidden {
		t.Errorf("another session's csrf token = %d, want 403", code)
	}
}

// TestOverview: counts, filters, search by id and by domain, paging.
func TestOverview(t *testing.T) {
	r := newRig(t, false)
	b := r.browser(t)
	b.login(dashToken)
	code, page, _ := b.get("/console/")
	if code != 200 {
		t.Fatalf("overview = %d", code)
	}
	root := doc(t, page)
	for _, id := range []string{"filters", "f-state", "f-tier", "f-region", "f-account", "f-version", "f-wave", "q", "f-apply", "counts", "tenants", "total", "page-next"} {
		if byID(root, id) == nil {
			t.Errorf("overview lacks #%s", id)
		}
	}
	for _, n := range find(root, func(n *html.Node) bool { return n.Data == "input" || n.Data == "select" }) {
		id, _ := attr(n, "id")
		if tp, _ := attr(n, "type"); tp == "hidden" {
			continue
		}
		if len(find(root, func(l *html.Node) bool { f, _ := attr(l, "for"); return l.Data == "label" && f == id })) == 0 {
			t.Errorf("input #%s has no label", id)
		}
	}
	if byID(root, "page-prev") != nil {
		t.Errorf("first page has #page-prev")
	}
	if got := text(byID(root, "total")); got != "123 tenants" {
		t.Errorf("#total = %q", got)
	}
	if got := tenantRows(root); len(got) != PageSize || got[0] != "ws-acme" {
		t.Errorf("first page: %d rows from %v", len(got), got[:min(3, len(got))])
	}
	live := find(root, func(n *html.Node) bool { v, _ := attr(n, "data-live"); return v == "lifecycle:ws-acme" })
	if len(live) != 1 || text(live[0]) != "ACTIVE_HEALTHY" {
		t.Errorf("ws-acme's live lifecycle cell: %d", len(live))
	}
	counts := text(byID(root, "counts"))
	for _, want := range []string{"PENDING", "ACTIVE_HEALTHY", "HIBERNATED"} {
		if !strings.Contains(counts, want) {
			t.Errorf("#counts lacks %s", want)
		}
	}
	// Paging: next until the end, then back.
	var seen []string
	path := "/console/?region=sfo3"
	for pages := 0; path != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		_, page, _ := b.get(path)
		root := doc(t, page)
		seen = append(seen, tenantRows(root)...)
		path = ""
		if n := byID(root, "page-next"); n != nil {
			path, _ = attr(n, "href")
		}
		if n := byID(root, "page-prev"); n != nil && pages == 2 {
			prev, _ := attr(n, "href")
			_, p, _ := b.get(prev)
			if got := tenantRows(doc(t, p)); len(got) != PageSize || got[0] != "ws-bulk-050" {
				t.Errorf("previous page from the third: %d rows from %v", len(got), got[:min(1, len(got))])
			}
		}
	}
	if len(seen) != 120 || seen[0] != "ws-bulk-000" || seen[119] != "ws-bulk-119" {
		t.Errorf("paging sfo3 saw %d tenants", len(seen))
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"state=HIBERNATED", []string{"ws-beta"}},
		{"tier=enterprise", []string{"ws-gamma"}},
		{"tier=pro&state=ACTIVE_HEALTHY", []string{"ws-acme"}},
		{"tier=pro&state=HIBERNATED", nil},
		{"version=1.2.4", []string{"ws-gamma"}},
		{"health=degraded", []string{"ws-gamma"}},
		{"region=nyc3", []string{"ws-acme", "ws-beta", "ws-gamma"}},
		{"account=" + testkit.Fleet().Spec.Accounts[0].Name + "&region=nyc3", []string{"ws-acme", "ws-beta", "ws-gamma"}},
		{"q=gam", []string{"ws-gamma"}},
		{"q=track.acme", []string{"ws-acme"}},
		{"q=ACME.example", []string{"ws-acme"}},
		{"q=bulk-11", []string{"ws-bulk-110", "ws-bulk-111", "ws-bulk-112", "ws-bulk-113", "ws-bulk-114", "ws-bulk-115", "ws-bulk-116", "ws-bulk-117", "ws-bulk-118", "ws-bulk-119"}},
		{"q=100%25", nil},
		{"wave=0", nil},
	} {
		t.Run(tc.query, func(t *testing.T) {
			code, page, _ := b.get("/console/?" + tc.query)
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			root := doc(t, page)
			got := tenantRows(root)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("rows %v, want %v", got, tc.want)
			}
			if total := text(byID(root, "total")); total != fmt.Sprintf("%d tenants", len(tc.want)) {
				t.Errorf("#total = %q", total)
			}
		})
	}
	code, page, _ = b.get("/console/?state=EXPLODED")
	if code != 400 || !strings.Contains(page, "state: &#34;EXPLODED&#34; is not one of") {
		t.Errorf("bad filter = %d, want 400 naming the field", code)
	}
}

// TestTenantPage: every section of the contract, with seeded data.
func TestTenantPage(t *testing.T) {
	r := newRig(t, false)
	ctx := t.Context()
	if _, err := r.st.Pool().Exec(ctx, `UPDATE fleet_status SET last_heartbeat_at = now(), dns_target = '203.0.113.7',
		heartbeat = '{"components":{"n8n":{"ok":true,"detail":"repaired: restarted n8n after 3 failed probes"},"caddy":{"ok":false,"detail":"admin API refused"}},"memory_used_bytes":1048576,"memory_total_bytes":2097152,"repairs":[{"component":"n8n","at":"2026-12-07T06:00:00Z","detail":"repaired: restarted n8n after 3 failed probes"}]}'
		WHERE workspace = 'ws-acme'`); err != nil {
		t.Fatal(err)
	}
	b := r.browser(t)
	b.login(adminToken)
	code, page, _ := b.get("/console/tenants/ws-acme")
	if code != 200 {
		t.Fatalf("tenant page = %d:\n%s", code, page)
	}
	root := doc(t, page)
	if got := text(byID(root, "tenant-id")); got != "ws-acme" {
		t.Errorf("#tenant-id = %q", got)
	}
	if lc := byID(root, "lifecycle"); lc == nil || text(lc) != "ACTIVE_HEALTHY" {
		t.Errorf("#lifecycle wrong")
	} else if v, _ := attr(lc, "data-live"); v != "lifecycle:ws-acme" {
		t.Errorf("#lifecycle data-live = %q", v)
	}
	want := map[string][]string{
		"health":       {"repaired: restarted n8n", "admin API refused", "caddy", "Recent repairs", "n8n: repaired: restarted n8n after 3 failed probes"},
		"history":      {"tenant.updated", "alice", "create succeeded"},
		"manifest":     {"Issued version 3", "applied 3"},
		"backups":      {"No backups"},
		"availability": {"Not probed"},
		"cost":         {"a month"},
		"domains":      {"track.acme.example", "203.0.113.7"},
	}
	for id, ws := range want {
		n := byID(root, id)
		if n == nil {
			t.Errorf("no #%s", id)
			continue
		}
		for _, w := range ws {
			if !strings.Contains(text(n), w) {
				t.Errorf("#%s lacks %q: %s", id, w, text(n))
			}
		}
	}
	var actions []string
	for _, f := range find(root, func(n *html.Node) bool { c, _ := attr(n, "class"); return n.Data == "form" && c == "action" }) {
		a, _ := attr(f, "data-action")
		m, _ := attr(f, "method")
		if m != "post" {
			t.Errorf("action %s method %q", a, m)
		}
		actions = append(actions, a)
	}
	if got := strings.Join(actions, " "); got != "wake hibernate reboot rebuild retry backup" {
		t.Errorf("actions = %q", got)
	}
	if code, _, _ := b.get("/console/tenants/ws-nobody"); code != 404 {
		t.Errorf("unknown tenant = %d", code)
	}
	if code, _, _ := b.get("/console/tenants/NOT_AN_ID"); code != 400 {
		t.Errorf("bad id = %d", code)
	}
}

// TestActionsThroughAPI: a wake confirmed by an admin goes through the API
// (audited with the token's name); a dashboard token's reboot is refused
// by the API, and its problem shows in the flash.
func TestActionsThroughAPI(t *testing.T) {
	r := newRig(t, false)
	ctx := t.Context()
	b := r.browser(t)
	b.login(adminToken)
	_, page, _ := b.get("/console/tenants/ws-beta")
	code, confirm, _ := b.post("/console/tenants/ws-beta/confirm", "-", url.Values{"csrf": {csrf(t, page)}, "action": {"wake"}})
	if code != 200 {
		t.Fatalf("confirm = %d", code)
	}
	croot := doc(t, confirm)
	if byID(croot, "confirm-yes") == nil || byID(croot, "confirm-no") == nil {
		t.Fatalf("confirmation page lacks #confirm-yes or #confirm-no:\n%s", confirm)
	}
	code, _, resp := b.post("/console/tenants/ws-beta/act", "-", url.Values{"csrf": {csrf(t, confirm)}, "action": {"wake"}, "reason": {"test"}})
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/console/tenants/ws-beta" {
		t.Fatalf("act = %d %s", code, resp.Header.Get("Location"))
	}
	_, page, _ = b.get("/console/tenants/ws-beta")
	fl := byID(doc(t, page), "flash")
	if c, _ := attr(fl, "class"); c != "ok" || !strings.Contains(text(fl), "wake requested") {
		t.Errorf("#flash after wake: class %q text %q", c, text(fl))
	}
	var actor string
	if err := r.st.Pool().QueryRow(ctx, `SELECT actor FROM audit_log WHERE action = 'wake.requested' AND workspace = 'ws-beta'`).Scan(&actor); err != nil || actor != "admin" {
		t.Errorf("wake audit: actor %q, %v", actor, err)
	}
	// The flash shows once.
	_, page, _ = b.get("/console/tenants/ws-beta")
	if got := text(byID(doc(t, page), "flash")); got != "" {
		t.Errorf("flash shown twice: %q", got)
	}

	d := r.browser(t)
	d.login(dashToken)
	_, page, _ = d.get("/console/tenants/ws-acme")
	code, _, _ = d.post("/console/tenants/ws-acme/act", "-", url.Values{"csrf": {csrf(t, page)}, "action": {"reboot"}})
	if code != http.StatusSeeOther {
		t.Fatalf("refused act = %d", code)
	}
	_, page, _ = d.get("/console/tenants/ws-acme")
	fl = byID(doc(t, page), "flash")
	if c, _ := attr(fl, "class"); c != "error" || !strings.Contains(text(fl), "403") || !strings.Contains(text(fl), "admin scope") {
		t.Errorf("#flash after a refused reboot: class %q text %q", c, text(fl))
	}
}

// TestRolloutsAndAccounts: both pages render their tables.
func TestRolloutsAndAccounts(t *testing.T) {
	r := newRig(t, false)
	b := r.browser(t)
	b.login(dashToken)
	code, page, _ := b.get("/console/rollouts")
	if code != 200 || byID(doc(t, page), "rollouts") == nil {
		t.Errorf("rollouts = %d:\n%s", code, page)
	}
	code, page, _ = b.get("/console/accounts")
	if code != 200 {
		t.Fatalf("accounts = %d", code)
	}
	acc := byID(doc(t, page), "accounts")
	name := testkit.Fleet().Spec.Accounts[0].Name
	if acc == nil || !strings.Contains(text(acc), name) {
		t.Errorf("#accounts lacks %s:\n%s", name, page)
	}
}

// TestInsecureMode: with --insecure-no-auth anyone logs in as admin and
// every page says so.
func TestInsecureMode(t *testing.T) {
	r := newRig(t, true)
	b := r.browser(t)
	b.login("")
	_, page, _ := b.get("/console/")
	if !strings.Contains(page, "INSECURE") || !strings.Contains(page, `data-scopes="admin dashboard"`) {
		t.Errorf("insecure overview lacks the banner or the admin scopes")
	}
}

// TestEvents: a lifecycle change written to fleet_status reaches an open
// event stream through Postgres.
func TestEvents(t *testing.T) {
	r := newRig(t, false)
	b := r.browser(t)
	b.login(adminToken)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, r.srv.URL+"/console/events", nil)
	hc := *b.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	// Wait for the hub's LISTEN, then change a state.
	deadline := time.Now().Add(10 * time.Second)
	for r.con.hub.listening == nil || !listening(r.con.hub) {
		if time.Now().After(deadline) {
			t.Fatal("hub never listened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := r.st.Pool().Exec(t.Context(), `UPDATE fleet_status SET state = 'WAKING' WHERE workspace = 'ws-beta'`); err != nil {
		t.Fatal(err)
	}
	heartbeat := false
	timeout := time.After(10 * time.Second)
	event := ""
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("stream ended")
			}
			if l == ": heartbeat" {
				heartbeat = true
			}
			if name, ok := strings.CutPrefix(l, "event: "); ok {
				event = name
			}
			if data, ok := strings.CutPrefix(l, "data: "); ok && event == "lifecycle" {
				var ev lifecycleEvent
				if err := json.Unmarshal([]byte(data), &ev); err != nil {
					t.Fatal(err)
				}
				if ev != (lifecycleEvent{Tenant: "ws-beta", Lifecycle: "WAKING"}) {
					t.Fatalf("event %+v", ev)
				}
				// And heartbeats keep an idle stream open.
				for !heartbeat {
					select {
					case l := <-lines:
						heartbeat = l == ": heartbeat"
					case <-timeout:
						t.Fatal("no heartbeat")
					}
				}
				return
			}
		case <-timeout:
			t.Fatal("no lifecycle event")
		}
	}
}

// listening reads the hub's gauge.
func listening(h *Hub) bool {
	ch := make(chan prometheus.Metric, 1)
	h.listening.Collect(ch)
	return gaugeValue(<-ch) == 1
}

func gaugeValue(m prometheus.Metric) float64 {
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		return 0
	}
	return pb.GetGauge().GetValue()
}
