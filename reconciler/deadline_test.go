package reconciler

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// TestWatchdogDegradedWhileHeartbeating reproduces n8n down behind a live
// agent: the agent heartbeats every minute and reports the problem, so the
// tenant is ACTIVE_DEGRADED and never silent. Within criticalAfter nothing
// happens; past it, the droplet is rebooted (journaled, through the
// simulator), where before it stayed degraded forever.
func TestWatchdogDegradedWhileHeartbeating(t *testing.T) {
	h := watchHarness(t)
	h.onboard("ws-a", "ws-b")
	h.beat("ws-a", false)
	if got := h.lifecycle("ws-a"); got != lifecycle.ActiveDegraded {
		t.Fatalf("after a heartbeat with n8n down: %s", got)
	}
	for m := range 14 {
		h.sim.Sim.Advance(time.Minute)
		h.beat("ws-a", false)
		h.beat("ws-b", true)
		if d := h.watch(); len(d.Remediations) != 0 {
			t.Fatalf("minute %d, within criticalAfter: remediated %+v", m+1, d.Remediations)
		}
	}
	h.sim.Sim.Advance(time.Minute)
	h.beat("ws-a", false)
	h.beat("ws-b", true)
	h.watch()
	if got := h.lifecycle("ws-a"); got != lifecycle.Rebooting {
		t.Errorf("degraded past criticalAfter while heartbeating: %s, want REBOOTING", got)
	}
	if got := h.ops("ws-a"); !slices.Contains(got, "reboot/succeeded") {
		t.Errorf("journal of ws-a = %v, want a reboot", got)
	}
	if got := h.dropletActions("genesis-ws-a-1"); !slices.Contains(got, "reboot/completed") {
		t.Errorf("simulator actions of ws-a's droplet = %v, want a reboot", got)
	}
	// Back after the reboot, still reporting n8n down: the ladder keeps
	// its place (no reboot loop) and climbs a deadline later.
	for range 16 {
		h.sim.Sim.Advance(time.Minute)
		h.beat("ws-a", false)
		h.beat("ws-b", true)
		h.watch()
	}
	if got, want := h.ops("ws-a"), []string{"create/succeeded", "reboot/succeeded", "power_cycle/succeeded"}; !cmp.Equal(got, want) {
		t.Errorf("journal of ws-a = %v, want %v", got, want)
	}
}

// TestWatchdogStuckHibernation reproduces a hibernation that stopped after
// the shutdown with nobody finishing it (no operation in flight, the row
// left HIBERNATING, the droplet off): at the deadline the droplet is
// powered on (a power cycle, journaled), and when nothing comes back
// within the cool-down the tenant is FAILED (alert), instead of sitting
// there unwatched.
func TestWatchdogStuckHibernation(t *testing.T) {
	h := watchHarness(t)
	ctx := t.Context()
	h.onboard("ws-a", "ws-b")
	if _, err := h.store.Pool().Exec(ctx, `UPDATE fleet_status SET state = 'HIBERNATING', state_since = $2, desired_state = 'hibernated' WHERE workspace = $1`,
		"ws-a", h.sim.Sim.Now()); err != nil {
		t.Fatal(err)
	}
	h.sim.Sim.Advance(59 * time.Minute)
	h.beat("ws-b", true)
	if d := h.watch(); len(d.Remediations) != 0 {
		t.Fatalf("within the deadline: %+v", d.Remediations)
	}
	h.sim.Sim.Advance(time.Minute)
	h.beat("ws-b", true)
	h.watch()
	if got := h.lifecycle("ws-a"); got != lifecycle.Rebooting {
		t.Errorf("past the deadline: %s, want REBOOTING (powered on)", got)
	}
	if diff := cmp.Diff([]string{"power_cycle/succeeded"}, h.ops("ws-a")[len(h.ops("ws-a"))-1:]); diff != "" {
		t.Errorf("journal (-want +got):\n%s", diff)
	}
	h.sim.Sim.Advance(10 * time.Minute)
	h.beat("ws-b", true)
	h.watch()
	if got := h.lifecycle("ws-a"); got != lifecycle.Failed {
		t.Errorf("still nothing after the power-on and the cool-down: %s, want FAILED", got)
	}
}
