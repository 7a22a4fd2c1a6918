package reconciler

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/watchdog"
	"genesis.dev/fleet/schema"
)

// watchHarness is the reconciler harness on the simulator's clock, with
// heartbeats written as the heartbeat writer (package agentapi, tested
// there against real agents' requests) writes them.
func watchHarness(t *testing.T) *harness {
	t.Helper()
	h := newHarness(t, dosim.Limits{})
	h.rec.cfg.Now = h.sim.Sim.Now
	return h
}

// beat stores a heartbeat of ws's current droplet at the simulator's time:
// ok moves it to ACTIVE_HEALTHY (its agent runs its manifest), a problem
// degrades a healthy, critical or rebooting one.
func (h *harness) beat(ws string, ok bool) {
	h.t.Helper()
	next := `CASE
			WHEN $3 AND state IN ('INITIALIZING', 'CONFIGURING', 'ACTIVE_HEALTHY', 'ACTIVE_DEGRADED', 'ACTIVE_CRITICAL', 'REBOOTING') THEN 'ACTIVE_HEALTHY'
			WHEN NOT $3 AND state IN ('ACTIVE_HEALTHY', 'ACTIVE_CRITICAL', 'REBOOTING') THEN 'ACTIVE_DEGRADED'
			ELSE state END`
	// state_since in the simulated time, as the real writer's now().
	_, err := h.store.Pool().Exec(h.t.Context(), `UPDATE fleet_status SET last_heartbeat_at = $2,
		health = CASE WHEN $3 THEN 'healthy' ELSE 'degraded' END,
		state_since = CASE WHEN `+next+` <> state THEN $2 ELSE state_since END,
		state = `+next+`
		WHERE workspace = $1`, ws, h.sim.Sim.Now(), ok)
	if err != nil {
		h.t.Fatal(err)
	}
}

// watch runs the watchdog once and waits for the jobs it started.
func (h *harness) watch() watchdog.Decision {
	h.t.Helper()
	d, err := h.rec.Watch(h.t.Context())
	if err != nil {
		h.t.Fatal(err)
	}
	h.rec.Wait()
	return d
}

// ops lists ws's journal: kind/state, oldest first.
func (h *harness) ops(ws string) []string {
	h.t.Helper()
	rows, err := h.store.Pool().Query(h.t.Context(), `SELECT kind || '/' || state FROM operations WHERE workspace = $1 ORDER BY id`, ws)
	if err != nil {
		h.t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			h.t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// dropletActions lists the simulator's actions on droplet name.
func (h *harness) dropletActions(name string) []string {
	h.t.Helper()
	for _, tok := range tokens {
		c := h.sim.Client(tok)
		ds, _, err := c.Droplets.List(h.t.Context(), &godo.ListOptions{PerPage: 200})
		if err != nil {
			h.t.Fatal(err)
		}
		for _, d := range ds {
			if d.Name != name {
				continue
			}
			acts, _, err := c.Droplets.Actions(h.t.Context(), d.ID, &godo.ListOptions{PerPage: 200})
			if err != nil {
				h.t.Fatal(err)
			}
			var out []string
			for i := len(acts) - 1; i >= 0; i-- {
				out = append(out, acts[i].Type+"/"+acts[i].Status)
			}
			return out
		}
	}
	return nil
}

func (h *harness) column(ws, expr string) string {
	h.t.Helper()
	var s string
	if err := h.store.Pool().QueryRow(h.t.Context(), `SELECT coalesce((`+expr+`)::text, '') FROM fleet_status WHERE workspace = $1`, ws).Scan(&s); err != nil {
		h.t.Fatal(err)
	}
	return s
}

func (h *harness) onboard(ids ...string) {
	h.t.Helper()
	for _, id := range ids {
		h.state.WriteTenant(tenant(id, "running", "nyc3"))
	}
	h.state.Commit("onboard")
	h.converge(h.t.Context())
	for _, id := range ids {
		h.beat(id, true)
		if got := h.lifecycle(id); got != watchdog.Healthy {
			h.t.Fatalf("%s after onboarding and a heartbeat: %s", id, got)
		}
	}
}

func TestWatchdogTransitions(t *testing.T) {
	h := watchHarness(t)
	h.onboard("ws-a")
	steps := []struct {
		name    string
		advance time.Duration
		beat    string // "", "ok", "problem"
		want    lifecycle.State
	}{
		{"fresh", time.Minute, "", watchdog.Healthy},
		{"silent 5m", 4 * time.Minute, "", watchdog.Degraded},
		{"silent 10m", 5 * time.Minute, "", watchdog.Degraded},
		{"silent 15m", 5 * time.Minute, "", watchdog.Critical},
		{"heartbeat back", time.Minute, "ok", watchdog.Healthy},
		{"agent reports a problem", time.Minute, "problem", watchdog.Degraded},
		{"agent ok again", time.Minute, "ok", watchdog.Healthy},
		{"agent-reported problem, then silent 15m", 0, "problem", watchdog.Degraded},
		{"…critical", 15 * time.Minute, "", watchdog.Critical},
		{"critical, heartbeat with a problem", time.Minute, "problem", watchdog.Degraded},
	}
	for _, s := range steps {
		h.sim.Sim.Advance(s.advance)
		switch s.beat {
		case "ok":
			h.beat("ws-a", true)
		case "problem":
			h.beat("ws-a", false)
		}
		h.watch()
		if got := h.lifecycle("ws-a"); got != s.want {
			t.Fatalf("%s: %s, want %s", s.name, got, s.want)
		}
	}
	// Transitions are audited; nothing was remediated (each critical spell
	// ended before the watchdog saw it critical twice).
	var n int
	if err := h.store.Pool().QueryRow(t.Context(), `SELECT count(*) FROM audit_log WHERE actor = 'watchdog' AND action = 'watchdog.state'`).Scan(&n); err != nil || n != 3 {
		t.Errorf("watchdog audit entries = %d (%v), want 3 (the rest moved with heartbeats)", n, err)
	}
	if diff := cmp.Diff([]string{"create/succeeded"}, h.ops("ws-a")); diff != "" {
		t.Errorf("journal (-want +got):\n%s", diff)
	}
}

// TestWatchdogLadderFresh: a silent droplet is rebooted, then power-cycled,
// each after the cool-down and never sooner; then rebuilt fresh (no
// snapshot); the dead droplet goes only once the new one reports healthy,
// and the planner never calls it a stray meanwhile. It is destroyed
// outright only when a backup it took is newer than its last heartbeat;
// without one it is retired: stopped and snapshotted first, so its data
// has a copy (issue 18: no destroy without a copy).
func TestWatchdogLadderFresh(t *testing.T) {
	t.Run("no newer copy: snapshot, then destroy", func(t *testing.T) { watchdogLadderFresh(t, false) })
	t.Run("a newer backup: destroyed", func(t *testing.T) { watchdogLadderFresh(t, true) })
}

func watchdogLadderFresh(t *testing.T, backedUp bool) {
	h := watchHarness(t)
	h.onboard("ws-a", "ws-b")
	ctx := t.Context()
	silence := func(d time.Duration) {
		h.sim.Sim.Advance(d)
		h.beat("ws-b", true) // the rest of the fleet keeps talking
	}
	silence(16 * time.Minute)
	h.watch()
	if got := h.lifecycle("ws-a"); got != watchdog.Critical {
		t.Fatalf("after 16m of silence: %s", got)
	}
	// Critical when seen: reboot.
	h.watch()
	if got := h.lifecycle("ws-a"); got != watchdog.Rebooting {
		t.Fatalf("after the first step: %s, want REBOOTING", got)
	}
	if diff := cmp.Diff([]string{"reboot/completed"}, h.dropletActions("genesis-ws-a-1")[1:]); diff != "" {
		t.Errorf("droplet actions (-want +got):\n%s", diff)
	}
	// Within the cool-down nothing more happens, however often it runs.
	for range 3 {
		silence(3 * time.Minute)
		if d := h.watch(); len(d.Remediations) != 0 {
			t.Fatalf("remediation within the cool-down: %+v", d.Remediations)
		}
	}
	silence(time.Minute) // 10m since the reboot
	h.watch()
	if got := h.column("ws-a", "remediation_step"); got != "power_cycle" {
		t.Fatalf("remediation step after the cool-down: %q, want power_cycle", got)
	}
	if diff := cmp.Diff([]string{"reboot/completed", "power_cycle/completed"}, h.dropletActions("genesis-ws-a-1")[1:]); diff != "" {
		t.Errorf("droplet actions (-want +got):\n%s", diff)
	}
	silence(9 * time.Minute)
	if d := h.watch(); len(d.Remediations) != 0 {
		t.Fatalf("remediation within the cool-down: %+v", d.Remediations)
	}
	silence(time.Minute)
	if backedUp {
		// A backup the dead droplet took after its last heartbeat (its
		// agent could still reach storage, say): the rebuild restores it,
		// and it proves the dead droplet's data has a copy.
		h.exec(`INSERT INTO backups (id, workspace, droplet_id, object_key, state, started_at, finished_at, size_bytes, sha256)
			VALUES ('b-20300101T000000Z-00000001', 'ws-a', (SELECT droplet_id FROM fleet_status WHERE workspace = 'ws-a'), 'ws-a/b.age', 'good', $1, $1, 10, repeat('a', 64))`, h.sim.Sim.Now())
	}
	h.watch()
	// Rebuilt fresh beside the dead one.
	if diff := cmp.Diff([]string{"genesis-ws-a-1", "genesis-ws-a-2", "genesis-ws-b-1"}, names(h.droplets())); diff != "" {
		t.Fatalf("droplets after the rebuild (-want +got):\n%s", diff)
	}
	if got, want := h.lifecycle("ws-a"), lifecycle.Initializing; got != want {
		t.Errorf("after the rebuild: %s, want %s", got, want)
	}
	old := h.column("ws-a", "replacing_droplet_id")
	oldAccount, oldSeen := h.column("ws-a", "replacing_account"), h.column("ws-a", "replacing_last_seen_at::text")
	if old == "" || h.column("ws-a", "droplet_name") != "genesis-ws-a-2" {
		t.Fatalf("fleet_status after the rebuild: droplet %s, replacing %q", h.column("ws-a", "droplet_name"), old)
	}
	// The planner leaves both alone: no orphan, nothing to do.
	if p := h.converge(ctx); len(p.Orphans) != 0 {
		t.Errorf("orphans while rebuilding: %+v", p.Orphans)
	}
	if len(h.droplets()) != 3 {
		t.Fatalf("the dead droplet went before the new one was healthy")
	}
	if backedUp {
		if got := h.column("ws-a", `(SELECT droplet_name || ' ' || backup_id FROM backup_restores WHERE workspace = fleet_status.workspace)`); got != "genesis-ws-a-2 b-20300101T000000Z-00000001" {
			t.Errorf("restore asked of the rebuilt droplet: %q, want the backup (newer than any snapshot)", got)
		}
	}
	// The new droplet reports healthy: the dead one is retired.
	silence(2 * time.Minute)
	h.beat("ws-a", true)
	h.watch()
	if diff := cmp.Diff([]string{"genesis-ws-a-2", "genesis-ws-b-1"}, names(h.droplets())); diff != "" {
		t.Errorf("droplets after the rebuilt one is healthy (-want +got):\n%s", diff)
	}
	if got := h.column("ws-a", "coalesce(remediation_step, '') || '|' || coalesce(replacing_droplet_id::text, '')"); got != "|" {
		t.Errorf("ladder after a healthy rebuild: %q, want reset", got)
	}
	want := []string{"create/succeeded", "reboot/succeeded", "power_cycle/succeeded", "rebuild/succeeded", "retire/succeeded"}
	var snaps []string
	if backedUp {
		want[4] = "destroy/succeeded"
	} else {
		snaps = []string{"genesis-ws-a-1"}
	}
	if diff := cmp.Diff(want, h.ops("ws-a")); diff != "" {
		t.Errorf("journal (-want +got):\n%s", diff)
	}
	// The proof or the snapshot is journaled.
	proof := h.column("ws-a", `(SELECT coalesce(detail->>'snapshot_id', '') || '|' || (detail->'action'->>'reason') FROM audit_log
		WHERE workspace = fleet_status.workspace AND action IN ('retire', 'destroy') ORDER BY id DESC LIMIT 1)`)
	if backedUp && !strings.Contains(proof, "|watchdog: the rebuilt droplet is healthy; retiring the one it replaced: backup b-20300101T000000Z-00000001 taken") {
		t.Errorf("journaled retirement %q does not name the backup", proof)
	}
	if !backedUp && strings.HasPrefix(proof, "|") {
		t.Errorf("journaled retirement %q names no snapshot", proof)
	}
	if got := len(h.snapshotNames()); got != len(snaps) {
		t.Errorf("snapshots after the retirement: %v, want %d", h.snapshotNames(), len(snaps))
	}
	if diff := cmp.Diff([]string{"create/succeeded"}, h.ops("ws-b")); diff != "" {
		t.Errorf("ws-b journal (-want +got):\n%s", diff)
	}
	steps := h.rec.cfg.Metrics.exec.Steps
	for _, k := range []string{"reboot", "power_cycle", "rebuild", "retire"} {
		if got := testutil.ToFloat64(steps.WithLabelValues(k, "succeeded")); got != 1 {
			t.Errorf("genesis_watchdog_remediations_total{kind=%q,result=succeeded} = %v, want 1", k, got)
		}
	}
	// Killed after the droplet went but before the retirement was
	// recorded: the next watch retires it again, which finds the droplet
	// gone (and, for a snapshot retirement, its snapshot there) and
	// completes; nothing new is made or lost.
	h.exec(`UPDATE fleet_status SET replacing_droplet_id = $2, replacing_droplet_name = 'genesis-ws-a-1', replacing_account = $3,
		replacing_last_seen_at = $4::timestamptz WHERE workspace = $1`, "ws-a", old, oldAccount, oldSeen)
	silence(time.Minute)
	h.beat("ws-a", true)
	h.watch()
	if got := h.column("ws-a", "coalesce(replacing_droplet_id::text, '')"); got != "" {
		t.Errorf("replacing after the retirement was repeated: %q, want none", got)
	}
	if diff := cmp.Diff(append(want, want[4]), h.ops("ws-a")); diff != "" {
		t.Errorf("journal after the repeated retirement (-want +got):\n%s", diff)
	}
	if got := len(h.snapshotNames()); got != len(snaps) {
		t.Errorf("snapshots after the repeated retirement: %v, want %d", h.snapshotNames(), len(snaps))
	}
}

// TestWatchdogBootDeadline: a droplet whose agent enrolled but never got
// further (HANDSHAKE: a stranded enrollment) is rebuilt once it passes the
// boot deadline (a new droplet, new user data, a new token); when the
// rebuilt one is not healthy within the cool-down either, the tenant is
// FAILED, and neither droplet is destroyed.
func TestWatchdogBootDeadline(t *testing.T) {
	h := watchHarness(t)
	ctx := t.Context()
	h.onboard("ws-b")
	advance := func(d time.Duration) {
		h.sim.Sim.Advance(d)
		h.beat("ws-b", true) // the rest of the fleet keeps talking
	}
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.Commit("onboard ws-a")
	h.converge(ctx)
	if _, err := h.store.Pool().Exec(ctx, `UPDATE fleet_status SET state = 'HANDSHAKE', state_since = $2 WHERE workspace = $1`,
		"ws-a", h.sim.Sim.Now()); err != nil {
		t.Fatal(err)
	}
	advance(schema.DefaultBootDeadline - time.Minute)
	if d := h.watch(); len(d.Remediations) != 0 {
		t.Fatalf("remediation before the boot deadline: %+v", d.Remediations)
	}
	advance(time.Minute)
	h.watch()
	if diff := cmp.Diff([]string{"genesis-ws-a-1", "genesis-ws-a-2", "genesis-ws-b-1"}, names(h.droplets())); diff != "" {
		t.Fatalf("droplets after the boot deadline (-want +got):\n%s", diff)
	}
	if got := h.column("ws-a", "state || ' ' || remediation_step || ' ' || droplet_name"); got != "INITIALIZING rebuild genesis-ws-a-2" {
		t.Fatalf("after the boot deadline: %q, want the rebuilt droplet initializing", got)
	}
	advance(schema.DefaultRemediateCooldown)
	h.watch()
	if got := h.lifecycle("ws-a"); got != watchdog.Failed {
		t.Fatalf("rebuilt droplet not healthy within the cool-down: %s, want FAILED", got)
	}
	if got := h.column("ws-a", "health_reason"); !strings.Contains(got, "the rebuilt droplet was not healthy") {
		t.Errorf("health_reason = %q", got)
	}
	if diff := cmp.Diff([]string{"genesis-ws-a-1", "genesis-ws-a-2", "genesis-ws-b-1"}, names(h.droplets())); diff != "" {
		t.Errorf("droplets after FAILED (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"create/succeeded", "rebuild/succeeded"}, h.ops("ws-a")); diff != "" {
		t.Errorf("journal (-want +got):\n%s", diff)
	}
	steps := h.rec.cfg.Metrics.exec.Steps
	for _, k := range []string{"rebuild", "fail"} {
		if got := testutil.ToFloat64(steps.WithLabelValues(k, "succeeded")); got != 1 {
			t.Errorf("genesis_watchdog_remediations_total{kind=%q,result=succeeded} = %v, want 1", k, got)
		}
	}
	h.watch() // the gauge counts what an evaluation saw
	if got := testutil.ToFloat64(h.rec.cfg.Metrics.watchdog.health.WithLabelValues("failed")); got != 1 {
		t.Errorf(`genesis_watchdog_tenants{health="failed"} = %v, want 1 (GenesisTenantFailed alerts on it)`, got)
	}
}

// TestWatchdogReboot: a droplet that heartbeats after its reboot is healthy
// again and its ladder starts over.
func TestWatchdogRebootRecovers(t *testing.T) {
	h := watchHarness(t)
	h.onboard("ws-a")
	h.sim.Sim.Advance(16 * time.Minute)
	h.watch()
	h.watch()
	if got := h.lifecycle("ws-a"); got != watchdog.Rebooting {
		t.Fatalf("%s, want REBOOTING", got)
	}
	h.sim.Sim.Advance(2 * time.Minute)
	h.beat("ws-a", true)
	h.watch()
	if got := string(h.lifecycle("ws-a")) + "|" + h.column("ws-a", "remediation_step"); got != string(watchdog.Healthy)+"|" {
		t.Fatalf("after a heartbeat: %s, want healthy with the ladder reset", got)
	}
	// Silent again: the ladder starts from a reboot, not a power cycle.
	h.sim.Sim.Advance(16 * time.Minute)
	h.watch()
	h.watch()
	if got := h.column("ws-a", "remediation_step"); got != "reboot" {
		t.Errorf("second silence: step %q, want reboot", got)
	}
}

// TestWatchdogRebuildFromSnapshotThenFailed: a tenant that hibernated once
// is rebuilt from its latest snapshot; a rebuilt droplet that never
// reports healthy within the cool-down makes the tenant FAILED, which
// stays (no remediation, no planner re-create) until a retry through the
// API; and FAILED again, until a commit changes the tenant's file.
func TestWatchdogRebuildFromSnapshotThenFailed(t *testing.T) {
	h := watchHarness(t)
	ctx := t.Context()
	h.onboard("ws-a", "ws-b") // one of two may hibernate (maxHibernatePercent 50)
	advance := func(d time.Duration) {
		h.sim.Sim.Advance(d)
		h.beat("ws-b", true) // the rest of the fleet keeps talking
	}
	h.state.WriteTenant(tenant("ws-a", "hibernated", "nyc3"))
	h.state.Commit("hibernate")
	h.converge(ctx)
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.Commit("wake")
	h.converge(ctx)
	h.beat("ws-a", true)
	if diff := cmp.Diff([]string{"genesis-ws-a-2", "genesis-ws-b-1"}, names(h.droplets())); diff != "" {
		t.Fatalf("droplets after the wake (-want +got):\n%s", diff)
	}
	snapID := h.column("ws-a", "snapshot_id")
	// Straight to the rebuild rung.
	if _, err := h.store.Pool().Exec(ctx, `UPDATE fleet_status SET state = 'REBOOTING', remediation_step = 'power_cycle', remediation_at = $2 WHERE workspace = $1`,
		"ws-a", h.sim.Sim.Now()); err != nil {
		t.Fatal(err)
	}
	advance(20 * time.Minute)
	h.watch()
	droplets := h.droplets()
	if diff := cmp.Diff([]string{"genesis-ws-a-2", "genesis-ws-a-3", "genesis-ws-b-1"}, names(droplets)); diff != "" {
		t.Fatalf("droplets after the rebuild (-want +got):\n%s", diff)
	}
	var image string
	c := h.sim.Client(tokens[droplets["genesis-ws-a-3"]])
	ds, _, _ := c.Droplets.List(ctx, &godo.ListOptions{PerPage: 200})
	for _, d := range ds {
		if d.Name == "genesis-ws-a-3" && d.Image != nil {
			image = fmt.Sprint(d.Image.ID)
		}
	}
	if image != snapID {
		t.Errorf("rebuilt droplet image %q, want the latest snapshot %q", image, snapID)
	}
	// Never healthy: FAILED after the cool-down, and neither droplet goes.
	advance(9 * time.Minute)
	h.watch()
	if got := h.lifecycle("ws-a"); got != "INITIALIZING" {
		t.Fatalf("within the cool-down: %s", got)
	}
	advance(time.Minute)
	h.watch()
	if got := h.lifecycle("ws-a"); got != watchdog.Failed {
		t.Fatalf("rebuilt droplet silent past the cool-down: %s, want FAILED", got)
	}
	if got := h.column("ws-a", "last_error"); !strings.Contains(got, "not healthy within 10m0s") {
		t.Errorf("last_error = %q", got)
	}
	// FAILED stays: no step, no plan, whatever time passes.
	for range 3 {
		advance(time.Hour)
		if d := h.watch(); len(d.Remediations)+len(d.Transitions)+len(d.Retry) != 0 {
			t.Fatalf("FAILED tenant acted on: %+v", d)
		}
		if p := h.converge(ctx); !p.Empty() {
			t.Fatalf("FAILED tenant planned: %+v", p.Actions)
		}
	}
	if got := h.rec.cfg.Metrics.watchdog.health.WithLabelValues("failed"); testutil.ToFloat64(got) != 1 {
		t.Errorf("genesis_watchdog_tenants{health=failed} = %v, want 1", testutil.ToFloat64(got))
	}
	if got := len(h.droplets()); got != 3 {
		t.Errorf("droplets: %d, want 3 (a FAILED tenant keeps both of its droplets)", got)
	}

	// Retry through the API.
	srv := httptest.NewServer(fleetapi.Handler(fleetapi.HandlerConfig{Reconciler: h.rec, Store: h.store}))
	defer srv.Close()
	post := func(id string) int {
		resp, err := http.Post(srv.URL+"/v1/tenants/"+id+"/retry", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post("ws-a"); code != http.StatusAccepted {
		t.Fatalf("retry: %d", code)
	}
	if code := post("ws-a"); code != http.StatusConflict {
		t.Errorf("second retry: %d, want 409 (not FAILED)", code)
	}
	if code := post("Bad_ID"); code != http.StatusBadRequest {
		t.Errorf("retry of a bad id: %d, want 400", code)
	}
	if got := h.lifecycle("ws-a"); got != watchdog.Degraded {
		t.Fatalf("after retry: %s, want ACTIVE_DEGRADED", got)
	}
	var actor string
	if err := h.store.Pool().QueryRow(ctx, `SELECT actor FROM audit_log WHERE action = 'retry' AND workspace = 'ws-a'`).Scan(&actor); err != nil || actor != "api" {
		t.Errorf("retry audit: actor %q (%v)", actor, err)
	}
	// Still silent: critical, then the ladder from the first rung.
	h.watch()
	h.watch()
	if got := h.column("ws-a", "remediation_step"); got != "reboot" {
		t.Errorf("after a retry the ladder starts at %q, want reboot", got)
	}

	// FAILED again; a commit that leaves the file alone does not retry it,
	// one that changes it does.
	if _, err := h.store.Pool().Exec(ctx, `UPDATE fleet_status SET state = 'FAILED', failed_hash = tenant_hash WHERE workspace = 'ws-a'`); err != nil {
		t.Fatal(err)
	}
	h.state.WriteTenant(tenant("other", "hibernated", "nyc3"))
	h.state.Commit("unrelated")
	h.converge(ctx)
	h.watch()
	if got := h.lifecycle("ws-a"); got != watchdog.Failed {
		t.Fatalf("an unrelated commit retried ws-a: %s", got)
	}
	fixed := tenant("ws-a", "running", "nyc3")
	fixed.Metadata.Name = "ws-a-fixed"
	h.state.WriteTenant(fixed)
	h.state.Commit("fix ws-a")
	h.converge(ctx)
	h.watch()
	if got := h.lifecycle("ws-a"); got == watchdog.Failed {
		t.Fatalf("a commit changing ws-a's file did not retry it")
	}
	if err := h.store.Pool().QueryRow(ctx, `SELECT actor FROM audit_log WHERE action = 'retry' AND workspace = 'ws-a' ORDER BY id DESC LIMIT 1`).Scan(&actor); err != nil || actor != "git" {
		t.Errorf("commit retry audit: actor %q (%v)", actor, err)
	}
}

// TestWatchdogOutageGuard: half the fleet silent at once is an outage: no
// droplet is remediated, the gauge says so, and one log line marks its
// start and one its end.
func TestWatchdogOutageGuard(t *testing.T) {
	h := watchHarness(t)
	var logs syncio.Buffer
	h.rec.wlog = slog.New(slog.NewTextHandler(&logs, nil)).With("component", "watchdog")
	var ids []string
	for i := range 10 {
		ids = append(ids, fmt.Sprintf("ws-%02d", i))
	}
	h.onboard(ids...)
	h.sim.Sim.Advance(16 * time.Minute)
	for _, id := range ids[5:] {
		h.beat(id, true)
	}
	outage := h.rec.cfg.Metrics.watchdog.outage
	for range 4 {
		d := h.watch()
		if !d.Outage || len(d.Remediations) != 0 {
			t.Fatalf("5 of 10 silent: outage %v, remediations %+v", d.Outage, d.Remediations)
		}
		if got := testutil.ToFloat64(outage); got != 1 {
			t.Fatalf("genesis_watchdog_outage = %v, want 1", got)
		}
		h.sim.Sim.Advance(5 * time.Minute)
		for _, id := range ids[5:] {
			h.beat(id, true)
		}
	}
	for _, id := range ids {
		for _, op := range h.ops(id) {
			if op != "create/succeeded" {
				t.Errorf("%s: %s during an outage", id, op)
			}
		}
	}
	// The network comes back: four of the five talk again; the last one
	// is a real failure, and is remediated once the grace after the
	// outage (degradedAfter, 5 min: one step of this harness's clock) has
	// passed (TestOutageGrace in package watchdog holds it within).
	for _, id := range ids[1:5] {
		h.beat(id, true)
	}
	h.watch() // outage over; ws-00 seen critical
	h.watch() // ws-00 rebooted
	if got := testutil.ToFloat64(outage); got != 0 {
		t.Errorf("genesis_watchdog_outage after = %v, want 0", got)
	}
	if got := h.column("ws-00", "remediation_step"); got != "reboot" {
		t.Errorf("ws-00 after the outage: step %q, want reboot", got)
	}
	out := logs.String()
	if n := strings.Count(out, "fleet-wide silence: remediation suspended"); n != 1 {
		t.Errorf("outage start logged %d times, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "fleet-wide silence over: remediation resumes after a grace"); n != 1 {
		t.Errorf("outage end logged %d times, want 1:\n%s", n, out)
	}
}

// TestWatchdogRunsInLead: the leader runs the watchdog on its own every
// WatchdogEvery.
func TestWatchdogRunsInLead(t *testing.T) {
	h := watchHarness(t)
	h.onboard("ws-a")
	h.rec.cfg.WatchdogEvery = 20 * time.Millisecond
	h.sim.Sim.Advance(6 * time.Minute)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- h.rec.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(20 * time.Second)
	for h.lifecycle("ws-a") != watchdog.Degraded {
		if time.Now().After(deadline) {
			t.Fatalf("the leader's watchdog did not degrade a silent tenant: %s", h.lifecycle("ws-a"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
