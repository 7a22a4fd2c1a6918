package plan

import (
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// Kind is what an action does. What each kind means to the scheduler, the
// executor, the journal and the manifest renderer is one row of the kinds
// table (Info); code that needs such a property reads it there instead of
// listing kinds.
type Kind string

// The actions, in the order of their priority (lower runs first).
const (
	Wake           Kind = "wake"            // create a droplet from the tenant's latest snapshot
	Create         Kind = "create"          // create a fresh droplet
	Adopt          Kind = "adopt"           // record a tagged droplet we have no record of
	Resize         Kind = "resize"          // snapshot, destroy, recreate at the new size
	UpdateManifest Kind = "update_manifest" // render and sign the tenant's manifest again
	PointName      Kind = "point_name"      // move the tenant's stable DNS name to Action.Target (names.go)
	Reboot         Kind = "reboot"          // watchdog: reboot a silent droplet
	PowerCycle     Kind = "power_cycle"     // watchdog: power-cycle a droplet a reboot did not bring back
	Rebuild        Kind = "rebuild"         // watchdog: a new droplet (latest snapshot or fresh) beside a dead one
	Hibernate      Kind = "hibernate"       // snapshot, then destroy
	Destroy        Kind = "destroy"         // state: absent
	DeleteSnapshot Kind = "delete_snapshot" // retention expired
	CreateSpare    Kind = "create_spare"    // provision a spare for an empty slot (spares.go)
	AssignSpare    Kind = "assign_spare"    // give a ready spare's droplet to an onboarding tenant
	DestroySpare   Kind = "destroy_spare"   // a spare past its region's count
	Retire         Kind = "retire"          // a rebuild's replaced droplet with no newer copy: stop, snapshot, then destroy
	SnapshotNow    Kind = "snapshot"        // operator: snapshot the running droplet now (Action.SnapshotName)
)

// The safety limits of genesis.yaml's spec.safety an action counts
// against; each is the Refusal.Reason of a plan that breaks it.
const (
	LimitDestroy   = "max_destroy"
	LimitHibernate = "max_hibernate_percent"
)

// KindInfo is what one kind of action means, for every package that acts
// on actions.
type KindInfo struct {
	// Priority orders work in the scheduler: wake > create > reboot >
	// hibernate > cleanup. Lower is sooner.
	Priority int
	// Destructive: the action removes a droplet or a snapshot. Nothing
	// destructive runs from an incomplete observation.
	Destructive bool
	// Limit is the safety limit (LimitDestroy, LimitHibernate) the action
	// counts against; "" for none.
	Limit string
	// APICalls is what the action is expected to spend of its account's
	// DigitalOcean budget, for genesis plan and the scheduler: create looks
	// for an earlier try by name first, hibernate snapshots, waits on the
	// action, finds the snapshot and destroys. 0: it makes no DigitalOcean
	// call at all (the executor has nothing to do).
	APICalls int
	// CreatesDroplet: the action makes a new droplet. When it fails after
	// that droplet exists, the droplet is destroyed again (Action.RollBack).
	CreatesDroplet bool
	// NeedsUserData: the droplet it creates boots with cloud-init user
	// data, rendered before the action runs.
	NeedsUserData bool
	// Renders: the manifest renderer has something to render for it: as
	// the action itself (update_manifest), in its prepare step (hibernate:
	// the manifest says hibernated), when it assigns a droplet
	// (assign_spare), or after it (RenderAfter).
	Renders bool
	// RenderAfter: once it succeeded, the tenant's manifest is rendered
	// again for the droplet it recorded (its agent may have enrolled, and
	// got a manifest without the droplet's address, before the action
	// recorded the droplet).
	RenderAfter bool
	// StartState is the lifecycle state a workspace enters when the action
	// is journaled ("" for no change): lifecycle.Start.
	StartState lifecycle.State
	// Towards is the declared state the action works towards, for a
	// workspace git no longer declares (a resumed operation, a spare); ""
	// when the action implies none (the caller assumes running).
	Towards schema.State
}

// kinds is the table. A kind missing here is not a kind (Kind.Valid).
var kinds = map[Kind]KindInfo{
	Wake: {Priority: 0, APICalls: 3, CreatesDroplet: true, NeedsUserData: true, Renders: true, RenderAfter: true,
		StartState: lifecycle.Waking, Towards: schema.StateRunning},
	Create: {Priority: 1, APICalls: 3, CreatesDroplet: true, NeedsUserData: true, Renders: true, RenderAfter: true,
		StartState: lifecycle.Provisioning, Towards: schema.StateRunning},
	Adopt: {Priority: 1, APICalls: 0, Renders: true, RenderAfter: true,
		Towards: schema.StateRunning},
	AssignSpare: {Priority: 1, APICalls: 4, Renders: true,
		StartState: lifecycle.Provisioning, Towards: schema.StateRunning},
	Resize: {Priority: 2, Destructive: true, APICalls: 8, CreatesDroplet: true, NeedsUserData: true, Renders: true, RenderAfter: true,
		StartState: lifecycle.Hibernating, Towards: schema.StateRunning},
	UpdateManifest: {Priority: 2, APICalls: 0, Renders: true},
	Reboot: {Priority: 2, APICalls: 3,
		StartState: lifecycle.Rebooting, Towards: schema.StateRunning},
	PowerCycle: {Priority: 2, APICalls: 3,
		StartState: lifecycle.Rebooting, Towards: schema.StateRunning},
	Rebuild: {Priority: 2, APICalls: 3, CreatesDroplet: true, NeedsUserData: true, Renders: true, RenderAfter: true,
		StartState: lifecycle.Provisioning, Towards: schema.StateRunning},
	Hibernate: {Priority: 3, Destructive: true, Limit: LimitHibernate, APICalls: 5, Renders: true,
		StartState: lifecycle.Hibernating, Towards: schema.StateHibernated},
	Destroy: {Priority: 4, Destructive: true, Limit: LimitDestroy, APICalls: 1,
		StartState: lifecycle.Destroying, Towards: schema.StateAbsent},
	DestroySpare: {Priority: 4, Destructive: true, Limit: LimitDestroy, APICalls: 1,
		StartState: lifecycle.Destroying, Towards: schema.StateAbsent},
	DeleteSnapshot: {Priority: 5, Destructive: true, APICalls: 1},
	// Retire keeps the replaced droplet's data: it is destroyed only
	// after its snapshot exists. The workspace's state is its new
	// droplet's, untouched.
	Retire: {Priority: 4, Destructive: true, APICalls: 5},
	// A spare's droplet gets no manifest of its own: its agent parks
	// until an assignment renders the tenant's.
	// A name follows its tenant's droplet: the action that moves the
	// droplet writes it; point_name repairs one it could not write (or
	// someone changed) and backfills every name when spec.dns is turned on
	// — 15,000 of them must not queue ahead of wakes and creates, so it
	// ranks with the other non-urgent fixes.
	PointName: {Priority: 2, APICalls: 3},
	// An operator's snapshot of a running droplet (taken live, as
	// DigitalOcean allows: crash-consistent, like a power loss): the
	// droplet and the tenant's state are untouched; the snapshot is the
	// tenant's latest copy until a newer one supersedes it (retention).
	SnapshotNow: {Priority: 2, APICalls: 4},
	CreateSpare: {Priority: 5, APICalls: 3, CreatesDroplet: true, NeedsUserData: true,
		StartState: lifecycle.Provisioning, Towards: schema.StateRunning},
}

// unknownKind is the row of a kind missing from the table: last in the
// queue, and nothing else.
var unknownKind = KindInfo{Priority: 5}

// Kinds lists every kind of action, in the order of the constants.
func Kinds() []Kind {
	return []Kind{Wake, Create, Adopt, Resize, UpdateManifest, PointName, Reboot, PowerCycle, Rebuild, Hibernate, Destroy, DeleteSnapshot,
		CreateSpare, AssignSpare, DestroySpare, Retire, SnapshotNow}
}

// Info is k's row of the kinds table.
func (k Kind) Info() KindInfo {
	if i, ok := kinds[k]; ok {
		return i
	}
	return unknownKind
}

// Valid reports whether k is a kind of the table.
func (k Kind) Valid() bool {
	_, ok := kinds[k]
	return ok
}

// Priority orders work in the scheduler (KindInfo.Priority).
func (k Kind) Priority() int { return k.Info().Priority }

// Destructive reports whether the action removes a droplet or a snapshot
// (KindInfo.Destructive).
func (k Kind) Destructive() bool { return k.Info().Destructive }

// RollBack reports whether a failed action a, whose execution got as far
// as droplet dropletID (0: none), must destroy that droplet again: a kind
// that creates a droplet, once the droplet exists. The droplet a starts
// from (a resize's old one, kept when the resize fails before its
// snapshot) is never rolled back.
func (a Action) RollBack(dropletID int) bool {
	return a.Kind.Info().CreatesDroplet && dropletID != 0 && dropletID != a.DropletID
}
