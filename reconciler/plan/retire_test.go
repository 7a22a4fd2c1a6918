package plan

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"genesis.dev/fleet/schema"
)

// copyWorld is one workspace's droplets and copies over a random history,
// for TestNoDestroyWithoutCopy. A droplet's data is "as of" the last write
// its agent saw; a copy holds a droplet's data as of when it was taken.
type copyWorld struct {
	t        *testing.T
	seed     uint64
	now      time.Time
	nextID   int
	gen      int
	live     *modelDroplet // nil: hibernated
	replaced *modelDroplet // a rebuild's dead droplet, not yet retired
	backups  []modelCopy
	snaps    []modelCopy
	log      []string
}

type modelDroplet struct {
	id        int
	name      string
	alive     bool
	lastWrite time.Time // its newest data (seen by its agent)
	lastSeen  time.Time // last heartbeat or activity
	dataFrom  time.Time // the copy it started from (zero: fresh)
}

type modelCopy struct {
	id      string
	droplet int
	at      time.Time // data as of
}

// newest is the newest copy of any kind (zero when none).
func (w *copyWorld) newest() time.Time {
	var t time.Time
	for _, c := range append(append([]modelCopy{}, w.backups...), w.snaps...) {
		if c.at.After(t) {
			t = c.at
		}
	}
	return t
}

// destroyed checks the invariant for a droplet that goes: some copy holds
// its data (as new as its last write).
func (w *copyWorld) destroyed(d *modelDroplet, how string) {
	for _, c := range append(append([]modelCopy{}, w.backups...), w.snaps...) {
		if c.droplet == d.id && !c.at.Before(d.lastWrite) {
			return
		}
	}
	if d.lastWrite.IsZero() || (!d.dataFrom.IsZero() && !d.dataFrom.Before(d.lastWrite)) {
		return // it never wrote anything of its own
	}
	w.t.Fatalf("seed %d: %s destroyed droplet %s whose last write %s has no copy\nhistory:\n%v", w.seed, how, d.name, d.lastWrite, w.log)
}

// create starts a droplet from the copies the planner picks, and checks
// that it is the newest.
func (w *copyWorld) create(how string, from Snapshot, restore string) *modelDroplet {
	w.nextID++
	w.gen++
	d := &modelDroplet{id: w.nextID, name: DropletName("ws-a", w.gen), alive: true, lastSeen: w.now}
	if from.ID != "" {
		d.dataFrom = from.Created
	}
	for _, b := range w.backups {
		if b.id == restore {
			d.dataFrom = b.at
		}
	}
	if restore != "" && d.dataFrom.IsZero() {
		w.t.Fatalf("seed %d: %s restores unknown backup %s", w.seed, how, restore)
	}
	if want := w.newest(); !d.dataFrom.Equal(want) {
		w.t.Fatalf("seed %d: %s started %s from data as of %s, but a copy as of %s exists\nhistory:\n%v", w.seed, how, d.name, d.dataFrom, want, w.log)
	}
	d.lastWrite = d.dataFrom
	return d
}

func (w *copyWorld) observed() Observed {
	o := Observed{Status: map[string]Status{"ws-a": {Generation: w.gen}}}
	for _, d := range []*modelDroplet{w.live, w.replaced} {
		if d != nil {
			o.Droplets = append(o.Droplets, Droplet{ID: d.id, Name: d.name, Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Workspace: "ws-a"})
		}
	}
	for _, s := range w.snaps {
		o.Snapshots = append(o.Snapshots, Snapshot{ID: s.id, Name: "snap-" + s.id, Account: "acct-a", Region: "nyc3", Workspace: "ws-a", Created: s.at})
	}
	return o
}

func (w *copyWorld) newestBackup(droplet int) *BackupCopy {
	var out *BackupCopy
	for _, b := range w.backups {
		if (droplet == 0 || b.droplet == droplet) && (out == nil || b.at.After(out.Started)) {
			out = &BackupCopy{ID: b.id, DropletID: b.droplet, Started: b.at}
		}
	}
	return out
}

// TestNoDestroyWithoutCopy: over random histories of writes, backups
// (some failing), crashes, rebuilds, retirements, hibernations and wakes,
// no droplet is destroyed while its data has no copy at least as new, and
// every new droplet starts from the newest copy there is. The rebuild is
// planned by RebuildAction and RestoreFrom, the retirement by
// RetireAction: the functions the watchdog runs.
func TestNoDestroyWithoutCopy(t *testing.T) {
	f := testFleet(t)
	tn := &schema.Tenant{APIVersion: schema.APIVersion, Kind: "Tenant", Metadata: schema.TenantMeta{ID: "ws-a", Tier: schema.TierPro},
		Spec: schema.TenantSpec{State: schema.StateRunning, Droplet: schema.DropletSpec{Region: "nyc3"}}}
	d := Desired{Fleet: f, Tenants: map[string]*schema.Tenant{"ws-a": tn}}
	destroys, retires, restores := 0, 0, 0
	for seed := range uint64(2000) {
		r := rand.New(rand.NewPCG(seed, 18))
		w := &copyWorld{t: t, seed: seed, now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
		w.live = w.create("onboard", Snapshot{}, "")
		for step := range 60 {
			w.now = w.now.Add(time.Duration(1+r.IntN(120)) * time.Minute)
			ev := r.IntN(9)
			w.log = append(w.log, fmt.Sprintf("%d:%d", step, ev))
			switch {
			case ev <= 2 && w.live != nil && w.live.alive: // n8n writes; the agent sees it
				w.live.lastWrite, w.live.lastSeen = w.now, w.now
			case ev == 3 && w.live != nil && w.live.alive: // a backup (one in four fails: never recorded)
				if r.IntN(4) > 0 {
					w.backups = append(w.backups, modelCopy{id: fmt.Sprintf("b-%d", len(w.backups)+1), droplet: w.live.id, at: w.now})
				}
				w.live.lastSeen = w.now
			case ev == 4 && w.live != nil && w.live.alive: // the agent dies (n8n with it)
				w.live.alive = false
			case ev == 5 && w.live != nil && !w.live.alive && w.replaced == nil: // the watchdog rebuilds
				a, err := RebuildAction(d, w.observed(), "ws-a")
				if err != nil {
					t.Fatalf("seed %d: rebuild: %v", seed, err)
				}
				var from Snapshot
				for _, s := range w.observed().Snapshots {
					if s.ID == a.Snapshot && a.Snapshot != "" {
						from = s
					}
				}
				a.Restore = RestoreFrom(from, w.newestBackup(0))
				if a.Restore != "" {
					restores++
				}
				w.replaced, w.live = w.live, w.create("rebuild", from, a.Restore)
			case ev == 6 && w.replaced != nil && w.live != nil && w.live.alive: // the new droplet is healthy: retire the old one
				old := w.replaced
				a := RetireAction(Replaced{Workspace: "ws-a", ID: old.id, Name: old.name, Account: "acct-a", LastSeen: old.lastSeen}, w.newestBackup(old.id))
				switch a.Kind {
				case Destroy:
					destroys++
				case Retire: // stopped, snapshotted, then destroyed
					retires++
					w.snaps = append(w.snaps, modelCopy{id: fmt.Sprintf("s-%d", len(w.snaps)+1), droplet: old.id, at: old.lastWrite})
				default:
					t.Fatalf("seed %d: retirement is %s", seed, a.Kind)
				}
				w.destroyed(old, string(a.Kind))
				w.replaced = nil
			case ev == 7 && w.live != nil && w.live.alive && w.replaced == nil: // hibernate: snapshot, then destroy
				w.snaps = append(w.snaps, modelCopy{id: fmt.Sprintf("s-%d", len(w.snaps)+1), droplet: w.live.id, at: w.live.lastWrite})
				w.destroyed(w.live, "hibernate")
				w.live = nil
			case ev == 8 && w.live == nil: // wake from the latest snapshot
				var latest Snapshot
				for _, s := range w.observed().Snapshots {
					if s.Created.After(latest.Created) || latest.ID == "" {
						latest = s
					}
				}
				w.live = w.create("wake", latest, RestoreFrom(latest, w.newestBackup(0)))
			}
		}
	}
	// The histories reach every path.
	if destroys == 0 || retires == 0 || restores == 0 {
		t.Fatalf("histories never reached a path: %d destroys, %d retirements, %d restores", destroys, retires, restores)
	}
	t.Logf("%d outright destroys (a newer backup), %d retirements through a snapshot, %d rebuilds restoring a backup", destroys, retires, restores)
}

// TestRetireAction pins the proof: a backup taken by the replaced droplet
// itself, no earlier than its last sign of life.
func TestRetireAction(t *testing.T) {
	seen := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := Replaced{Workspace: "ws-a", ID: 7, Name: "genesis-ws-a-1", Account: "acct-a", LastSeen: seen}
	for _, c := range []struct {
		name   string
		r      Replaced
		newest *BackupCopy
		want   Kind
	}{
		{"no backup", r, nil, Retire},
		{"older backup", r, &BackupCopy{ID: "b-1", DropletID: 7, Started: seen.Add(-time.Second)}, Retire},
		{"backup at its last sign of life", r, &BackupCopy{ID: "b-1", DropletID: 7, Started: seen}, Destroy},
		{"newer backup", r, &BackupCopy{ID: "b-1", DropletID: 7, Started: seen.Add(time.Hour)}, Destroy},
		{"another droplet's backup", r, &BackupCopy{ID: "b-1", DropletID: 8, Started: seen.Add(time.Hour)}, Retire},
		{"never seen", Replaced{Workspace: "ws-a", ID: 7, Name: "genesis-ws-a-1"}, &BackupCopy{ID: "b-1", DropletID: 7, Started: seen}, Retire},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := RetireAction(c.r, c.newest)
			if a.Kind != c.want || a.DropletID != 7 || a.APICalls != c.want.Info().APICalls {
				t.Errorf("RetireAction = %s (droplet %d, %d calls), want %s", a.Kind, a.DropletID, a.APICalls, c.want)
			}
		})
	}
}
