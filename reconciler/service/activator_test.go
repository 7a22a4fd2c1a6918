package service

import (
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// TestActivatorWiring: a replica with --activator-listen serves the
// activator on its own listener, resolving the snapshot's stable names and
// tracking domains and reading statuses from Postgres: Caddy's /ask allows
// a hibernated tenant's names only, an unknown host gets 404, a tenant git
// declares hibernated 503 at once, and a request for a hibernated running
// tenant asks for its wake (wake_requested, audited as the activator) and
// gets 503 with Retry-After once the hold time passes (no loop runs here to
// wake it).
func TestActivatorWiring(t *testing.T) {
	const zone = "t.genesis.test"
	dir := t.TempDir()
	repo := testkit.NewStateRepo(t)
	fleet := testkit.Fleet()
	fleet.Spec.DNS = &schema.DNS{Zone: zone}
	repo.WriteFleet(fleet)
	acme := testkit.Tenant("ws-acme", "nyc3")
	acme.Spec.Domains = []string{"track.acme.example"}
	repo.WriteTenant(acme)
	off := testkit.Tenant("ws-off", "nyc3")
	off.Spec.State = schema.StateHibernated
	repo.WriteTenant(off)
	up := testkit.Tenant("ws-up", "nyc3")
	repo.WriteTenant(up)
	repo.Commit("tenants")
	repo.Push()

	dbURL := pgtest.New(t)
	logs := &syncio.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := Defaults()
	c.AgentSideOnly = true
	c.StateRepo, c.Branch, c.CacheDir = repo.URL(), tenants.DefaultBranch, filepath.Join(dir, "cache")
	c.DatabaseURL, c.DOAPIURL, c.Listen = dbURL, "http://127.0.0.1:1/", "127.0.0.1:0"
	c.InsecureNoAuth, c.ReplicaID, c.ObservedMaxAge = true, "activator-test", time.Minute
	c.UnauthRate, c.UnauthBurst = auth.DefaultFailureRate, auth.DefaultFailureBurst
	c.Getenv = func(string) string { return "" }
	c.Activator.Listen, c.Activator.Hold = "127.0.0.1:0", 300*time.Millisecond
	svc, err := New(t.Context(), c, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, svc, logs)
	if _, err := svc.st.Pool().Exec(t.Context(), `INSERT INTO fleet_status (workspace, state, desired_state, droplet_id, ip, snapshot_id) VALUES
		('ws-acme', 'HIBERNATED', 'running', NULL, NULL, '1001'),
		('ws-off', 'HIBERNATED', 'hibernated', NULL, NULL, '1002'),
		('ws-up', 'ACTIVE_HEALTHY', 'running', 55, '203.0.113.9', NULL)`); err != nil {
		t.Fatal(err)
	}
	addr := svc.ActivatorAddr()
	if addr == "" || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("activator address %q", addr)
	}
	ask := func(domain string) int {
		resp, err := http.Get("http://" + addr + "/ask?domain=" + domain)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testkit.WaitFor(t, "ask allows acme's stable name", func() bool { return ask("ws-acme."+zone) == http.StatusOK })
	for domain, want := range map[string]int{
		"track.acme.example": http.StatusOK, "ws-off." + zone: http.StatusOK,
		"ws-up." + zone: http.StatusForbidden, "nobody.example": http.StatusForbidden,
	} {
		if got := ask(domain); got != want {
			t.Errorf("ask %s: %d, want %d", domain, got, want)
		}
	}
	send := func(host string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/webhook/x", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, _ := send("nobody.example"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown host: %d", resp.StatusCode)
	}
	if resp, body := send("ws-off." + zone); resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "ws-off is hibernated") {
		t.Errorf("tenant git declares hibernated: %d %q", resp.StatusCode, body)
	}
	resp, body := send("track.acme.example")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "ws-acme is waking up") {
		t.Errorf("hibernated tenant past the hold: %d %q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	rows, err := svc.st.Fleet(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.Workspace == "ws-acme" && !r.WakeRequested {
			t.Error("acme: no wake requested")
		}
		if r.Workspace == "ws-off" && r.WakeRequested {
			t.Error("off: a wake was requested for a tenant git declares hibernated")
		}
	}
	var actor string
	if err := svc.st.Pool().QueryRow(t.Context(), `SELECT actor FROM audit_log WHERE action = 'wake.requested' AND workspace = 'ws-acme'`).Scan(&actor); err != nil || actor != "activator" {
		t.Errorf("wake audit: actor %q, %v", actor, err)
	}
}
