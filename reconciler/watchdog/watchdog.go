// Package watchdog decides, from heartbeat ages alone, which running
// droplets are healthy, degraded or critical, and how a critical one is
// remediated. It is pure: Evaluate is a function of the fleet's rows, the
// fleet's policy and the time, and the reconciler's leader carries out what
// it returns (journaled, through the per-account scheduler).
//
// Health (seed 2.3, 4.9): no heartbeat for DegradedAfter moves
// ACTIVE_HEALTHY to ACTIVE_DEGRADED, for CriticalAfter to ACTIVE_CRITICAL
// (lifecycle.OnSilence).
// A heartbeat moves the droplet back (the heartbeat writer does that as it
// stores an ok heartbeat of an agent that runs its latest manifest; a
// heartbeat that reports problems, see Problems, makes it ACTIVE_DEGRADED
// there too, never critical).
//
// Remediation is a ladder, one step per cool-down: a tenant that was
// ACTIVE_CRITICAL when evaluated is rebooted; if no heartbeat came Cooldown
// after that, power-cycled; then rebuilt (a new droplet from its latest
// snapshot, or a fresh one); then FAILED. Each step waits Cooldown since the
// previous one, so the ladder never flaps, and a healthy report after a
// step resets it (one that comes back degraded keeps its place, so it is
// not rebooted over and over). A rebuilt droplet replaces the old one only
// once it reports healthy: the old one is then retired (destroyed); if it
// is not healthy within Cooldown, the tenant is FAILED. FAILED stays until a person asks
// for a retry (API) or changes the tenant's file in git.
//
// The boot deadline: a droplet that stays in one pre-ACTIVE state
// (BOOTING, INITIALIZING, HANDSHAKE, CONFIGURING, DEPLOYING) for
// BootDeadline is rebuilt (a new droplet with new user data, so a new
// provisioning token: nothing strands a tenant whose agent could not
// enroll), and a rebuilt droplet that is not healthy within Cooldown is
// FAILED, which alerts (GenesisTenantFailed).
//
// Deadlines: every deadline is package lifecycle's (lifecycle.Due, counted
// from when the state was entered and never sooner than Cooldown after the
// last step), and so is its consequence (lifecycle.OnDeadline): the boot
// deadline above; ACTIVE_DEGRADED still degraded (its agent heartbeats but
// reports problems, e.g. n8n down) takes the ladder's next step;
// HIBERNATING nobody finishes is powered on (a power cycle; the planner
// then retries the hibernation), then FAILED; PENDING, PROVISIONING,
// WAKING and DESTROYING that no operation holds are FAILED. A tenant not
// declared running is held to the deadlines of its actions' states only,
// FAILED instead of rebuilt or laddered; a tenant declared hibernated or
// absent that was never created (PENDING) waits for nothing.
//
// The outage guard: when more than OutagePercent of the watched droplets
// (and at least OutageMinSilent of them) are silent at once, the silence is
// the reconciler's network or DigitalOcean, not the droplets: no step is
// taken (health states still move) until it ends, and for OutageGrace more
// (Policy.LastOutage, the caller's memory of the last outage it saw): when a
// partition heals, agents come back over a heartbeat interval or so, and
// the first ones back must not get the late ones rebooted for the
// outage's silence.
package watchdog

import (
	"fmt"
	"sort"
	"time"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// Step is a rung of the remediation ladder.
type Step string

// The ladder, in order.
const (
	StepNone       Step = ""
	StepReboot     Step = "reboot"
	StepPowerCycle Step = "power_cycle"
	StepRebuild    Step = "rebuild"
	StepFail       Step = "fail"
	// StepSnapshot is no rung: an operator's snapshot of the running
	// droplet (POST /v1/tenants/{id}/actions), taken by the watchdog's
	// run like a requested step, without touching the tenant's health or
	// ladder.
	StepSnapshot Step = "snapshot"
)

// Next is the step after s.
func (s Step) Next() Step {
	switch s {
	case StepNone:
		return StepReboot
	case StepReboot:
		return StepPowerCycle
	case StepPowerCycle:
		return StepRebuild
	default:
		return StepFail
	}
}

// Lifecycle states the watchdog reads and writes (package lifecycle's).
const (
	Healthy   = lifecycle.ActiveHealthy
	Degraded  = lifecycle.ActiveDegraded
	Critical  = lifecycle.ActiveCritical
	Rebooting = lifecycle.Rebooting
	Failed    = lifecycle.Failed
)

// DefaultOutageMinSilent is the fewest silent droplets that make an outage:
// in a fleet of three, one dead droplet is a third of it, and it must
// still be remediated.
const DefaultOutageMinSilent = 2

// Policy is the watchdog's configuration (genesis.yaml spec.watchdog).
type Policy struct {
	DegradedAfter   time.Duration
	CriticalAfter   time.Duration
	Cooldown        time.Duration
	OutagePercent   float64
	OutageMinSilent int
	// BootDeadline is the longest a droplet may stay in one pre-ACTIVE
	// state (BOOTING through DEPLOYING) before it is rebuilt.
	BootDeadline time.Duration
	// OutageGrace is how long remediation stays held after the last
	// outage was seen (default DegradedAfter); LastOutage is when that was
	// (zero: never). The caller remembers it: Evaluate is pure.
	OutageGrace time.Duration
	LastOutage  time.Time
}

// PolicyFrom reads genesis.yaml's watchdog settings, with the defaults for
// what is left out.
func PolicyFrom(w schema.Watchdog) Policy {
	p := Policy{DegradedAfter: w.DegradedAfter.Std(), CriticalAfter: w.CriticalAfter.Std(), Cooldown: w.Cooldown.Std(),
		OutagePercent: w.OutagePercent, OutageMinSilent: DefaultOutageMinSilent, BootDeadline: w.BootDeadline.Std()}
	if p.DegradedAfter <= 0 {
		p.DegradedAfter = schema.DefaultDegradedAfter
	}
	if p.CriticalAfter <= 0 {
		p.CriticalAfter = schema.DefaultCriticalAfter
	}
	if p.Cooldown <= 0 {
		p.Cooldown = schema.DefaultRemediateCooldown
	}
	if p.OutagePercent <= 0 {
		p.OutagePercent = schema.DefaultOutagePercent
	}
	if p.BootDeadline <= 0 {
		p.BootDeadline = schema.DefaultBootDeadline
	}
	p.OutageGrace = p.DegradedAfter
	return p
}

// Lifecycle is the part of p the lifecycle's deadlines are made of.
func (p Policy) Lifecycle() lifecycle.Policy {
	return lifecycle.Policy{DegradedAfter: p.DegradedAfter, CriticalAfter: p.CriticalAfter, Cooldown: p.Cooldown, BootDeadline: p.BootDeadline}
}

// Row is one workspace as the watchdog sees it (fleet_status, plus what the
// reconciler knows).
type Row struct {
	Workspace string
	Lifecycle lifecycle.State
	// Desired is the recorded desired state: running tenants are watched
	// for silence and remediated; the others only held to the deadlines
	// of their actions' states.
	Desired string
	// DropletID, DropletName and Account are the current droplet (the
	// executor's, for the step's action).
	DropletID   int
	DropletName string
	Account     string
	// StateSince is when Lifecycle was entered; heartbeat age counts from
	// it when the droplet never sent a heartbeat.
	StateSince    time.Time
	LastHeartbeat time.Time
	// Step is the last remediation step taken, at StepAt.
	Step   Step
	StepAt time.Time
	// Replacing is the droplet a rebuild replaces (0: none).
	Replacing int
	// InFlight: an operation runs for the workspace; no new decision.
	InFlight bool
	// GitHash is the tenant's file in git now, FailedHash what it was when
	// the tenant was FAILED: a change asks for a retry.
	GitHash    string
	FailedHash string
	// Requested is the step an operator asked for (POST
	// /v1/tenants/{id}/actions; "" none), by RequestedBy with RequestReason.
	Requested                  Step
	RequestedBy, RequestReason string
	RequestedAt                time.Time
}

// Transition moves one workspace between health states; Reset also clears
// its remediation ladder.
type Transition struct {
	Workspace string
	From, To  lifecycle.State
	Reason    string
	Reset     bool
	// Heartbeat is the LastHeartbeat the decision was made on: the
	// executor writes only if it is unchanged (a heartbeat that arrived
	// since wins).
	Heartbeat time.Time
}

// Remediation is a ladder step due for a workspace.
type Remediation struct {
	Workspace string
	Step      Step
	Reason    string
	Heartbeat time.Time
}

// Decision is what Evaluate decided.
type Decision struct {
	Transitions  []Transition
	Remediations []Remediation
	// Retire lists workspaces whose rebuilt droplet is healthy: the
	// droplet it replaced is destroyed and the ladder reset.
	Retire []string
	// Retry lists FAILED workspaces whose tenant file changed.
	Retry []string
	// Overdue lists the workspaces found past their lifecycle state's
	// deadline in this run (a person hears of it; the step taken, if
	// any, is in Remediations), with the reason.
	Overdue []Remediation
	// Outage is set when too much of the fleet is silent at once: no
	// remediation is decided. Held counts the steps it held back.
	Outage bool
	// Recovering is set within OutageGrace after an outage: no
	// remediation is decided either (Held counts them too).
	Recovering bool
	Held       int
	// Watched is how many droplets are watched (ACTIVE_*, REBOOTING),
	// Silent how many of them sent nothing for DegradedAfter.
	Watched, Silent int
	// Health counts running tenants by health: healthy, degraded,
	// critical (also rebooting and rebuilding), failed.
	Health map[string]int
}

// Evaluate decides transitions, ladder steps, retirements and retries for
// rows at now. Rows are judged independently except for the outage guard.
// Every deadline is lifecycle.Due's, and its consequence
// lifecycle.OnDeadline's.
func Evaluate(rows []Row, p Policy, now time.Time) Decision {
	d := Decision{Health: map[string]int{}}
	lp := p.Lifecycle()
	watched, rebuilding, preActive := lifecycle.Watched(), lifecycle.Rebuilding(), lifecycle.PreActive()
	rows = append([]Row(nil), rows...)
	sort.Slice(rows, func(i, j int) bool { return rows[i].Workspace < rows[j].Workspace })
	age := func(r Row) time.Duration {
		last := r.LastHeartbeat
		if last.IsZero() {
			last = r.StateSince
		}
		return now.Sub(last)
	}
	for _, r := range rows {
		if r.Desired != string(schema.StateRunning) {
			continue
		}
		switch {
		case r.Lifecycle == Failed:
			d.Health["failed"]++
		case r.Lifecycle == Healthy:
			d.Health["healthy"]++
		case r.Lifecycle == Degraded:
			d.Health["degraded"]++
		case r.Lifecycle == Critical || r.Lifecycle == Rebooting || (r.Step == StepRebuild && r.Lifecycle.In(rebuilding)):
			d.Health["critical"]++
		}
		if r.Lifecycle.In(watched) {
			d.Watched++
			if age(r) >= p.DegradedAfter {
				d.Silent++
			}
		}
	}
	if d.Silent >= max(p.OutageMinSilent, 1) && 100*float64(d.Silent) > p.OutagePercent*float64(d.Watched) {
		d.Outage = true
	} else if !p.LastOutage.IsZero() && now.Sub(p.LastOutage) < p.OutageGrace {
		d.Recovering = true
	}
	remediate := func(r Row, s Step, reason string) {
		if d.Outage || d.Recovering {
			d.Held++
			return
		}
		d.Remediations = append(d.Remediations, Remediation{Workspace: r.Workspace, Step: s, Reason: reason, Heartbeat: r.LastHeartbeat})
	}
	for _, r := range rows {
		if r.InFlight {
			// An operation owns the workspace (its own retries).
			continue
		}
		running := r.Desired == string(schema.StateRunning)
		if r.Requested != StepNone && running && r.DropletID != 0 && r.Lifecycle.In(watched) {
			// A person asked for this step: it runs now, whatever the
			// health, and an outage does not hold it (the ladder's
			// guard is against automatic mass remediation).
			d.Remediations = append(d.Remediations, Remediation{Workspace: r.Workspace, Step: r.Requested,
				Reason: fmt.Sprintf("operator %s: %s", r.RequestedBy, r.RequestReason), Heartbeat: r.LastHeartbeat})
			continue
		}
		if r.Lifecycle == Failed {
			if r.FailedHash != "" && r.GitHash != "" && r.GitHash != r.FailedHash {
				d.Retry = append(d.Retry, r.Workspace)
			}
			continue
		}
		if running && r.Step == StepRebuild && r.Lifecycle.In(rebuilding) {
			if now.Sub(r.StepAt) >= p.Cooldown {
				remediate(r, StepFail, fmt.Sprintf("the rebuilt droplet was not healthy within %s", p.Cooldown))
			}
			continue
		}
		if running && r.Lifecycle.In(watched) {
			evaluateWatched(&d, r, p, now, age(r), remediate)
			continue
		}
		if schema.IsSpareWorkspace(r.Workspace) || lifecycle.NothingToDo(r.Lifecycle, r.Desired) ||
			!lifecycle.Due(r.Lifecycle, r.StateSince, r.StepAt, now, lp) {
			// A spare has no tenant to rebuild or fail: it is never
			// ready, so never assigned, and the planner replaces it.
			// A tenant declared hibernated or absent that was never
			// created waits for nothing.
			continue
		}
		since := now.Sub(r.StateSince).Round(time.Second)
		limit, _ := lifecycle.Deadline(r.Lifecycle, lp)
		reason := fmt.Sprintf("in %s for %s, past its deadline of %s", r.Lifecycle, since, limit)
		if r.Lifecycle.In(preActive) {
			reason = fmt.Sprintf("in %s for %s, past the boot deadline of %s", r.Lifecycle, since, limit)
		}
		d.Overdue = append(d.Overdue, Remediation{Workspace: r.Workspace, Reason: reason, Heartbeat: r.LastHeartbeat})
		switch lifecycle.OnDeadline(r.Lifecycle) {
		case lifecycle.RebuildDroplet:
			// The boot deadline: a droplet that never became healthy
			// (its agent cannot enroll: a lost or expired token, a
			// broken image) gets a new droplet with new user data and
			// a new token; if that one is not healthy within Cooldown
			// either, the rule above FAILs the tenant.
			if running {
				remediate(r, StepRebuild, reason)
			} else {
				remediate(r, StepFail, reason+"; not rebuilt: the tenant is not declared running")
			}
		case lifecycle.PowerOn:
			// A hibernation nobody finishes: its droplet may be off
			// after a failed snapshot. Power it on (the planner then
			// tries the hibernation again); FAILED the next time.
			if r.DropletID != 0 && r.Step != StepPowerCycle {
				remediate(r, StepPowerCycle, reason+"; powering the droplet on")
			} else {
				remediate(r, StepFail, reason)
			}
		default:
			// Fail, or a ladder state of a tenant not declared running
			// (the planner hibernates or destroys it, not the ladder).
			remediate(r, StepFail, reason)
		}
	}
	return d
}

// evaluateWatched judges a running tenant in a watched state (ACTIVE_*,
// REBOOTING): silence moves its health, a heartbeat after a step brings it
// back, and a state past its deadline takes the ladder's next step.
func evaluateWatched(d *Decision, r Row, p Policy, now time.Time, a time.Duration, remediate func(Row, Step, string)) {
	silent := a >= p.DegradedAfter
	// back: a heartbeat came after the last step was taken.
	back := r.LastHeartbeat.After(r.StepAt)
	move := func(to lifecycle.State, reason string, reset bool) {
		d.Transitions = append(d.Transitions, Transition{Workspace: r.Workspace, From: r.Lifecycle, To: to, Reason: reason,
			Reset: reset, Heartbeat: r.LastHeartbeat})
	}
	ladder := func(reason string) {
		if r.Step != StepNone {
			reason += fmt.Sprintf("; %s %s ago did not bring it back", r.Step, now.Sub(r.StepAt).Round(time.Second))
		}
		remediate(r, r.Step.Next(), reason)
	}
	due := lifecycle.Due(r.Lifecycle, r.StateSince, r.StepAt, now, p.Lifecycle())
	switch {
	case r.Lifecycle == Healthy && !silent && r.Replacing != 0:
		d.Retire = append(d.Retire, r.Workspace)
	case r.Lifecycle == Healthy && !silent && r.Step != StepNone:
		move(Healthy, fmt.Sprintf("healthy again after %s", r.Step), true)
	case (r.Lifecycle == Critical && a < p.CriticalAfter) || (r.Lifecycle == Rebooting && back):
		// Back, but not reporting healthy: the ladder keeps its
		// place (only a healthy report resets it), so a droplet that
		// comes back degraded is not rebooted over and over.
		move(Degraded, "heartbeat back, not yet reporting healthy", false)
	case lifecycle.OnSilence(r.Lifecycle, a, p.Lifecycle()) != "":
		move(lifecycle.OnSilence(r.Lifecycle, a, p.Lifecycle()), fmt.Sprintf("no heartbeat for %s", a.Round(time.Second)), false)
	case (r.Lifecycle == Critical || r.Lifecycle == Rebooting) && due:
		// Remediate only what was already critical when evaluated: the
		// state is seen before the first step is taken.
		ladder(fmt.Sprintf("no heartbeat for %s", a.Round(time.Second)))
	case r.Lifecycle == Degraded && due:
		// Degraded while its agent heartbeats (it reports problems:
		// n8n down, a manifest not applied, pressure) past the
		// deadline: remediated like a silent one.
		ladder(fmt.Sprintf("%s for %s while its agent reports problems", Degraded, now.Sub(r.StateSince).Round(time.Second)))
	}
}
