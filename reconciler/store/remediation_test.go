package store

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/watchdog"
)

// TestWatchdogCompareAndSet: every watchdog write names the state and the
// heartbeat its decision saw; a heartbeat stored in between wins.
func TestWatchdogCompareAndSet(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	beat := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	if _, err := s.Pool().Exec(ctx, `INSERT INTO fleet_status (workspace, droplet_id, droplet_name, account, state, desired_state, last_heartbeat_at, tenant_hash)
		VALUES ('ws-a', 77, 'genesis-ws-a-1', 'acct-a', 'ACTIVE_CRITICAL', 'running', $1, 'h1')`, beat); err != nil {
		t.Fatal(err)
	}
	rows, err := s.WatchRows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := watchdog.Row{Workspace: "ws-a", Lifecycle: "ACTIVE_CRITICAL", Desired: "running", DropletID: 77, DropletName: "genesis-ws-a-1", Account: "acct-a", LastHeartbeat: beat}
	if len(rows) != 1 {
		t.Fatalf("rows = %+v", rows)
	}
	rows[0].StateSince = time.Time{}
	if diff := cmp.Diff(want, rows[0], cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("row (-want +got):\n%s", diff)
	}
	reboot := plan.Action{Kind: plan.Reboot, Workspace: "ws-a", Account: "acct-a", Droplet: "genesis-ws-a-1", DropletID: 77}
	// Decided on an older heartbeat, or another state: stale, nothing written.
	if _, err := s.BeginRemediation(ctx, reboot, "ACTIVE_CRITICAL", beat.Add(-time.Minute), beat, ""); !errors.Is(err, ErrStale) {
		t.Errorf("remediation on a stale heartbeat: %v, want ErrStale", err)
	}
	if err := s.ApplyTransition(ctx, watchdog.Transition{Workspace: "ws-a", From: "ACTIVE_HEALTHY", To: "ACTIVE_DEGRADED", Heartbeat: beat}); !errors.Is(err, ErrStale) {
		t.Errorf("transition from another state: %v, want ErrStale", err)
	}
	if err := s.Fail(ctx, "ws-a", "ACTIVE_CRITICAL", time.Time{}, "x", "h1", ""); !errors.Is(err, ErrStale) {
		t.Errorf("fail on a stale heartbeat: %v, want ErrStale", err)
	}
	if ops, _ := s.InFlight(ctx); len(ops) != 0 {
		t.Fatalf("a stale remediation was journaled: %+v", ops)
	}
	if err := s.RetryTenant(ctx, "ws-a", "api", "r", ""); !errors.Is(err, ErrNotFailed) {
		t.Errorf("retry of a tenant that is not FAILED: %v, want ErrNotFailed", err)
	}
	// Current: journaled, REBOOTING, step recorded; a second one is busy.
	id, err := s.BeginRemediation(ctx, reboot, "ACTIVE_CRITICAL", beat, beat.Add(time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	var state, step string
	var at time.Time
	s.Pool().QueryRow(ctx, `SELECT state, remediation_step, remediation_at FROM fleet_status WHERE workspace = 'ws-a'`).Scan(&state, &step, &at)
	if state != "REBOOTING" || step != "reboot" || !at.Equal(beat.Add(time.Hour)) {
		t.Errorf("after BeginRemediation: %s %s %s", state, step, at)
	}
	if _, err := s.BeginRemediation(ctx, reboot, "REBOOTING", beat, beat, ""); !errors.Is(err, ErrBusy) {
		t.Errorf("second remediation in flight: %v, want ErrBusy", err)
	}
	if err := s.Finish(ctx, id, reboot, Outcome{Account: "acct-a", DropletID: 77}, nil); err != nil {
		t.Fatal(err)
	}
	// A rebuild points at the new droplet and remembers the old one.
	rebuild := plan.Action{Kind: plan.Rebuild, Workspace: "ws-a", Account: "acct-a", Droplet: "genesis-ws-a-2", Gen: 2}
	id, err = s.BeginRemediation(ctx, rebuild, "REBOOTING", beat, beat.Add(2*time.Hour), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, id, rebuild, Outcome{Account: "acct-a", DropletID: 78, DropletName: "genesis-ws-a-2", IP: "203.0.113.9"}, nil); err != nil {
		t.Fatal(err)
	}
	st, _ := s.LoadStatus(ctx)
	if got := st["ws-a"]; got.DropletID != 78 || got.Replacing != 77 || got.Generation != 2 || got.Lifecycle != "INITIALIZING" {
		t.Errorf("after the rebuild: %+v", got)
	}
	if r, err := s.Replacing(ctx, "ws-a"); err != nil || r.ID != 77 || r.Name != "genesis-ws-a-1" || r.Account != "acct-a" {
		t.Errorf("replacing = %+v (%v)", r, err)
	}
	if err := s.Retired(ctx, "ws-a", 77); err != nil {
		t.Fatal(err)
	}
	if st, _ = s.LoadStatus(ctx); st["ws-a"].Replacing != 0 {
		t.Errorf("replacing after Retired: %d", st["ws-a"].Replacing)
	}
}
