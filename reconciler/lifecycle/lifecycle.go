// Package lifecycle is the droplet lifecycle of a workspace
// (fleet_status.state): its states, the transition table as data, and a
// pure function for each input that moves a workspace: an action's start
// and outcome (Start, Created, Finished, Failed), an agent's heartbeat
// (OnHeartbeat), silence (OnSilence) and a deadline (Deadline, OnDeadline).
// Nothing here does I/O. The SQL that writes fleet_status.state takes its
// state names and lists from here (reconciler/store, the batched heartbeat
// statement of reconciler/agentapi, which renders its CASE arms from
// HeartbeatRules), and the watchdog (reconciler/watchdog) decides every
// deadline through Deadline and OnDeadline: there is one mechanism.
//
// The machine (ARCHITECTURE.md, "Droplet lifecycle"; seed 2.3):
//
//	PENDING ──create──▶ PROVISIONING ──droplet made──▶ BOOTING ──active──▶ INITIALIZING
//	INITIALIZING ──agent enrolls──▶ HANDSHAKE ──first heartbeat──▶ CONFIGURING
//	CONFIGURING ──heartbeat: a manifest applied──▶ DEPLOYING
//	any pre-ACTIVE ──heartbeat: ok, newest manifest applied──▶ ACTIVE_HEALTHY
//	ACTIVE_HEALTHY ──problems reported──▶ ACTIVE_DEGRADED ──ok heartbeat──▶ ACTIVE_HEALTHY
//	ACTIVE_HEALTHY ──silent DegradedAfter──▶ ACTIVE_DEGRADED ──silent CriticalAfter──▶ ACTIVE_CRITICAL
//	ACTIVE_CRITICAL ──reboot / power cycle──▶ REBOOTING ──heartbeat──▶ ACTIVE_*
//	the ladder's last steps: rebuild (PROVISIONING beside the old droplet), then FAILED (alert)
//	running ──hibernate / resize──▶ HIBERNATING ──snapshot, destroy──▶ HIBERNATED
//	HIBERNATED ──wake──▶ WAKING ──droplet made──▶ BOOTING …
//	any ──destroy (state: absent)──▶ DESTROYING ──▶ DESTROYED
//
// Where each pre-ACTIVE state is observed: PROVISIONING when the create
// (or wake, rebuild, spare assignment) is journaled; BOOTING when the
// create call returned the droplet (the journal's "created"/"found" step:
// the droplet exists and boots, cloud-init has not run the agent yet);
// INITIALIZING when DigitalOcean reports it active with an address
// (cloud-init runs); HANDSHAKE when its agent enrolled; CONFIGURING at the
// agent's first heartbeat (it pulls and applies its manifest); DEPLOYING at
// a heartbeat that reports a manifest applied while the droplet is not yet
// healthy on its newest manifest (n8n and Caddy converging);
// ACTIVE_HEALTHY at an ok heartbeat on the newest manifest.
//
// Deadlines (rule 5 of ARCHITECTURE.md's Day-2 rules): every state that is
// not Steady has a deadline, counted from when the state was entered
// (fleet_status.state_since), and a named consequence (OnDeadline). The
// defaults come from genesis.yaml's spec.watchdog (Policy):
//
//	PENDING, PROVISIONING, WAKING, DESTROYING  ActionDeadline (3×bootDeadline, 1h)  fail (alert): the
//	        planner re-issues the action every pass until then; the deadline holds only while no
//	        operation is in flight (an operation in flight owns its state: its own retries and backoff)
//	BOOTING … DEPLOYING                        bootDeadline (20m)                     rebuild (new droplet,
//	        new token); a rebuilt droplet not healthy within cooldown: fail
//	ACTIVE_DEGRADED (heartbeating, problems)   criticalAfter (15m)                    remediate: the next
//	        ladder step (reboot, power cycle, rebuild, fail), one per cooldown
//	ACTIVE_CRITICAL                            0 (at once)                            remediate
//	REBOOTING                                  cooldown (10m)                         remediate (next step)
//	HIBERNATING                                ActionDeadline (1h)                    power on (the droplet
//	        may be off after a failed snapshot; the planner then retries the hibernation), then fail
//
// PENDING while declared hibernated or absent is NothingToDo: no deadline.
// Steady states have no deadline: ACTIVE_HEALTHY (watched for silence:
// OnSilence), HIBERNATED, DESTROYED and FAILED (it alerts, GenesisTenantFailed,
// and waits for a person's retry or a change of the tenant's file).
// A tenant declared hibernated or absent is watched only in the states of
// an action (PENDING, PROVISIONING, BOOTING … DEPLOYING, REBOOTING,
// WAKING, HIBERNATING, DESTROYING), where a rebuild or a ladder step
// becomes fail: its ACTIVE_* states belong to the planner, which hibernates
// or destroys it.
//
// "Nothing to do" and "orphaned" are renderings, not stored states
// (NotCreated, Orphaned, DesiredUndeclared). A tenant declared hibernated
// or absent that never had a droplet sits in PENDING, the state its row is
// created in when git declares it, with nothing to make: NothingToDo, no
// deadline, shown as NOT_CREATED. A row whose tenant file is gone keeps its
// real state for the reconciler (deletion is explicit: nothing acts on a
// missing file) and is shown with desired "undeclared", ORPHANED while it
// still holds a droplet or a snapshot. GET /v1/fleet and the demo's table
// derive them (Render). Stored states would need every writer of desired
// state to move them (a file's state: edit, its removal) for no decision
// the reconciler makes differently, so no migration extends the CHECK of
// migrations/0001_initial.sql.
//
// Where this differs from ARCHITECTURE.md's lifecycle paragraph:
//   - ACTIVE_CRITICAL → REBOOTING → … is a ladder of reboot, power cycle,
//     rebuild (a new droplet beside the old one), then FAILED; the document
//     names reboot and power cycle only.
//   - ACTIVE_DEGRADED is also entered by a heartbeat that reports problems
//     (n8n down, manifest not applied, memory or disk pressure), not only by
//     5 minutes of silence, and stays there while the agent heartbeats; past
//     criticalAfter it is remediated like a critical one.
//   - A resize goes through HIBERNATING (snapshot, destroy, recreate) and
//     then INITIALIZING; it does not pass WAKING or BOOTING.
//   - BOOTING is entered when the create call returns the droplet, before
//     fleet_status records the droplet (that happens once it is active):
//     a BOOTING row may have no droplet id (migrations/0014).
//   - A failed hibernation whose droplet still exists returns to
//     CONFIGURING (its manifest says running again); a HIBERNATING left
//     behind is powered on at its deadline, then FAILED.
//   - The watchdog's rebuild enters PROVISIONING (not WAKING) while the old
//     droplet is kept until the new one is healthy.
//   - A FAILED tenant leaves FAILED only by a person's retry or a change of
//     its file: to ACTIVE_DEGRADED with a droplet, PENDING without.
//   - NOT_CREATED and ORPHANED (and desired "undeclared") are renderings of
//     the API and the demo, not states.
package lifecycle

import (
	"slices"
	"strings"
	"time"
)

// State is a workspace's lifecycle state (fleet_status.state).
type State string

// The stored states, in the order of the CHECK constraint of
// migrations/0001_initial.sql.
const (
	Pending        State = "PENDING"
	Provisioning   State = "PROVISIONING"
	Booting        State = "BOOTING"
	Initializing   State = "INITIALIZING"
	Handshake      State = "HANDSHAKE"
	Configuring    State = "CONFIGURING"
	Deploying      State = "DEPLOYING"
	ActiveHealthy  State = "ACTIVE_HEALTHY"
	ActiveDegraded State = "ACTIVE_DEGRADED"
	ActiveCritical State = "ACTIVE_CRITICAL"
	Rebooting      State = "REBOOTING"
	Failed         State = "FAILED"
	Hibernating    State = "HIBERNATING"
	Hibernated     State = "HIBERNATED"
	Waking         State = "WAKING"
	Destroying     State = "DESTROYING"
	Destroyed      State = "DESTROYED"
)

// Renderings: never stored, derived for GET /v1/fleet and the demo.
const (
	// NotCreated is a declared tenant with no fleet_status row whose
	// declared state needs no droplet (hibernated with no snapshot yet,
	// absent): nothing to do.
	NotCreated State = "NOT_CREATED"
	// Orphaned is a row whose tenant file is gone while it still holds a
	// droplet or a snapshot: reported, never destroyed (deletion is
	// explicit).
	Orphaned State = "ORPHANED"
	// DesiredUndeclared is the desired state shown for a row whose
	// tenant file is gone.
	DesiredUndeclared = "undeclared"
)

// All lists every stored state (the CHECK constraint's list).
func All() []State {
	return []State{Pending, Provisioning, Booting, Initializing, Handshake, Configuring, Deploying,
		ActiveHealthy, ActiveDegraded, ActiveCritical, Rebooting, Failed,
		Hibernating, Hibernated, Waking, Destroying, Destroyed}
}

// Sets of states the code asks about. Each function returns a new slice.

// PreActive are the states between a droplet's create and its first
// healthy report; each is bounded by the boot deadline.
func PreActive() []State { return []State{Booting, Initializing, Handshake, Configuring, Deploying} }

// Watched are the states of a droplet that has been healthy once and is
// watched for silence.
func Watched() []State { return []State{ActiveHealthy, ActiveDegraded, ActiveCritical, Rebooting} }

// Running are the states whose droplet exists and runs the tenant (or is
// on its way to): the heartbeat writer moves them.
func Running() []State { return append(PreActive(), Watched()...) }

// Rebuilding are the states a rebuilt droplet passes before it is healthy.
func Rebuilding() []State { return append([]State{Provisioning}, PreActive()...) }

// AwaitingDroplet are the states in which a workspace has no droplet
// recorded yet but its new one may already send heartbeats (the agent can
// be faster than the executor's record of the create).
func AwaitingDroplet() []State { return []State{Provisioning, Booting, Waking} }

// NeedDroplet are the states in which fleet_status must record a droplet
// (the CHECK fleet_status_droplet_check, migrations/0014).
func NeedDroplet() []State {
	return []State{Initializing, Handshake, Configuring, Deploying, ActiveHealthy, ActiveDegraded, ActiveCritical, Rebooting}
}

// NoManifest are the states whose droplet gets no manifest (it is gone or
// going).
func NoManifest() []State { return []State{Hibernated, Destroying, Destroyed} }

// Counted are the states whose tenant counts as live in the fleet's usage
// statistics (reconciler/fleetstats).
func Counted() []State { return Watched() }

// Steady reports whether s has no deadline: ACTIVE_HEALTHY (watched for
// silence instead), HIBERNATED, DESTROYED, FAILED.
func (s State) Steady() bool {
	return s == ActiveHealthy || s == Hibernated || s == Destroyed || s == Failed
}

// In reports whether s is one of set.
func (s State) In(set []State) bool { return slices.Contains(set, s) }

// Valid reports whether s is a stored state.
func (s State) Valid() bool { return s.In(All()) }

// Strings returns set as strings (for a text[] parameter).
func Strings(set []State) []string {
	out := make([]string, len(set))
	for i, s := range set {
		out[i] = string(s)
	}
	return out
}

// SQLList renders set as a SQL list of literals: 'A', 'B'. The names are
// this package's constants (upper case and underscores only), never input.
func SQLList(set []State) string {
	q := make([]string, len(set))
	for i, s := range set {
		q[i] = "'" + string(s) + "'"
	}
	return strings.Join(q, ", ")
}

// Action is an action of the reconciler as the lifecycle sees it (the
// values are plan.Kind's).
type Action string

// The actions that move the lifecycle.
const (
	Create       Action = "create"
	Wake         Action = "wake"
	Hibernate    Action = "hibernate"
	Resize       Action = "resize"
	Destroy      Action = "destroy"
	Reboot       Action = "reboot"
	PowerCycle   Action = "power_cycle"
	Rebuild      Action = "rebuild"
	Adopt        Action = "adopt"
	CreateSpare  Action = "create_spare"
	AssignSpare  Action = "assign_spare"
	DestroySpare Action = "destroy_spare"
)

// Start is the state a workspace enters when action a is journaled ("" for
// no change).
func Start(a Action) State {
	switch a {
	case Create, CreateSpare, AssignSpare, Rebuild:
		return Provisioning
	case Wake:
		return Waking
	case Hibernate, Resize:
		return Hibernating
	case Destroy, DestroySpare:
		return Destroying
	case Reboot, PowerCycle:
		return Rebooting
	}
	return ""
}

// Created is the state once a create (or wake, resize, rebuild) call
// returned its droplet, from state s: BOOTING while the workspace waits
// for it (AwaitingDroplet), else unchanged (a rebuild's workspace still
// records the old droplet).
func Created(s State) State {
	if s.In(AwaitingDroplet()) {
		return Booting
	}
	return s
}

// Enrolled is the state an agent's enrollment moves a workspace to, from
// one of BeforeEnrollment, when the row records the agent's droplet.
const Enrolled = Handshake

// BeforeEnrollment are the states an enrollment moves to Enrolled.
func BeforeEnrollment() []State { return []State{Booting, Initializing} }

// Finished is the state after action a succeeded; enrolled tells whether
// the new droplet's agent enrolled already. "" means no change (the
// outcome records something else, or a heartbeat moves it).
func Finished(a Action, enrolled bool) State {
	switch a {
	case Create, Wake, Resize, Adopt, CreateSpare, Rebuild:
		if enrolled {
			return Handshake
		}
		return Initializing
	case AssignSpare:
		return Configuring
	case Hibernate:
		return Hibernated
	case Destroy:
		return Destroyed
	}
	return ""
}

// FailedFrom is the state after an action failed in state s; hasDroplet tells
// whether the workspace still records a droplet. A hibernation (or
// resize) whose droplet is still there returns to CONFIGURING: its
// manifest says running again and its next heartbeat makes it healthy.
// Everything else keeps its state (the planner re-issues the action until
// the state's deadline).
func FailedFrom(s State, hasDroplet bool) State {
	if s == Hibernating && hasDroplet {
		return Configuring
	}
	return s
}

// Retried is the state a person's retry (or a change of the tenant's file)
// takes a FAILED workspace to.
func Retried(hasDroplet bool) State {
	if hasDroplet {
		return ActiveDegraded
	}
	return Pending
}

// Heartbeat is what the heartbeat writer knows of one heartbeat.
type Heartbeat struct {
	// OK: the agent reports no problem (watchdog.Problems is empty).
	OK bool
	// Applied is the manifest version the agent applied; Issued the
	// newest one issued to the droplet.
	Applied, Issued int64
}

// Cond is a condition of a heartbeat rule.
type Cond int

// The conditions.
const (
	// OKCurrent: ok, and the newest issued manifest (issued > 0) applied.
	OKCurrent Cond = iota
	// Problems: not ok.
	Problems
	// AppliedAny: some manifest applied (applied > 0).
	AppliedAny
	// Always: any heartbeat.
	Always
)

// Holds reports whether hb satisfies c.
func (c Cond) Holds(hb Heartbeat) bool {
	switch c {
	case OKCurrent:
		return hb.OK && hb.Issued > 0 && hb.Applied >= hb.Issued
	case Problems:
		return !hb.OK
	case AppliedAny:
		return hb.Applied > 0
	}
	return true
}

// Rule is one row of the heartbeat transition table: a heartbeat of the
// workspace's recorded droplet in one of From that satisfies When moves it
// to To.
type Rule struct {
	From []State
	When Cond
	To   State
}

// HeartbeatRules is the heartbeat transition table, first match wins; a
// state no rule matches stays. FAILED, HIBERNATING, WAKING and the rest
// are never moved by an agent.
func HeartbeatRules() []Rule {
	return []Rule{
		{From: Running(), When: OKCurrent, To: ActiveHealthy},
		{From: []State{ActiveHealthy, ActiveCritical, Rebooting}, When: Problems, To: ActiveDegraded},
		{From: []State{Booting, Initializing, Handshake, Configuring}, When: AppliedAny, To: Deploying},
		{From: []State{Booting, Initializing, Handshake}, When: Always, To: Configuring},
	}
}

// OnHeartbeat is the state after a heartbeat of the workspace's recorded
// droplet in state s.
func OnHeartbeat(s State, hb Heartbeat) State {
	for _, r := range HeartbeatRules() {
		if s.In(r.From) && r.When.Holds(hb) {
			return r.To
		}
	}
	return s
}

// Policy is what the deadlines are made of (genesis.yaml spec.watchdog;
// watchdog.Policy converts).
type Policy struct {
	DegradedAfter, CriticalAfter, Cooldown, BootDeadline time.Duration
}

// ActionDeadline bounds a state in which the planner re-issues an action
// every pass (PENDING, PROVISIONING, WAKING, HIBERNATING, DESTROYING):
// three boot deadlines.
func (p Policy) ActionDeadline() time.Duration { return 3 * p.BootDeadline }

// OnSilence is the state after age without a heartbeat in state s ("" for
// no change): ACTIVE_HEALTHY silent DegradedAfter becomes ACTIVE_DEGRADED,
// ACTIVE_HEALTHY or ACTIVE_DEGRADED silent CriticalAfter ACTIVE_CRITICAL.
func OnSilence(s State, age time.Duration, p Policy) State {
	switch {
	case (s == ActiveHealthy || s == ActiveDegraded) && age >= p.CriticalAfter:
		return ActiveCritical
	case s == ActiveHealthy && age >= p.DegradedAfter:
		return ActiveDegraded
	}
	return ""
}

// Consequence is what happens when a state's deadline passes.
type Consequence string

// The consequences.
const (
	// None: a steady state, no deadline.
	None Consequence = ""
	// Fail: FAILED, which alerts (GenesisTenantFailed).
	Fail Consequence = "fail"
	// RebuildDroplet: a new droplet with new user data (a new token).
	RebuildDroplet Consequence = "rebuild"
	// Remediate: the next step of the ladder (reboot, power cycle,
	// rebuild, fail), one per cooldown.
	Remediate Consequence = "remediate"
	// PowerOn: power the droplet on (a power cycle), then the planner
	// retries; FAILED if it is still there at the next deadline.
	PowerOn Consequence = "power_on"
)

// Deadline is how long a workspace may stay in s, counted from when it
// entered s; ok is false for a steady state (no deadline).
func Deadline(s State, p Policy) (d time.Duration, ok bool) {
	switch s {
	case Pending, Provisioning, Waking, Destroying, Hibernating:
		return p.ActionDeadline(), true
	case Booting, Initializing, Handshake, Configuring, Deploying:
		return p.BootDeadline, true
	case ActiveDegraded:
		return p.CriticalAfter, true
	case ActiveCritical:
		return 0, true
	case Rebooting:
		return p.Cooldown, true
	}
	return 0, false
}

// Due reports whether the deadline of s has passed at now, for a workspace
// that entered s at entered and whose last remediation step was taken at
// lastStep (zero: none). The clock starts at the later of the two, and a
// step is never due sooner than Cooldown after the previous one (the
// ladder does not flap). A steady state is never due.
func Due(s State, entered, lastStep, now time.Time, p Policy) bool {
	d, ok := Deadline(s, p)
	if !ok {
		return false
	}
	if !lastStep.IsZero() && now.Sub(lastStep) < p.Cooldown {
		return false
	}
	start := entered
	if lastStep.After(start) {
		start = lastStep
	}
	return now.Sub(start) >= d
}

// OnDeadline is what happens when s's deadline passes.
func OnDeadline(s State) Consequence {
	switch s {
	case Pending, Provisioning, Waking, Destroying:
		return Fail
	case Booting, Initializing, Handshake, Configuring, Deploying:
		return RebuildDroplet
	case ActiveDegraded, ActiveCritical, Rebooting:
		return Remediate
	case Hibernating:
		return PowerOn
	}
	return None
}

// Render is the lifecycle and desired state GET /v1/fleet and the demo
// show for a workspace: row is whether fleet_status has a row (state its
// lifecycle), declared whether git declares the tenant (desired its
// declared state, "" when its file does not parse), holds whether the row
// still records a droplet or a snapshot.
func Render(row bool, state State, declared bool, desired string, holds bool) (State, string) {
	switch {
	case !row && (desired == "hibernated" || desired == "absent"):
		return NotCreated, desired
	case !row:
		return Pending, desired
	case !declared && holds:
		return Orphaned, DesiredUndeclared
	case !declared && state == Pending:
		return NotCreated, DesiredUndeclared
	case !declared:
		return state, DesiredUndeclared
	case NothingToDo(state, desired) && !holds:
		return NotCreated, desired
	}
	return state, desired
}

// NothingToDo reports a row that waits for nothing: PENDING (the state a
// row is created in when git declares the tenant) while the tenant is
// declared hibernated or absent, so there is no droplet to make. It has no
// deadline; GET /v1/fleet shows it as NOT_CREATED while it holds nothing.
func NothingToDo(s State, desired string) bool {
	return s == Pending && desired != "" && desired != "running"
}
