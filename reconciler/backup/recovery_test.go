package backup

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/schema"
)

func TestRecoveryPoints(t *testing.T) {
	e := newEnv(t)
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	e.now = now
	ago := func(h int) time.Time { return now.Add(-time.Duration(h) * time.Hour) }
	e.snap.Tenants["ws-old"] = tenant("ws-old", schema.TierPro)
	e.snap.Tenants["ws-hib"] = tenant("ws-hib", schema.TierStarter)
	a := e.good("ws-a", ago(3))
	e.good("ws-e", ago(5))
	old := e.good("ws-old", ago(72))
	e.snaps = map[string]SnapshotCopy{"ws-e": {ID: "snap-e", At: ago(1)}, "ws-hib": {ID: "snap-hib", At: ago(500)}}
	e.live = map[string]time.Time{"ws-a": ago(100), "ws-e": ago(100), "ws-new": ago(50), "ws-old": ago(200)}

	if got := e.svc.Points(); len(got) != 0 {
		t.Errorf("Points before any Refresh = %v, want none", got)
	}
	if _, err := e.svc.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	h := time.Hour
	want := map[string]Point{
		"ws-a":   {At: ago(3), Kind: "backup", ID: a, LiveSince: ago(100), Age: 3 * h, Objective: 48 * h},
		"ws-e":   {At: ago(1), Kind: "snapshot", ID: "snap-e", LiveSince: ago(100), Age: h, Objective: 2 * h},
		"ws-new": {LiveSince: ago(50), Age: 50 * h, Objective: 48 * h, Stale: true},
		"ws-old": {At: ago(72), Kind: "backup", ID: old, LiveSince: ago(200), Age: 72 * h, Objective: 48 * h, Stale: true},
		"ws-hib": {At: ago(500), Kind: "snapshot", ID: "snap-hib", Age: 500 * h, Objective: 48 * h},
	}
	if diff := cmp.Diff(want, e.svc.Points(), cmp.Comparer(func(a, b time.Time) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("Points (-want +got):\n%s", diff)
	}
	if p, ok := e.svc.Point("ws-e"); !ok || p.Kind != "snapshot" || p.Stale {
		t.Errorf("Point(ws-e) = %+v, %v", p, ok)
	}
	if _, ok := e.svc.Point("ws-nobody"); ok {
		t.Error("Point of an unknown workspace")
	}

	// Live tenants: ages 3h, 1h, 50h, 72h; two are stale.
	const metrics = `
# HELP genesis_recovery_point_age_seconds Age of each live tenant's newest copy (good backup or snapshot); a live tenant with no copy counts with the time since its droplet went live.
# TYPE genesis_recovery_point_age_seconds histogram
genesis_recovery_point_age_seconds_bucket{le="900"} 0
genesis_recovery_point_age_seconds_bucket{le="3600"} 1
genesis_recovery_point_age_seconds_bucket{le="7200"} 1
genesis_recovery_point_age_seconds_bucket{le="21600"} 2
genesis_recovery_point_age_seconds_bucket{le="43200"} 2
genesis_recovery_point_age_seconds_bucket{le="86400"} 2
genesis_recovery_point_age_seconds_bucket{le="172800"} 2
genesis_recovery_point_age_seconds_bucket{le="604800"} 4
genesis_recovery_point_age_seconds_bucket{le="+Inf"} 4
genesis_recovery_point_age_seconds_sum 453600
genesis_recovery_point_age_seconds_count 4
# HELP genesis_recovery_point_stale_tenants Live tenants whose newest copy is older than their tier's recovery-point objective (counted from when the droplet went live, if later).
# TYPE genesis_recovery_point_stale_tenants gauge
genesis_recovery_point_stale_tenants 2
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(metrics), "genesis_recovery_point_age_seconds", "genesis_recovery_point_stale_tenants"); err != nil {
		t.Error(err)
	}

	// A new backup of ws-old counts at the next sweep; time moving on
	// ages the points without one.
	e.good("ws-old", ago(0))
	e.now = now.Add(time.Hour)
	if _, err := e.svc.Sweep(t.Context()); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.svc.Point("ws-old"); p.Stale || p.Age != h {
		t.Errorf("ws-old after a new backup = %+v, want 1h old, not stale", p)
	}
	if p, _ := e.svc.Point("ws-a"); p.Age != 4*h {
		t.Errorf("ws-a an hour later: age %v, want 4h", p.Age)
	}
	const stale = `
# HELP genesis_recovery_point_stale_tenants Live tenants whose newest copy is older than their tier's recovery-point objective (counted from when the droplet went live, if later).
# TYPE genesis_recovery_point_stale_tenants gauge
genesis_recovery_point_stale_tenants 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(stale), "genesis_recovery_point_stale_tenants"); err != nil {
		t.Error(err)
	}
}

func TestBackupsTotalRegistered(t *testing.T) {
	e := newEnv(t)
	start, fin := e.upload("ws-a", []byte("data"))
	if err := e.svc.Finish(t.Context(), "ws-a", start.ID, fin); err != nil {
		t.Fatal(err)
	}
	const metrics = `
# HELP genesis_backups_total Backups agents finished, by result: succeeded (storage holds what the agent reported), failed (the agent reported an error, or the upload URL could not be made) or mismatch (storage holds nothing, or another size).
# TYPE genesis_backups_total counter
genesis_backups_total{result="failed"} 0
genesis_backups_total{result="mismatch"} 0
genesis_backups_total{result="succeeded"} 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(metrics), "genesis_backups_total"); err != nil {
		t.Error(err)
	}
}
