package rollouts

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/rollout"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) *time.Time { t := t0.Add(-d); return &t }

func wave(maxUnavailable, budget int, bake time.Duration) store.Rollout {
	return store.Rollout{ID: "r2-abc", State: rollout.Running, WaveStartedAt: ago(time.Hour),
		Waves:  []store.RolloutWave{{Name: "canary", Size: 4, BakeSeconds: bake.Seconds(), MaxUnavailable: maxUnavailable, FailureBudget: budget}, {Name: "rest", Size: 10, MaxUnavailable: 5}},
		Policy: store.RolloutPolicy{OnFailure: "pause", ProgressDeadlineSeconds: 1800}}
}

func members(n int, f func(i int, m *store.MemberStatus)) []store.MemberStatus {
	var ms []store.MemberStatus
	for i := range n {
		m := store.MemberStatus{Workspace: fmt.Sprintf("ws-%d", i), State: "ACTIVE_HEALTHY", Health: "healthy"}
		f(i, &m)
		ms = append(ms, m)
	}
	return ms
}

func utc(string) *time.Location { return time.UTC }

func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		name  string
		r     store.Rollout
		ms    []store.MemberStatus
		check func(t *testing.T, d Decision)
	}{
		{"releases maxUnavailable in rank order", wave(2, 0, 0), members(4, func(int, *store.MemberStatus) {}), func(t *testing.T, d Decision) {
			if len(d.Release) != 2 || d.State != rollout.Running {
				t.Fatalf("released %v", d.Release)
			}
		}},
		{"in flight count against maxUnavailable", wave(2, 0, 0), members(4, func(i int, m *store.MemberStatus) {
			if i == 0 {
				m.Released = ago(time.Minute)
			}
		}), func(t *testing.T, d Decision) {
			if len(d.Release) != 1 || slices.Contains(d.Release, "ws-0") {
				t.Fatalf("released %v, want one more beside ws-0", d.Release)
			}
		}},
		{"applied and healthy counts applied", wave(1, 0, 0), members(1, func(i int, m *store.MemberStatus) {
			m.Released, m.AppliedTarget = ago(time.Minute), true
		}), func(t *testing.T, d Decision) {
			if !slices.Equal(d.Applied, []string{"ws-0"}) {
				t.Fatalf("applied %v", d.Applied)
			}
		}},
		{"applied but not yet healthy is in flight", wave(1, 0, 0), members(2, func(i int, m *store.MemberStatus) {
			if i == 0 {
				m.Released, m.AppliedTarget, m.State = ago(time.Minute), true, "DEPLOYING"
			}
		}), func(t *testing.T, d Decision) {
			if len(d.Applied) != 0 || len(d.Release) != 0 {
				t.Fatalf("applied %v released %v", d.Applied, d.Release)
			}
		}},
		{"a rejection past the budget pauses with the agent's reason", wave(1, 0, 0), members(2, func(i int, m *store.MemberStatus) {
			if i == 0 {
				m.Released, m.Rejected = ago(time.Minute), "n8n 9.9.9: verify failed"
			}
		}), func(t *testing.T, d Decision) {
			if d.State != rollout.Paused || !strings.Contains(d.Reason, "ws-0: the agent rejected the change: n8n 9.9.9: verify failed") || len(d.Release) != 0 {
				t.Fatalf("state %s reason %q released %v", d.State, d.Reason, d.Release)
			}
		}},
		{"failures within the budget go on", wave(1, 1, 0), members(2, func(i int, m *store.MemberStatus) {
			if i == 0 {
				m.Released, m.State = ago(time.Minute), "FAILED"
			}
		}), func(t *testing.T, d Decision) {
			if d.State != rollout.Running || len(d.Failed) != 1 || len(d.Release) != 1 {
				t.Fatalf("state %s failed %v released %v", d.State, d.Failed, d.Release)
			}
		}},
		{"accepted failures widen the budget", func() store.Rollout { r := wave(1, 0, 0); r.AckedFailures = 1; return r }(), members(2, func(i int, m *store.MemberStatus) {
			if i == 0 {
				m.Released, m.Failed, m.Reason = ago(time.Hour), ago(time.Minute), "old"
			}
		}), func(t *testing.T, d Decision) {
			if d.State != rollout.Running || len(d.Release) != 1 {
				t.Fatalf("state %s released %v", d.State, d.Release)
			}
		}},
		{"past the progress deadline fails", wave(1, 0, 0), members(1, func(i int, m *store.MemberStatus) {
			m.Released, m.State = ago(31*time.Minute), "ACTIVE_DEGRADED"
		}), func(t *testing.T, d Decision) {
			if d.State != rollout.Paused || !strings.Contains(d.Failed["ws-0"], "within 30m0s (state ACTIVE_DEGRADED)") {
				t.Fatalf("state %s failed %v", d.State, d.Failed)
			}
		}},
		{"unhealthy after applying fails", wave(1, 0, time.Hour), members(1, func(i int, m *store.MemberStatus) {
			m.Released, m.Applied, m.State = ago(time.Hour), ago(time.Minute), "ACTIVE_CRITICAL"
		}), func(t *testing.T, d Decision) {
			if d.State != rollout.Paused || !strings.Contains(d.Failed["ws-0"], "unhealthy after applying the change: ACTIVE_CRITICAL") {
				t.Fatalf("state %s failed %v", d.State, d.Failed)
			}
		}},
		{"a rejection after applying fails (an agent build rolled back by its watcher)", wave(1, 0, time.Hour), members(1, func(i int, m *store.MemberStatus) {
			m.Released, m.Applied, m.Rejected = ago(time.Hour), ago(time.Minute), "agent 1.5.0: no healthy heartbeat within 3m0s"
		}), func(t *testing.T, d Decision) {
			if d.State != rollout.Paused || !strings.Contains(d.Failed["ws-0"], "after applying it: agent 1.5.0") {
				t.Fatalf("state %s failed %v", d.State, d.Failed)
			}
		}},
		{"not running is skipped", wave(1, 0, 0), members(1, func(i int, m *store.MemberStatus) {
			m.Released, m.State = ago(time.Minute), "HIBERNATED"
		}), func(t *testing.T, d Decision) {
			if !slices.Equal(d.Skipped, []string{"ws-0"}) || len(d.Failed) != 0 {
				t.Fatalf("skipped %v failed %v", d.Skipped, d.Failed)
			}
		}},
		{"rollback policy ends rolled back", func() store.Rollout { r := wave(1, 0, 0); r.Policy.OnFailure = "rollback"; return r }(), members(1, func(i int, m *store.MemberStatus) {
			m.Released, m.State = ago(time.Minute), "FAILED"
		}), func(t *testing.T, d Decision) {
			if d.State != rollout.RolledBack || !d.Finished {
				t.Fatalf("state %s finished %v", d.State, d.Finished)
			}
		}},
		{"settled: bake starts", wave(1, 0, 10*time.Minute), members(2, func(i int, m *store.MemberStatus) {
			m.Released, m.Applied = ago(time.Hour), ago(time.Minute)
		}), func(t *testing.T, d Decision) {
			if d.BakingSince == nil || !d.BakingSince.Equal(t0) || d.Wave != 0 {
				t.Fatalf("baking %v wave %d", d.BakingSince, d.Wave)
			}
		}},
		{"bake over: next wave", func() store.Rollout { r := wave(1, 0, 10*time.Minute); r.BakingSince = ago(10 * time.Minute); return r }(), members(2, func(i int, m *store.MemberStatus) {
			m.Released, m.Applied = ago(time.Hour), ago(time.Hour)
		}), func(t *testing.T, d Decision) {
			if d.Wave != 1 || d.BakingSince != nil || d.State != rollout.Running {
				t.Fatalf("wave %d baking %v state %s", d.Wave, d.BakingSince, d.State)
			}
		}},
		{"an empty wave passes at once", wave(1, 0, time.Hour), nil, func(t *testing.T, d Decision) {
			if d.Wave != 1 {
				t.Fatalf("wave %d", d.Wave)
			}
		}},
		{"last wave over: done", func() store.Rollout { r := wave(1, 0, 0); r.Wave = 1; return r }(), members(1, func(i int, m *store.MemberStatus) {
			m.Released, m.Applied = ago(time.Hour), ago(time.Hour)
		}), func(t *testing.T, d Decision) {
			if d.State != rollout.Done || !d.Finished {
				t.Fatalf("state %s", d.State)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, Decide(tc.r, tc.ms, nil, utc, t0)) })
	}
}

// TestDecideHoldsOutsideWindows: a tenant is released only inside one of
// the maintenance windows of its own time zone.
func TestDecideHoldsOutsideWindows(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	// t0 is Sunday 12:00 UTC, 21:00 in Tokyo.
	windows := []schema.MaintenanceWindow{{Days: []string{"sun"}, Start: "20:00", End: "23:00"}}
	zone := func(ws string) *time.Location {
		if ws == "ws-0" {
			return tokyo
		}
		return time.UTC
	}
	d := Decide(wave(4, 0, 0), members(2, func(int, *store.MemberStatus) {}), windows, zone, t0)
	if !slices.Equal(d.Release, []string{"ws-0"}) {
		t.Errorf("released %v, want only ws-0 (in its Tokyo window)", d.Release)
	}
	if d.Wave != 0 {
		t.Error("a wave with held members passed")
	}
}
