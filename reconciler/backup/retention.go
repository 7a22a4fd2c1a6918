package backup

import (
	"fmt"
	"sort"
	"time"

	"genesis.dev/fleet/schema"
)

// Copy is one backup as retention sees it.
type Copy struct {
	ID      string
	Started time.Time
}

// Expired returns the ids of copies (one workspace's good backups) that
// policy p no longer keeps: kept are the newest p.KeepLast, the newest of
// each of the p.KeepDaily most recent days (UTC) that have a copy, and the
// newest of each of the p.KeepWeekly most recent ISO weeks that have one.
// The newest copy is always kept. Pure: the order of copies does not
// matter.
func Expired(copies []Copy, p schema.BackupTier) []string {
	cs := append([]Copy(nil), copies...)
	sort.Slice(cs, func(i, j int) bool {
		if !cs[i].Started.Equal(cs[j].Started) {
			return cs[i].Started.After(cs[j].Started)
		}
		return cs[i].ID < cs[j].ID
	})
	keep := make(map[string]bool, len(cs))
	for i, c := range cs {
		if i < max(p.KeepLast, 1) {
			keep[c.ID] = true
		}
	}
	bucket := func(n int, key func(time.Time) string) {
		seen := map[string]bool{}
		for _, c := range cs {
			k := key(c.Started.UTC())
			if seen[k] {
				continue
			}
			if len(seen) == n {
				break
			}
			seen[k] = true
			keep[c.ID] = true
		}
	}
	bucket(p.KeepDaily, func(t time.Time) string { return t.Format(time.DateOnly) })
	bucket(p.KeepWeekly, func(t time.Time) string {
		y, w := t.ISOWeek()
		return fmt.Sprintf("%d-W%02d", y, w)
	})
	var out []string
	for _, c := range cs {
		if !keep[c.ID] {
			out = append(out, c.ID)
		}
	}
	return out
}

// Point is a tenant's recovery point: its newest good copy.
type Point struct {
	// At is when the newest copy's data was taken (zero: no copy at all).
	At time.Time `json:"at,omitzero"`
	// Kind is "backup" or "snapshot" ("" when there is none).
	Kind string `json:"kind,omitempty"`
	// ID is the backup id or the snapshot id.
	ID string `json:"id,omitempty"`

	// The rest is filled by Service.Point and Service.Points, at the time
	// of the call (Newest leaves it zero).

	// LiveSince is since when the tenant's droplet runs (zero: not live).
	LiveSince time.Time `json:"live_since,omitzero"`
	// Age is how old the copy is; for a live tenant with no copy, how long
	// it has been live (its data is uncovered since then); 0 otherwise.
	Age time.Duration `json:"-"`
	// Objective is the tenant's tier's recovery-point objective.
	Objective time.Duration `json:"-"`
	// Stale is Stale(point, LiveSince, now, Objective).
	Stale bool `json:"stale,omitempty"`
}

// Newest is the newer of a backup and a snapshot copy (either may be
// zero).
func Newest(backupID string, backupAt time.Time, snapshotID string, snapshotAt time.Time) Point {
	switch {
	case backupAt.IsZero() && snapshotAt.IsZero():
		return Point{}
	case snapshotAt.After(backupAt):
		return Point{At: snapshotAt, Kind: "snapshot", ID: snapshotID}
	default:
		return Point{At: backupAt, Kind: "backup", ID: backupID}
	}
}

// Stale reports whether a tenant whose droplet has been live since
// liveSince (zero: not live) has a recovery point older than objective at
// now: a live droplet's data is uncovered from the later of its point and
// its start, so a new droplet has one objective to take its first backup.
func Stale(pt Point, liveSince, now time.Time, objective time.Duration) bool {
	if liveSince.IsZero() || objective <= 0 {
		return false
	}
	from := pt.At
	if liveSince.After(from) {
		from = liveSince
	}
	return now.Sub(from) > objective
}
