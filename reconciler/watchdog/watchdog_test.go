package watchdog

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

var (
	t0     = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	policy = Policy{DegradedAfter: 5 * time.Minute, CriticalAfter: 15 * time.Minute, Cooldown: 10 * time.Minute, OutagePercent: 30, OutageMinSilent: 2,
		BootDeadline: 20 * time.Minute}
)

func row(ws string, state lifecycle.State, silent time.Duration) Row {
	return Row{Workspace: ws, Lifecycle: state, Desired: "running", DropletID: 1, LastHeartbeat: t0.Add(-silent), StateSince: t0.Add(-time.Hour)}
}

// healthyFleet is n droplets that heartbeat.
func healthyFleet(n int) []Row {
	var rs []Row
	for i := range n {
		rs = append(rs, row(fmt.Sprintf("ws-ok-%d", i), Healthy, time.Minute))
	}
	return rs
}

// TestOutageGrace: when a partition heals, the first agents back end the
// outage, but those still reconnecting are not remediated for the outage's
// silence until OutageGrace has passed since the outage was last seen; a
// droplet that stays silent after that is.
func TestOutageGrace(t *testing.T) {
	// 2 of 10 still silent: no longer an outage (30%), but just after one.
	fleet := append(healthyFleet(8), row("ws-late-1", Critical, 20*time.Minute), row("ws-late-2", Critical, 20*time.Minute))
	p := policy
	p.OutageGrace = 5 * time.Minute
	for _, tc := range []struct {
		name       string
		lastOutage time.Time
		want       int // remediations decided
		recovering bool
	}{
		{"never an outage", time.Time{}, 2, false},
		{"outage a minute ago: held", t0.Add(-time.Minute), 0, true},
		{"outage just under the grace ago: held", t0.Add(-5*time.Minute + time.Second), 0, true},
		{"outage the grace ago: remediated", t0.Add(-5 * time.Minute), 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.LastOutage = tc.lastOutage
			d := Evaluate(fleet, p, t0)
			if d.Outage || d.Recovering != tc.recovering || len(d.Remediations) != tc.want {
				t.Errorf("outage %v, recovering %v, %d remediations (held %d); want false, %v, %d", d.Outage, d.Recovering, len(d.Remediations), d.Held, tc.recovering, tc.want)
			}
			if tc.recovering && d.Held != 2 {
				t.Errorf("held %d, want 2", d.Held)
			}
		})
	}
}

func TestPolicyFromDefaults(t *testing.T) {
	got := PolicyFrom(schema.Watchdog{})
	want := Policy{DegradedAfter: 5 * time.Minute, CriticalAfter: 15 * time.Minute, Cooldown: 10 * time.Minute, OutagePercent: 30, OutageMinSilent: 2,
		BootDeadline: 20 * time.Minute, OutageGrace: 5 * time.Minute}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	got = PolicyFrom(schema.Watchdog{DegradedAfter: schema.Duration(time.Minute), CriticalAfter: schema.Duration(3 * time.Minute), Cooldown: schema.Duration(2 * time.Minute), OutagePercent: 50,
		BootDeadline: schema.Duration(7 * time.Minute)})
	want = Policy{DegradedAfter: time.Minute, CriticalAfter: 3 * time.Minute, Cooldown: 2 * time.Minute, OutagePercent: 50, OutageMinSilent: 2, BootDeadline: 7 * time.Minute,
		OutageGrace: time.Minute}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("configured (-want +got):\n%s", diff)
	}
}

func TestEvaluate(t *testing.T) {
	since := func(r Row, ago time.Duration) Row {
		r.StateSince = t0.Add(-ago)
		return r
	}
	withStep := func(r Row, s Step, ago time.Duration) Row {
		r.Step, r.StepAt = s, t0.Add(-ago)
		return r
	}
	rebuilt := func(state lifecycle.State, ago time.Duration) Row {
		r := withStep(row("ws-a", state, 0), StepRebuild, ago)
		r.LastHeartbeat = time.Time{}
		return r
	}
	booting := func(state lifecycle.State, since time.Duration) Row {
		return Row{Workspace: "ws-b", Lifecycle: state, Desired: "running", DropletID: 2, StateSince: t0.Add(-since)}
	}
	tr := func(r Row, to lifecycle.State, reason string, reset bool) Transition {
		return Transition{Workspace: r.Workspace, From: r.Lifecycle, To: to, Reason: reason, Reset: reset, Heartbeat: r.LastHeartbeat}
	}
	rem := func(r Row, s Step, reason string) Remediation {
		return Remediation{Workspace: r.Workspace, Step: s, Reason: reason, Heartbeat: r.LastHeartbeat}
	}
	cases := []struct {
		name string
		rows []Row
		want Decision
	}{
		{"fresh heartbeat: nothing", []Row{row("ws-a", Healthy, time.Minute)}, Decision{Watched: 1}},
		{"silent 5m: degraded", []Row{row("ws-a", Healthy, 5*time.Minute)},
			Decision{Watched: 1, Silent: 1, Transitions: []Transition{tr(row("ws-a", Healthy, 5*time.Minute), Degraded, "no heartbeat for 5m0s", false)}}},
		{"silent 15m from healthy: critical directly", []Row{row("ws-a", Healthy, 15*time.Minute)},
			Decision{Watched: 1, Silent: 1, Transitions: []Transition{tr(row("ws-a", Healthy, 15*time.Minute), Critical, "no heartbeat for 15m0s", false)}}},
		{"degraded to critical", []Row{row("ws-a", Degraded, 16*time.Minute)},
			Decision{Watched: 1, Silent: 1, Transitions: []Transition{tr(row("ws-a", Degraded, 16*time.Minute), Critical, "no heartbeat for 16m0s", false)}}},
		{"degraded, still under critical: nothing", []Row{since(row("ws-a", Degraded, 10*time.Minute), 10*time.Minute)}, Decision{Watched: 1, Silent: 1}},
		{"degraded while heartbeating, within its deadline: nothing", []Row{since(row("ws-a", Degraded, time.Minute), 14*time.Minute)}, Decision{Watched: 1}},
		{"degraded while heartbeating (n8n down) past its deadline: reboot", []Row{since(row("ws-a", Degraded, time.Minute), 15*time.Minute)},
			Decision{Watched: 1, Remediations: []Remediation{rem(row("ws-a", Degraded, time.Minute), StepReboot, "ACTIVE_DEGRADED for 15m0s while its agent reports problems")}}},
		{"still degraded a deadline after the reboot: power cycle", []Row{since(withStep(row("ws-a", Degraded, time.Minute), StepReboot, 20*time.Minute), 15*time.Minute)},
			Decision{Watched: 1, Remediations: []Remediation{rem(row("ws-a", Degraded, time.Minute), StepPowerCycle,
				"ACTIVE_DEGRADED for 15m0s while its agent reports problems; reboot 20m0s ago did not bring it back")}}},
		{"never sent a heartbeat: counts from state_since", []Row{{Workspace: "ws-a", Lifecycle: Healthy, Desired: "running", StateSince: t0.Add(-6 * time.Minute)}},
			Decision{Watched: 1, Silent: 1, Transitions: []Transition{{Workspace: "ws-a", From: Healthy, To: Degraded, Reason: "no heartbeat for 6m0s"}}}},
		{"critical: reboot", []Row{row("ws-a", Critical, 16*time.Minute)},
			Decision{Watched: 1, Silent: 1, Remediations: []Remediation{rem(row("ws-a", Critical, 16*time.Minute), StepReboot, "no heartbeat for 16m0s")}}},
		{"rebooting within cool-down: wait", []Row{withStep(row("ws-a", Rebooting, 20*time.Minute), StepReboot, 9*time.Minute)}, Decision{Watched: 1, Silent: 1}},
		{"rebooting past cool-down: power cycle", []Row{withStep(row("ws-a", Rebooting, 30*time.Minute), StepReboot, 10*time.Minute)},
			Decision{Watched: 1, Silent: 1, Remediations: []Remediation{rem(row("ws-a", Rebooting, 30*time.Minute), StepPowerCycle, "no heartbeat for 30m0s; reboot 10m0s ago did not bring it back")}}},
		{"power cycled past cool-down: rebuild", []Row{withStep(row("ws-a", Rebooting, 40*time.Minute), StepPowerCycle, 11*time.Minute)},
			Decision{Watched: 1, Silent: 1, Remediations: []Remediation{rem(row("ws-a", Rebooting, 40*time.Minute), StepRebuild, "no heartbeat for 40m0s; power_cycle 11m0s ago did not bring it back")}}},
		{"rebuilt droplet booting within cool-down: wait", []Row{rebuilt("INITIALIZING", 5*time.Minute)}, Decision{}},
		{"rebuilt droplet not healthy within cool-down: fail", []Row{rebuilt("CONFIGURING", 10*time.Minute)},
			Decision{Remediations: []Remediation{{Workspace: "ws-a", Step: StepFail, Reason: "the rebuilt droplet was not healthy within 10m0s"}}}},
		{"handshake within the boot deadline: wait", []Row{booting("HANDSHAKE", 19*time.Minute)}, Decision{}},
		{"handshake past the boot deadline: rebuild", []Row{booting("HANDSHAKE", 20*time.Minute)},
			Decision{Remediations: []Remediation{rem(booting("HANDSHAKE", 20*time.Minute), StepRebuild, "in HANDSHAKE for 20m0s, past the boot deadline of 20m0s")}}},
		{"booting past the boot deadline: rebuild", []Row{booting("BOOTING", time.Hour)},
			Decision{Remediations: []Remediation{rem(booting("BOOTING", time.Hour), StepRebuild, "in BOOTING for 1h0m0s, past the boot deadline of 20m0s")}}},
		{"deploying past the boot deadline: rebuild", []Row{booting("DEPLOYING", 25*time.Minute)},
			Decision{Remediations: []Remediation{rem(booting("DEPLOYING", 25*time.Minute), StepRebuild, "in DEPLOYING for 25m0s, past the boot deadline of 20m0s")}}},
		{"provisioning, nothing in flight, within its action deadline: the planner re-issues", []Row{booting("PROVISIONING", 59*time.Minute)}, Decision{}},
		{"provisioning, nothing in flight, past its action deadline: fail", []Row{booting("PROVISIONING", time.Hour)},
			Decision{Remediations: []Remediation{{Workspace: "ws-b", Step: StepFail, Reason: "in PROVISIONING for 1h0m0s, past its deadline of 1h0m0s"}}}},
		{"hibernating, nothing in flight, past its deadline: power on", []Row{func() Row { r := booting("HIBERNATING", time.Hour); r.Desired = "hibernated"; return r }()},
			Decision{Remediations: []Remediation{{Workspace: "ws-b", Step: StepPowerCycle, Reason: "in HIBERNATING for 1h0m0s, past its deadline of 1h0m0s; powering the droplet on"}}}},
		{"hibernating again past its deadline after the power-on: fail", []Row{func() Row {
			r := withStep(booting("HIBERNATING", time.Hour), StepPowerCycle, 2*time.Hour)
			r.Desired = "hibernated"
			return r
		}()}, Decision{Remediations: []Remediation{{Workspace: "ws-b", Step: StepFail, Reason: "in HIBERNATING for 1h0m0s, past its deadline of 1h0m0s"}}}},
		{"spare past the boot deadline: not rebuilt", []Row{func() Row { r := booting("HANDSHAKE", time.Hour); r.Workspace = "spare-nyc3-1"; return r }()}, Decision{}},
		{"past the boot deadline with an operation in flight: wait", []Row{func() Row { r := booting("INITIALIZING", time.Hour); r.InFlight = true; return r }()}, Decision{}},
		{"past the boot deadline during an outage: held", append(func() []Row {
			rs := healthyFleet(5)
			for i := range 5 {
				rs = append(rs, since(row(fmt.Sprintf("ws-dead-%d", i), Degraded, 10*time.Minute), 10*time.Minute))
			}
			return rs
		}(), booting("HANDSHAKE", time.Hour)), Decision{Watched: 10, Silent: 5, Outage: true, Held: 1}},
		{"rebuilt droplet in handshake past the boot deadline: fail, no second rebuild", []Row{func() Row {
			r := rebuilt("HANDSHAKE", 10*time.Minute)
			r.StateSince = t0.Add(-time.Hour)
			return r
		}()}, Decision{Remediations: []Remediation{{Workspace: "ws-a", Step: StepFail, Reason: "the rebuilt droplet was not healthy within 10m0s"}}}},
		{"rebuilt droplet healthy: retire the old one", []Row{func() Row {
			r := withStep(row("ws-a", Healthy, time.Minute), StepRebuild, 5*time.Minute)
			r.Replacing = 7
			return r
		}()}, Decision{Watched: 1, Retire: []string{"ws-a"}}},
		{"healthy after a reboot: ladder reset", []Row{withStep(row("ws-a", Healthy, time.Minute), StepReboot, 3*time.Minute)},
			Decision{Watched: 1, Transitions: []Transition{tr(row("ws-a", Healthy, time.Minute), Healthy, "healthy again after reboot", true)}}},
		{"heartbeat back while rebooting, not yet healthy: degraded, the ladder keeps its place", []Row{withStep(row("ws-a", Rebooting, time.Minute), StepReboot, 3*time.Minute)},
			Decision{Watched: 1, Transitions: []Transition{tr(row("ws-a", Rebooting, time.Minute), Degraded, "heartbeat back, not yet reporting healthy", false)}}},
		{"agent-reported degraded after a reboot, within the deadline: nothing (no reset)", []Row{since(withStep(row("ws-a", Degraded, time.Minute), StepReboot, 3*time.Minute), 2*time.Minute)},
			Decision{Watched: 1}},
		{"in flight: counted, not decided", []Row{func() Row { r := row("ws-a", Critical, 20*time.Minute); r.InFlight = true; return r }()}, Decision{Watched: 1, Silent: 1}},
		{"not declared running: ignored", []Row{func() Row { r := row("ws-a", Healthy, time.Hour); r.Desired = "hibernated"; return r }()}, Decision{}},
		{"FAILED stays", []Row{func() Row {
			r := row("ws-a", Failed, time.Hour)
			r.GitHash, r.FailedHash = "h1", "h1"
			return r
		}()}, Decision{}},
		{"FAILED with a changed file: retry", []Row{func() Row {
			r := row("ws-a", Failed, time.Hour)
			r.GitHash, r.FailedHash = "h2", "h1"
			return r
		}()}, Decision{Retry: []string{"ws-a"}}},
		{"one silent of three: remediated, not an outage", append(healthyFleet(2), row("ws-a", Critical, 20*time.Minute)),
			Decision{Watched: 3, Silent: 1, Remediations: []Remediation{rem(row("ws-a", Critical, 20*time.Minute), StepReboot, "no heartbeat for 20m0s")}}},
		{"5 of 10 silent: outage, nothing remediated", func() []Row {
			rs := healthyFleet(5)
			for i := range 5 {
				rs = append(rs, row(fmt.Sprintf("ws-dead-%d", i), Critical, 20*time.Minute))
			}
			return rs
		}(), Decision{Watched: 10, Silent: 5, Outage: true, Held: 5}},
		{"3 of 10 silent: at the limit, not an outage", func() []Row {
			rs := healthyFleet(7)
			for i := range 3 {
				rs = append(rs, row(fmt.Sprintf("ws-dead-%d", i), Critical, 20*time.Minute))
			}
			return rs
		}(), Decision{Watched: 10, Silent: 3, Remediations: []Remediation{
			rem(row("ws-dead-0", Critical, 20*time.Minute), StepReboot, "no heartbeat for 20m0s"),
			rem(row("ws-dead-1", Critical, 20*time.Minute), StepReboot, "no heartbeat for 20m0s"),
			rem(row("ws-dead-2", Critical, 20*time.Minute), StepReboot, "no heartbeat for 20m0s")}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Evaluate(c.rows, policy, t0)
			if diff := cmp.Diff(c.want, got, cmpopts.EquateEmpty(), cmpopts.IgnoreFields(Decision{}, "Health", "Overdue")); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			// Overdue names exactly the workspaces a lifecycle deadline
			// acted on, with the reason the step starts from.
			var want []string
			for _, m := range got.Remediations {
				if strings.Contains(m.Reason, " deadline of ") {
					want = append(want, m.Workspace)
				}
			}
			var overdue []string
			for _, o := range got.Overdue {
				overdue = append(overdue, o.Workspace)
				for _, m := range got.Remediations {
					if m.Workspace == o.Workspace && !strings.HasPrefix(m.Reason, o.Reason) {
						t.Errorf("overdue %s: reason %q is not where the step's %q starts", o.Workspace, o.Reason, m.Reason)
					}
				}
			}
			if !got.Outage && !got.Recovering && !slices.Equal(want, overdue) {
				t.Errorf("overdue %v, want %v", overdue, want)
			}
		})
	}
}

func TestEvaluateHealthCounts(t *testing.T) {
	rows := []Row{row("a", Healthy, 0), row("b", Degraded, 0), row("c", Critical, 20*time.Minute), row("d", Rebooting, 20*time.Minute), row("e", Failed, 0),
		{Workspace: "f", Lifecycle: "INITIALIZING", Desired: "running", Step: StepRebuild, StepAt: t0}, {Workspace: "g", Lifecycle: "INITIALIZING", Desired: "running"}}
	got := Evaluate(rows, policy, t0).Health
	want := map[string]int{"healthy": 1, "degraded": 1, "critical": 3, "failed": 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("health (-want +got):\n%s", diff)
	}
}

// apply does to rows what the executor does for a decision whose actions
// all succeed (a rebuild's new droplet boots; nothing heartbeats).
func apply(rows []Row, d Decision, now time.Time) []Row {
	by := map[string]*Row{}
	for i := range rows {
		by[rows[i].Workspace] = &rows[i]
	}
	for _, tr := range d.Transitions {
		r := by[tr.Workspace]
		if tr.To != r.Lifecycle {
			r.Lifecycle, r.StateSince = tr.To, now
		}
		if tr.Reset {
			r.Step, r.StepAt = StepNone, time.Time{}
		}
	}
	for _, m := range d.Remediations {
		r := by[m.Workspace]
		switch m.Step {
		case StepReboot, StepPowerCycle:
			r.Lifecycle, r.StateSince, r.Step, r.StepAt = Rebooting, now, m.Step, now
		case StepRebuild:
			r.Replacing, r.DropletID = r.DropletID, r.DropletID+1000
			r.Lifecycle, r.StateSince, r.Step, r.StepAt, r.LastHeartbeat = "INITIALIZING", now, m.Step, now, time.Time{}
		case StepFail:
			r.Lifecycle, r.StateSince, r.FailedHash = Failed, now, r.GitHash
		}
	}
	for _, ws := range d.Retire {
		r := by[ws]
		r.Replacing, r.Step, r.StepAt = 0, StepNone, time.Time{}
	}
	for _, ws := range d.Retry {
		r := by[ws]
		r.Lifecycle, r.StateSince, r.Step, r.StepAt, r.FailedHash = Degraded, now, StepNone, time.Time{}, ""
	}
	return rows
}

// TestLadderProperties drives random fleets through time: right after a
// decision is applied, evaluating again takes no new step for a workspace
// within the cool-down of its last one; the ladder only climbs; a healthy
// heartbeat resets it; outages hold every step.
func TestLadderProperties(t *testing.T) {
	states := []lifecycle.State{Healthy, Degraded, Critical, Rebooting}
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		var rows []Row
		n := 1 + rng.IntN(8)
		for i := range n {
			r := row(fmt.Sprintf("ws-%d", i), states[rng.IntN(len(states))], time.Duration(rng.IntN(40))*time.Minute)
			r.GitHash = "h"
			rows = append(rows, r)
		}
		now := t0
		lastStep := map[string]time.Time{}
		rank := map[Step]int{StepNone: 0, StepReboot: 1, StepPowerCycle: 2, StepRebuild: 3, StepFail: 4}
		for range 40 {
			before := map[string]Step{}
			for _, r := range rows {
				before[r.Workspace] = r.Step
			}
			d := Evaluate(rows, policy, now)
			if d.Outage && len(d.Remediations) > 0 {
				t.Fatalf("seed %d: remediation during an outage: %+v", seed, d.Remediations)
			}
			for _, m := range d.Remediations {
				if at, ok := lastStep[m.Workspace]; ok && now.Sub(at) < policy.Cooldown {
					t.Fatalf("seed %d: %s: %s %s after the previous step, within the cool-down", seed, m.Workspace, m.Step, now.Sub(at))
				}
				if rank[m.Step] != rank[before[m.Workspace]]+1 {
					t.Fatalf("seed %d: %s: step %s after %q skips or repeats a rung", seed, m.Workspace, m.Step, before[m.Workspace])
				}
				lastStep[m.Workspace] = now
			}
			rows = apply(rows, d, now)
			// Evaluated again at once: nothing new for what was just done.
			again := Evaluate(rows, policy, now)
			for _, m := range again.Remediations {
				if at, ok := lastStep[m.Workspace]; ok && now.Sub(at) < policy.Cooldown {
					t.Fatalf("seed %d: %s: a second evaluation took %s again", seed, m.Workspace, m.Step)
				}
			}
			// Time passes; some droplets come back healthy.
			now = now.Add(time.Duration(1+rng.IntN(6)) * time.Minute)
			for i := range rows {
				r := &rows[i]
				if r.Lifecycle != Failed && rng.IntN(10) == 0 {
					r.LastHeartbeat = now
					if r.Lifecycle != "INITIALIZING" || r.Step == StepRebuild {
						r.Lifecycle = Healthy
					}
					delete(lastStep, r.Workspace)
				}
			}
			d = Evaluate(rows, policy, now)
			for _, tr := range d.Transitions {
				r := rows[indexOf(rows, tr.Workspace)]
				if r.Lifecycle == Healthy && r.Step != StepNone && !tr.Reset {
					t.Fatalf("seed %d: %s healthy after %s, ladder not reset", seed, r.Workspace, r.Step)
				}
			}
			rows = apply(rows, d, now)
		}
	}
}

// TestBootDeadlineProperties drives droplets that never become healthy
// (any pre-ACTIVE state, any age, random evaluation intervals): each is
// rebuilt once, no earlier than BootDeadline after it entered its state,
// and FAILED once the rebuilt droplet was not healthy for Cooldown; it is
// never rebuilt twice and nothing happens to it after FAILED.
func TestBootDeadlineProperties(t *testing.T) {
	states := lifecycle.PreActive()
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 11))
		since := time.Duration(rng.IntN(60)) * time.Minute
		rows := []Row{{Workspace: "ws-stuck", Lifecycle: states[rng.IntN(len(states))], Desired: "running", DropletID: 5, StateSince: t0.Add(-since), GitHash: "h"}}
		entered := rows[0].StateSince
		now := t0
		var rebuiltAt, failedAt time.Time
		for range 60 {
			d := Evaluate(rows, policy, now)
			for _, m := range d.Remediations {
				switch m.Step {
				case StepRebuild:
					if !rebuiltAt.IsZero() {
						t.Fatalf("seed %d: rebuilt twice", seed)
					}
					if now.Sub(entered) < policy.BootDeadline {
						t.Fatalf("seed %d: rebuilt %s after entering %s, before the boot deadline", seed, now.Sub(entered), rows[0].Lifecycle)
					}
					rebuiltAt = now
				case StepFail:
					if rebuiltAt.IsZero() || now.Sub(rebuiltAt) < policy.Cooldown {
						t.Fatalf("seed %d: FAILED %v after the rebuild, want a rebuild and then Cooldown first", seed, now.Sub(rebuiltAt))
					}
					failedAt = now
				default:
					t.Fatalf("seed %d: step %s for a droplet that never was healthy", seed, m.Step)
				}
			}
			if !failedAt.IsZero() && len(d.Remediations) > 0 && failedAt != now {
				t.Fatalf("seed %d: %v after FAILED", seed, d.Remediations)
			}
			rows = apply(rows, d, now)
			now = now.Add(time.Duration(1+rng.IntN(5)) * time.Minute)
		}
		if rebuiltAt.IsZero() || failedAt.IsZero() || rows[0].Lifecycle != Failed {
			t.Fatalf("seed %d: rebuilt at %v, failed at %v, state %s; want rebuilt, then FAILED", seed, rebuiltAt, failedAt, rows[0].Lifecycle)
		}
	}
}

func indexOf(rows []Row, ws string) int {
	for i, r := range rows {
		if r.Workspace == ws {
			return i
		}
	}
	return -1
}

func TestProblems(t *testing.T) {
	ok := schema.Heartbeat{Components: map[string]schema.ComponentHealth{"n8n": {OK: true}, "caddy": {OK: true}},
		MemoryUsed: 50, MemoryTotal: 100, DiskUsed: 90, DiskTotal: 100}
	cases := []struct {
		name string
		edit func(*schema.Heartbeat)
		want []string
	}{
		{"ok", func(*schema.Heartbeat) {}, nil},
		{"unknown totals are not pressure", func(h *schema.Heartbeat) { h.MemoryTotal, h.DiskTotal = 0, 0 }, nil},
		{"components down", func(h *schema.Heartbeat) {
			h.Components = map[string]schema.ComponentHealth{"n8n": {OK: false}, "caddy": {OK: false, Detail: "load failed"}}
		}, []string{"component caddy down", "component n8n down"}},
		{"verify and apply errors", func(h *schema.Heartbeat) { h.VerifyError, h.ApplyError = "bad signature", "n8n 500" },
			[]string{"manifest verification failed", "manifest apply failed"}},
		{"memory and disk pressure", func(h *schema.Heartbeat) { h.MemoryUsed, h.DiskUsed = 91, 1<<62; h.DiskTotal = 1 << 62 },
			[]string{"memory above 90%", "disk above 90%"}},
		{"disk past 90%", func(h *schema.Heartbeat) { h.DiskUsed, h.DiskTotal = 95<<30, 100<<30 }, []string{"disk above 90%"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hb := ok
			hb.Components = map[string]schema.ComponentHealth{}
			for k, v := range ok.Components {
				hb.Components[k] = v
			}
			c.edit(&hb)
			if diff := cmp.Diff(c.want, Problems(hb)); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzProblems: any heartbeat the protocol decoder accepts is judged
// without panicking, and a judged-ok one has every component up.
func FuzzProblems(f *testing.F) {
	f.Add([]byte(`{"workspace":"ws-a","droplet":"1","seq":1,"components":{"n8n":{"ok":false}},"memory_used_bytes":18446744073709551615,"memory_total_bytes":1}`))
	f.Add([]byte(`{"disk_used_bytes":5,"disk_total_bytes":0,"verify_error":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var hb schema.Heartbeat
		if err := schema.DecodeStrict(body, &hb); err != nil {
			return
		}
		if len(Problems(hb)) == 0 {
			for name, c := range hb.Components {
				if !c.OK {
					t.Fatalf("component %s down but no problem reported", name)
				}
			}
		}
	})
}

// TestOperatorStep: a step an operator asked for runs at the next
// evaluation whatever the tenant's health, also during an outage (the
// guard holds only automatic remediation), and not for a tenant with an
// operation in flight, no droplet or not declared running.
func TestOperatorStep(t *testing.T) {
	asked := func(r Row, s Step) Row { r.Requested, r.RequestedBy, r.RequestReason = s, "ops", "ticket 1"; return r }
	for _, c := range []struct {
		name string
		rows []Row
		want []Remediation
	}{
		{"healthy", []Row{asked(row("ws-a", Healthy, time.Minute), StepReboot)},
			[]Remediation{{Workspace: "ws-a", Step: StepReboot, Reason: "operator ops: ticket 1", Heartbeat: t0.Add(-time.Minute)}}},
		{"during an outage", append([]Row{asked(row("ws-a", Degraded, 10*time.Minute), StepRebuild)},
			row("ws-b", Degraded, 10*time.Minute), row("ws-c", Degraded, 10*time.Minute)),
			[]Remediation{{Workspace: "ws-a", Step: StepRebuild, Reason: "operator ops: ticket 1", Heartbeat: t0.Add(-10 * time.Minute)}}},
		{"in flight", []Row{func() Row { r := asked(row("ws-a", Healthy, time.Minute), StepReboot); r.InFlight = true; return r }()}, nil},
		{"no droplet", []Row{func() Row { r := asked(row("ws-a", Healthy, time.Minute), StepReboot); r.DropletID = 0; return r }()}, nil},
		{"not running", []Row{func() Row {
			r := asked(row("ws-a", Healthy, time.Minute), StepReboot)
			r.Desired = "hibernated"
			return r
		}()}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Evaluate(c.rows, policy, t0)
			var got []Remediation
			for _, m := range d.Remediations {
				if m.Workspace == "ws-a" {
					got = append(got, m)
				}
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("remediations of ws-a (-want +got):\n%s (outage %v)", diff, d.Outage)
			}
		})
	}
}
