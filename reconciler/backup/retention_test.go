package backup

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/schema"
)

// day0 is a Monday (ISO week 2026-W02).
var day0 = time.Date(2026, 1, 5, 0, 0, 0, 0, time.UTC)

func copyAt(id string, d time.Duration) Copy { return Copy{ID: id, Started: day0.Add(d)} }

func TestExpired(t *testing.T) {
	const h, day = time.Hour, 24 * time.Hour
	tests := []struct {
		name   string
		copies []Copy
		p      schema.BackupTier
		want   []string
	}{
		{name: "none", p: schema.BackupTier{KeepLast: 1}},
		{name: "one copy is kept even with nothing to keep",
			copies: []Copy{copyAt("a", 0)}, want: nil},
		{name: "keepLast keeps the newest",
			copies: []Copy{copyAt("a", 0), copyAt("b", h), copyAt("c", 2*h), copyAt("d", 3*h)},
			p:      schema.BackupTier{KeepLast: 2}, want: []string{"b", "a"}},
		{name: "keepLast 0 still keeps the newest",
			copies: []Copy{copyAt("a", 0), copyAt("b", h)},
			want:   []string{"a"}},
		{name: "keepDaily keeps each day's newest",
			copies: []Copy{copyAt("d1-a", 1*h), copyAt("d1-b", 2*h), copyAt("d2-a", day+h), copyAt("d2-b", day+2*h), copyAt("d3-a", 2*day+h)},
			p:      schema.BackupTier{KeepLast: 1, KeepDaily: 2}, want: []string{"d2-a", "d1-b", "d1-a"}},
		{name: "days are UTC days",
			copies: []Copy{{ID: "late", Started: time.Date(2026, 1, 5, 23, 30, 0, 0, time.FixedZone("EST", -5*3600))}, {ID: "early", Started: time.Date(2026, 1, 6, 1, 0, 0, 0, time.UTC)}},
			p:      schema.BackupTier{KeepLast: 1, KeepDaily: 1}, want: []string{"early"}},
		{name: "keepWeekly keeps each ISO week's newest",
			// Sunday 2026-01-11 ends W02; Monday 2026-01-12 starts W03.
			copies: []Copy{copyAt("w02-mon", h), copyAt("w02-sun", 6*day+h), copyAt("w03-mon", 7*day+h), copyAt("w03-tue", 8*day+h)},
			p:      schema.BackupTier{KeepLast: 1, KeepWeekly: 2}, want: []string{"w03-mon", "w02-mon"}},
		{name: "the three rules together",
			copies: []Copy{copyAt("a", 0), copyAt("b", day), copyAt("c", 2*day), copyAt("d", 9*day), copyAt("e", 9*day+h), copyAt("f", 9*day+2*h)},
			p:      schema.BackupTier{KeepLast: 2, KeepDaily: 2, KeepWeekly: 2}, want: []string{"d", "b", "a"}},
		{name: "equal times: the smaller id counts as newer",
			copies: []Copy{copyAt("y", 0), copyAt("x", 0)},
			p:      schema.BackupTier{KeepLast: 1}, want: []string{"y"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Expired(tt.copies, tt.p)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Expired (-want +got):\n%s", diff)
			}
		})
	}
}

// TestExpiredProperties checks Expired over random histories: the newest
// copy is always kept, no more copies are kept than the policy names,
// only input ids are expired (each once), and the input's order does not
// matter.
func TestExpiredProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(18, 2026))
	for i := range 2000 {
		n := rng.IntN(60)
		copies := make([]Copy, n)
		for j := range copies {
			// Up to 120 days of history, clustered so days and weeks
			// repeat; a few equal times.
			copies[j] = Copy{ID: fmt.Sprintf("b-%03d", j), Started: day0.Add(time.Duration(rng.IntN(120*24*4)) * 15 * time.Minute)}
		}
		p := schema.BackupTier{KeepLast: rng.IntN(5), KeepDaily: rng.IntN(10), KeepWeekly: rng.IntN(6)}
		expired := Expired(copies, p)
		ids := map[string]bool{}
		for _, c := range copies {
			ids[c.ID] = true
		}
		gone := map[string]bool{}
		for _, id := range expired {
			if !ids[id] {
				t.Fatalf("case %d: expired %s is not an input copy", i, id)
			}
			if gone[id] {
				t.Fatalf("case %d: %s expired twice", i, id)
			}
			gone[id] = true
		}
		if n > 0 {
			newest := slices.MinFunc(copies, func(a, b Copy) int {
				if c := b.Started.Compare(a.Started); c != 0 {
					return c
				}
				return cmpString(a.ID, b.ID)
			})
			if gone[newest.ID] {
				t.Fatalf("case %d: the newest copy %s expired (policy %+v)", i, newest.ID, p)
			}
		}
		if kept, most := n-len(expired), max(p.KeepLast, 1)+p.KeepDaily+p.KeepWeekly; kept > most {
			t.Fatalf("case %d: kept %d copies, policy %+v keeps at most %d", i, kept, p, most)
		}
		shuffled := slices.Clone(copies)
		rng.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		if diff := cmp.Diff(expired, Expired(shuffled, p)); diff != "" {
			t.Fatalf("case %d: the input's order changes the result (-sorted +shuffled):\n%s", i, diff)
		}
		// Retention is stable: applying it to what it kept expires nothing more.
		var kept []Copy
		for _, c := range copies {
			if !gone[c.ID] {
				kept = append(kept, c)
			}
		}
		if again := Expired(kept, p); len(again) != 0 {
			t.Fatalf("case %d: a second pass expires %v", i, again)
		}
	}
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestNewest(t *testing.T) {
	t1, t2 := day0, day0.Add(time.Hour)
	tests := []struct {
		name string
		bID  string
		bAt  time.Time
		sID  string
		sAt  time.Time
		want Point
	}{
		{"nothing", "", time.Time{}, "", time.Time{}, Point{}},
		{"backup only", "b-1", t1, "", time.Time{}, Point{At: t1, Kind: "backup", ID: "b-1"}},
		{"snapshot only", "", time.Time{}, "snap-1", t1, Point{At: t1, Kind: "snapshot", ID: "snap-1"}},
		{"newer backup", "b-1", t2, "snap-1", t1, Point{At: t2, Kind: "backup", ID: "b-1"}},
		{"newer snapshot", "b-1", t1, "snap-1", t2, Point{At: t2, Kind: "snapshot", ID: "snap-1"}},
		{"a tie goes to the backup", "b-1", t1, "snap-1", t1, Point{At: t1, Kind: "backup", ID: "b-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, Newest(tt.bID, tt.bAt, tt.sID, tt.sAt)); diff != "" {
				t.Errorf("Newest (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStale(t *testing.T) {
	now := day0.Add(100 * time.Hour)
	at := func(ago time.Duration) time.Time { return now.Add(-ago) }
	obj := 2 * time.Hour
	tests := []struct {
		name      string
		point     time.Time
		liveSince time.Time
		objective time.Duration
		want      bool
	}{
		{"not live", at(10 * time.Hour), time.Time{}, obj, false},
		{"fresh copy", at(time.Hour), at(50 * time.Hour), obj, false},
		{"copy exactly at the objective", at(obj), at(50 * time.Hour), obj, false},
		{"old copy", at(3 * time.Hour), at(50 * time.Hour), obj, true},
		{"no copy, new droplet", time.Time{}, at(time.Hour), obj, false},
		{"no copy, droplet live past the objective", time.Time{}, at(3 * time.Hour), obj, true},
		{"old copy, droplet restored from it recently", at(30 * time.Hour), at(time.Hour), obj, false},
		{"no objective", at(300 * time.Hour), at(400 * time.Hour), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Stale(Point{At: tt.point}, tt.liveSince, now, tt.objective); got != tt.want {
				t.Errorf("Stale = %v, want %v", got, tt.want)
			}
		})
	}
}
