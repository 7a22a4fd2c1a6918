package reconciler

import (
	"errors"
	"regexp"
	"slices"
	"testing"

	"genesis.dev/fleet/reconciler/watchdog"
)

var manualSnap = regexp.MustCompile(`^genesis-ws-a-1-snap-[0-9]{14}$`)

// TestOperatorActions: an operator's reboot of a healthy tenant runs at
// the watchdog's next run, journaled like the ladder's own steps, audited
// with who and why, and the request is taken once; a rebuild makes a new
// droplet and keeps the old one until the new one is healthy; a snapshot is
// taken live with the tenant left alone; a backup is recorded for the
// manifest. Bad requests
// are refused before anything is recorded.
func TestOperatorActions(t *testing.T) {
	h := watchHarness(t)
	ctx := t.Context()
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.WriteTenant(tenant("ws-off", "hibernated", "nyc3"))
	h.state.Commit("two tenants")
	h.converge(ctx)
	h.beat("ws-a", true)
	if l := h.lifecycle("ws-a"); l != "ACTIVE_HEALTHY" {
		t.Fatalf("ws-a %s", l)
	}
	for _, c := range []struct {
		id, action, reason string
		want               error
	}{
		{"ws-a", "explode", "x", ErrBadAction},
		{"ws-a", "reboot", "", ErrBadAction},
		{"ws-nobody", "reboot", "x", ErrUnknownTenant},
		{"ws-off", "reboot", "x", ErrNotRunning},
	} {
		if err := h.rec.Operate(ctx, c.id, c.action, "ops", c.reason); !errors.Is(err, c.want) {
			t.Errorf("Operate(%s, %s, %q) = %v, want %v", c.id, c.action, c.reason, err, c.want)
		}
	}
	if err := h.rec.Operate(ctx, "ws-a", "reboot", "ops", "n8n wedged; ticket 4711"); err != nil {
		t.Fatal(err)
	}
	d := h.watch()
	if len(d.Remediations) != 1 || d.Remediations[0].Step != watchdog.StepReboot || d.Remediations[0].Reason != "operator ops: n8n wedged; ticket 4711" {
		t.Fatalf("watchdog decision %+v", d)
	}
	if got := h.ops("ws-a"); !slices.Equal(got[len(got)-1:], []string{"reboot/succeeded"}) {
		t.Errorf("journal %v, want a succeeded reboot last", got)
	}
	var n int
	if err := h.store.Pool().QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE workspace = 'ws-a' AND action = 'operator.reboot.requested' AND actor = 'ops'
		AND detail->>'reason' = 'n8n wedged; ticket 4711'`).Scan(&n); err != nil || n != 1 {
		t.Errorf("audit entries: %d %v", n, err)
	}
	// Taken once: the next run does not reboot again.
	h.beat("ws-a", true)
	if d := h.watch(); len(d.Remediations) != 0 {
		t.Errorf("a second run remediates %+v", d.Remediations)
	}
	// A snapshot now: taken live, the tenant's state and ladder untouched,
	// journaled and audited; it is the tenant's latest copy (the
	// observation maps it to ws-a), and a hibernation's own snapshot name
	// is not taken by it.
	h.beat("ws-a", true)
	if err := h.rec.Operate(ctx, "ws-a", "snapshot", "ops", "before the customer's migration"); err != nil {
		t.Fatal(err)
	}
	if d := h.watch(); len(d.Remediations) != 1 || d.Remediations[0].Step != watchdog.StepSnapshot {
		t.Fatalf("watchdog decision %+v", d)
	}
	if got := h.ops("ws-a"); got[len(got)-1] != "snapshot/succeeded" {
		t.Errorf("journal %v, want a succeeded snapshot last", got)
	}
	snaps := h.snapshotNames()
	if len(snaps) != 1 || !manualSnap.MatchString(snaps[0]) {
		t.Errorf("snapshots %v, want one genesis-ws-a-1-snap-<stamp>", snaps)
	}
	if l := h.lifecycle("ws-a"); l != "ACTIVE_HEALTHY" {
		t.Errorf("after a snapshot ws-a is %s, want ACTIVE_HEALTHY (untouched)", l)
	}
	if got := h.dropletActions("genesis-ws-a-1"); got[len(got)-1] != "snapshot/completed" || slices.Contains(got, "power_off/completed") {
		t.Errorf("droplet actions %v, want a live snapshot last and no power off", got)
	}
	if got := h.column("ws-a", "coalesce(remediation_step, '') || '/' || health"); got != "/healthy" {
		t.Errorf("ladder/health %q after a snapshot, want no rung and healthy", got)
	}
	if err := h.store.Pool().QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE workspace = 'ws-a' AND action = 'snapshot'
		AND detail->>'snapshot_id' <> ''`).Scan(&n); err != nil || n != 1 {
		t.Errorf("snapshot audit entries: %d %v", n, err)
	}
	h.resync(ctx)
	o := h.rec.Observed()
	if len(o.Snapshots) != 1 || o.Snapshots[0].Workspace != "ws-a" {
		t.Errorf("observed snapshots %+v, want one of ws-a", o.Snapshots)
	}
	// A backup now is a request the manifest carries (agentapi); it needs
	// a running droplet like the others.
	if err := h.rec.Operate(ctx, "ws-a", "backup", "ops", "before the customer's migration"); err != nil {
		t.Fatal(err)
	}
	if by := h.column("ws-a", "coalesce(backup_requested_by, '') || ' ' || (backup_requested_at IS NOT NULL)::text"); by != "ops true" {
		t.Errorf("backup request %q", by)
	}
	if err := h.rec.Operate(ctx, "ws-off", "backup", "ops", "x"); !errors.Is(err, ErrNotRunning) {
		t.Errorf("backup of a hibernated tenant: %v, want ErrNotRunning", err)
	}

	before := h.droplets()
	if err := h.rec.Operate(ctx, "ws-a", "rebuild", "ops", "disk full"); err != nil {
		t.Fatal(err)
	}
	h.watch()
	after := h.droplets()
	if len(after) != len(before)+1 || after["genesis-ws-a-2"] == "" || after["genesis-ws-a-1"] == "" {
		t.Errorf("after a rebuild: droplets %v (before %v), want the new one beside the old", after, before)
	}
}
