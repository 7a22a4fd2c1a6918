package rollout

import (
	"time"

	"genesis.dev/fleet/schema"
)

// The states of a rollout. Running and Paused are open; the rest are
// final. The newest rollout is the one manifests are rendered from.
const (
	// Running: the current wave releases its tenants, watches them apply
	// and bake, then the next wave starts.
	Running = "running"
	// Paused: a failure budget was exceeded or a person paused it; the
	// released tenants keep the change, nothing else is released until a
	// person resumes (accepting the failures so far) or aborts.
	Paused = "paused"
	// Done: every wave passed; every tenant has the target.
	Done = "done"
	// Aborted (by a person) and RolledBack (by spec.rollout.onFailure:
	// rollback): every tenant goes back to the inputs it had before.
	Aborted    = "aborted"
	RolledBack = "rolled_back"
	// Superseded: a newer fleet-wide change started a newer rollout
	// before this one finished.
	Superseded = "superseded"
)

// Open reports whether a rollout in state may still change tenants.
func Open(state string) bool { return state == Running || state == Paused }

// Position is a workspace's place in a rollout, as the store reads it.
type Position struct {
	State            string
	Baseline, Target string
	// Member: the workspace is in the rollout; Released: its wave released
	// it to the target; From: the inputs it had before the rollout when
	// they differ from Baseline ("": Baseline).
	Member, Released bool
	From             string
}

// Effective is the digest of the fleet-wide inputs a workspace's manifest
// is rendered from:
//
//   - done: the target, for every tenant (members or not);
//   - running or paused: a released member the target, any other member
//     what it had before (From, else the baseline), a tenant that is not
//     a member (onboarded since the rollout began) the baseline;
//   - aborted, rolled back or superseded: what each had before.
//
// A superseded rollout is never the newest (the newer one replaces it in
// the same transaction), so its case is only a safe default.
func Effective(p Position) string {
	before := p.Baseline
	if p.Member && p.From != "" {
		before = p.From
	}
	switch p.State {
	case Done:
		return p.Target
	case Running, Paused:
		if p.Member && p.Released {
			return p.Target
		}
		return before
	default:
		return before
	}
}

// InWindow reports whether now, read in loc, is inside one of windows
// (none declared: always). A window whose end is before its start runs
// past midnight and belongs to the day it starts on.
func InWindow(windows []schema.MaintenanceWindow, loc *time.Location, now time.Time) bool {
	if len(windows) == 0 {
		return true
	}
	t := now.In(loc)
	minute := t.Hour()*60 + t.Minute()
	today := int(t.Weekday())
	yesterday := (today + 6) % 7
	for _, w := range windows {
		start, end := schema.Minutes(w.Start), schema.Minutes(w.End)
		if start < 0 || end < 0 {
			continue
		}
		for _, d := range w.Days {
			day := schema.Weekday(d)
			switch {
			case start < end:
				if day == today && minute >= start && minute < end {
					return true
				}
			default: // wraps past midnight
				if (day == today && minute >= start) || (day == yesterday && minute < end) {
					return true
				}
			}
		}
	}
	return false
}
