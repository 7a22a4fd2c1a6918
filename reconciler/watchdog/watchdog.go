// Package watchdog decides, from heartbeat ages alone, which running
// droplets are healthy, degraded or critical, and how a critical one is
// remediated. It is pure: Evaluate is a function of the fleet's rows, the
// fleet's policy and the time, and the reconciler's leader carries out what
// it returns (journaled, through the per-account scheduler).
//
// Health (seed 2.3, 4.9): no heartbeat for DegradedAfter moves
// ACTIVE_HEALTHY to ACTIVE_DEGRADED, for CriticalAfter to ACTIVE_CRITICAL.
// A heartbeat moves the droplet back (the heartbeat writer does that as it
// stores an ok heartbeat of an agent that runs its latest manifest; a
// heartbeat that reports problems, see Problems, makes it ACTIVE_DEGRADED
// there too, never critical).
//
// Remediation is a ladder, one step per cool-down: a tenant that was
// ACTIVE_CRITICAL when evaluated is rebooted; if no heartbeat came Cooldown
// after that, power-cycled; then rebuilt (a new droplet from its latest
// snapshot, or a fresh one); then FAILED. Each step waits Cooldown since the
// previous one, so the ladder never flaps, and any heartbeat after a step
// resets it. A rebuilt droplet replaces the old one only once it reports
// healthy: the old one is then retired (destroyed); if it is not healthy
// within Cooldown, the tenant is FAILED. FAILED stays until a person asks
// for a retry (API) or changes the tenant's file in git.
//
// The boot deadline: a droplet that stays in one pre-ACTIVE state
// (BOOTING, INITIALIZING, HANDSHAKE, CONFIGURING, DEPLOYING) for
// BootDeadline is rebuilt (a new droplet with new user data, so a new
// provisioning token: nothing strands a tenant whose agent could not
// enroll), and a rebuilt droplet that is not healthy within Cooldown is
// FAILED, which alerts (GenesisTenantFailed).
//
// The outage guard: when more than OutagePercent of the watched droplets
// (and at least OutageMinSilent of them) are silent at once, the silence is
// the reconciler's network or DigitalOcean, not the droplets: no step is
// taken (health states still move) until it ends.
package watchdog

import (
	"fmt"
	"sort"
	"time"

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

// Lifecycle states the watchdog reads and writes (fleet_status.state).
const (
	Healthy   = "ACTIVE_HEALTHY"
	Degraded  = "ACTIVE_DEGRADED"
	Critical  = "ACTIVE_CRITICAL"
	Rebooting = "REBOOTING"
	Failed    = "FAILED"
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
	return p
}

// Row is one workspace as the watchdog sees it (fleet_status, plus what the
// reconciler knows).
type Row struct {
	Workspace string
	Lifecycle string
	// Desired is the declared state; only running tenants are watched.
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
}

// Transition moves one workspace between health states; Reset also clears
// its remediation ladder.
type Transition struct {
	Workspace string
	From, To  string
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
	// Outage is set when too much of the fleet is silent at once: no
	// remediation is decided. Held counts the steps it held back.
	Outage bool
	Held   int
	// Watched is how many droplets are watched (ACTIVE_*, REBOOTING),
	// Silent how many of them sent nothing for DegradedAfter.
	Watched, Silent int
	// Health counts running tenants by health: healthy, degraded,
	// critical (also rebooting and rebuilding), failed.
	Health map[string]int
}

// active are the states of a droplet that has been healthy once and is
// watched for silence.
var active = map[string]bool{Healthy: true, Degraded: true, Critical: true, Rebooting: true}

// booting are the states a rebuilt droplet passes before it is healthy.
var booting = map[string]bool{"PROVISIONING": true, "BOOTING": true, "INITIALIZING": true, "HANDSHAKE": true,
	"CONFIGURING": true, "DEPLOYING": true}

// preActive are the states between a droplet's create and its first
// healthy report; each is left within BootDeadline or the droplet is
// rebuilt.
var preActive = map[string]bool{"BOOTING": true, "INITIALIZING": true, "HANDSHAKE": true, "CONFIGURING": true, "DEPLOYING": true}

// Evaluate decides transitions, ladder steps, retirements and retries for
// rows at now. Rows are judged independently except for the outage guard.
func Evaluate(rows []Row, p Policy, now time.Time) Decision {
	d := Decision{Health: map[string]int{}}
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
		case r.Lifecycle == Critical || r.Lifecycle == Rebooting || (r.Step == StepRebuild && booting[r.Lifecycle]):
			d.Health["critical"]++
		}
		if active[r.Lifecycle] {
			d.Watched++
			if age(r) >= p.DegradedAfter {
				d.Silent++
			}
		}
	}
	if d.Silent >= max(p.OutageMinSilent, 1) && 100*float64(d.Silent) > p.OutagePercent*float64(d.Watched) {
		d.Outage = true
	}
	remediate := func(r Row, s Step, reason string) {
		if d.Outage {
			d.Held++
			return
		}
		d.Remediations = append(d.Remediations, Remediation{Workspace: r.Workspace, Step: s, Reason: reason, Heartbeat: r.LastHeartbeat})
	}
	for _, r := range rows {
		if r.Desired != string(schema.StateRunning) || r.InFlight {
			continue
		}
		if r.Lifecycle == Failed {
			if r.FailedHash != "" && r.GitHash != "" && r.GitHash != r.FailedHash {
				d.Retry = append(d.Retry, r.Workspace)
			}
			continue
		}
		if r.Step == StepRebuild && booting[r.Lifecycle] {
			if now.Sub(r.StepAt) >= p.Cooldown {
				remediate(r, StepFail, fmt.Sprintf("the rebuilt droplet was not healthy within %s", p.Cooldown))
			}
			continue
		}
		if preActive[r.Lifecycle] && !schema.IsSpareWorkspace(r.Workspace) {
			// The boot deadline: a droplet that never became healthy
			// (its agent cannot enroll: a lost or expired token, a
			// broken image) gets a new droplet with new user data and
			// a new token; if that one is not healthy within Cooldown
			// either, the rule above FAILs the tenant. A spare is not
			// rebuilt (it has no tenant to rebuild from); it is never
			// ready, so never assigned.
			if since := now.Sub(r.StateSince); since >= p.BootDeadline {
				remediate(r, StepRebuild, fmt.Sprintf("in %s for %s, past the boot deadline of %s", r.Lifecycle, since.Round(time.Second), p.BootDeadline))
			}
			continue
		}
		if !active[r.Lifecycle] {
			continue
		}
		a := age(r)
		silent := a >= p.DegradedAfter
		move := func(to, reason string, reset bool) {
			d.Transitions = append(d.Transitions, Transition{Workspace: r.Workspace, From: r.Lifecycle, To: to, Reason: reason,
				Reset: reset, Heartbeat: r.LastHeartbeat})
		}
		switch {
		case r.Lifecycle == Healthy && !silent && r.Replacing != 0:
			d.Retire = append(d.Retire, r.Workspace)
		case r.Lifecycle == Healthy && !silent && r.Step != StepNone:
			move(Healthy, fmt.Sprintf("healthy again after %s", r.Step), true)
		case (r.Lifecycle == Critical || r.Lifecycle == Rebooting) && !silent:
			move(Degraded, "heartbeat back, not yet reporting healthy", true)
		case r.Lifecycle == Degraded && !silent && r.Step != StepNone && r.LastHeartbeat.After(r.StepAt):
			move(Degraded, fmt.Sprintf("heartbeat back after %s", r.Step), true)
		case (r.Lifecycle == Healthy || r.Lifecycle == Degraded) && a >= p.CriticalAfter:
			move(Critical, fmt.Sprintf("no heartbeat for %s", a.Round(time.Second)), false)
		case r.Lifecycle == Healthy && silent:
			move(Degraded, fmt.Sprintf("no heartbeat for %s", a.Round(time.Second)), false)
		case (r.Lifecycle == Critical || r.Lifecycle == Rebooting) && a >= p.CriticalAfter:
			// Remediate only what was already critical when evaluated: the
			// state is seen before the first step is taken.
			next := r.Step.Next()
			if r.Step != StepNone && now.Sub(r.StepAt) < p.Cooldown {
				continue
			}
			reason := fmt.Sprintf("no heartbeat for %s", a.Round(time.Second))
			if r.Step != StepNone {
				reason += fmt.Sprintf("; %s %s ago did not bring it back", r.Step, now.Sub(r.StepAt).Round(time.Second))
			}
			remediate(r, next, reason)
		}
	}
	return d
}
