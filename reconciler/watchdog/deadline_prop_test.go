package watchdog

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// history is one workspace's row in a random history, changed only the
// way the real writers change it: heartbeats by lifecycle.OnHeartbeat,
// actions by lifecycle.Start/Created/Finished/FailedFrom, the watchdog's
// decisions as the store applies them.
type history struct {
	rng  *rand.Rand
	row  Row
	now  time.Time
	log  []string
	seed uint64
}

func (h *history) enter(s lifecycle.State) {
	if s != "" && s != h.row.Lifecycle {
		h.row.Lifecycle, h.row.StateSince = s, h.now
	}
}

// step applies one random input.
func (h *history) step() {
	r := h.rng
	actions := []lifecycle.Action{lifecycle.Create, lifecycle.Wake, lifecycle.Hibernate, lifecycle.Resize, lifecycle.Destroy, lifecycle.Reboot,
		lifecycle.PowerCycle, lifecycle.Rebuild, lifecycle.Adopt}
	switch k := r.IntN(10); {
	case k < 3: // time passes
		d := time.Duration(r.IntN(40)) * time.Minute
		h.now = h.now.Add(d)
		h.log = append(h.log, fmt.Sprintf("+%s", d))
	case k < 6: // a heartbeat of the recorded droplet
		if h.row.DropletID == 0 {
			return
		}
		hb := lifecycle.Heartbeat{OK: r.IntN(2) == 0, Applied: int64(r.IntN(3)), Issued: int64(r.IntN(3))}
		h.enter(lifecycle.OnHeartbeat(h.row.Lifecycle, hb))
		h.row.LastHeartbeat = h.now
		h.log = append(h.log, fmt.Sprintf("heartbeat %+v → %s", hb, h.row.Lifecycle))
	case k == 6: // an action starts (and runs, in flight)
		a := actions[r.IntN(len(actions))]
		h.enter(lifecycle.Start(a))
		h.row.InFlight = true
		h.log = append(h.log, fmt.Sprintf("start %s → %s", a, h.row.Lifecycle))
	case k == 7: // the action in flight ends
		if !h.row.InFlight {
			return
		}
		h.row.InFlight = false
		switch r.IntN(3) {
		case 0:
			h.enter(lifecycle.Created(h.row.Lifecycle))
		case 1:
			h.enter(lifecycle.Finished(actions[r.IntN(len(actions))], r.IntN(2) == 0))
			h.row.DropletID = 1 + r.IntN(2)
		default:
			h.enter(lifecycle.FailedFrom(h.row.Lifecycle, h.row.DropletID != 0))
		}
		h.log = append(h.log, fmt.Sprintf("action ended → %s", h.row.Lifecycle))
	case k == 8: // the tenant's file changes its declared state
		h.row.Desired = []string{"running", "hibernated", "absent"}[r.IntN(3)]
		h.log = append(h.log, "desired "+h.row.Desired)
	default: // anything a crash or an old version may leave behind
		h.enter(lifecycle.All()[r.IntN(len(lifecycle.All()))])
		h.row.InFlight = false
		if r.IntN(2) == 0 {
			h.row.DropletID = 0
		} else {
			h.row.DropletID = 1
		}
		h.log = append(h.log, fmt.Sprintf("left in %s (droplet %d)", h.row.Lifecycle, h.row.DropletID))
	}
}

// apply carries out a decision as the store does.
func (h *history) apply(d Decision) {
	for _, tr := range d.Transitions {
		h.enter(tr.To)
		if tr.Reset {
			h.row.Step, h.row.StepAt = StepNone, time.Time{}
		}
	}
	for _, m := range d.Remediations {
		switch m.Step {
		case StepFail:
			h.enter(lifecycle.Failed)
		default:
			a := map[Step]lifecycle.Action{StepReboot: lifecycle.Reboot, StepPowerCycle: lifecycle.PowerCycle, StepRebuild: lifecycle.Rebuild}[m.Step]
			h.row.Lifecycle, h.row.StateSince = lifecycle.Start(a), h.now
			h.row.Step, h.row.StepAt = m.Step, h.now
		}
	}
	if len(d.Retry) > 0 {
		h.enter(lifecycle.Retried(h.row.DropletID != 0))
	}
}

// TestNoStateOutlivesItsDeadline drives random histories (heartbeats of
// every kind, actions that start, succeed or fail, time steps of up to 40
// minutes, changes of the declared state, and rows left in any state by a
// crash) through Evaluate, as the leader does after every input: whenever
// a workspace that no operation holds is past the deadline of its
// non-steady state (lifecycle.Due), Evaluate decides something for it
// (its deadline's consequence, or a health transition that moves it).
// One workspace per fleet, so the outage guard never holds (it holds
// steps on purpose: a fleet-wide silence is not the droplets'); spares
// are exempt (they are replaced by the planner, not remediated), and so is
// PENDING while declared hibernated or absent (lifecycle.NothingToDo).
func TestNoStateOutlivesItsDeadline(t *testing.T) {
	lp := policy.Lifecycle()
	decided := 0
	for seed := range uint64(2000) {
		h := &history{rng: rand.New(rand.NewPCG(seed, 16)), now: t0, seed: seed,
			row: Row{Workspace: "ws-prop", Lifecycle: lifecycle.Pending, Desired: "running", StateSince: t0, GitHash: "h1"}}
		for range 80 {
			h.step()
			d := Evaluate([]Row{h.row}, policy, h.now)
			r := h.row
			if !r.InFlight && !r.Lifecycle.Steady() && !lifecycle.NothingToDo(r.Lifecycle, r.Desired) && lifecycle.Due(r.Lifecycle, r.StateSince, r.StepAt, h.now, lp) {
				if len(d.Transitions)+len(d.Remediations)+len(d.Retire)+len(d.Retry) == 0 {
					t.Fatalf("seed %d: %s since %s (step %q at %s) is past its deadline at %s and nothing was decided; history:\n%v",
						seed, r.Lifecycle, r.StateSince.Sub(t0), r.Step, r.StepAt.Sub(t0), h.now.Sub(t0), h.log)
				}
				decided++
			}
			h.apply(d)
		}
	}
	// The histories do reach deadlines (the property is not vacuous).
	if decided < 1000 {
		t.Errorf("only %d deadlines reached in 2000 histories", decided)
	}
	if !slices.ContainsFunc(lifecycle.All(), func(s lifecycle.State) bool { return !s.Steady() }) {
		t.Fatal("no non-steady state")
	}
}
