package fleetstats

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/migrations"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func openPool(t *testing.T) *pgxpool.Pool {
	t.Helper()
	url := pgtest.New(t)
	pool, err := pgxpool.New(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if _, err := migrations.Apply(t.Context(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

type row struct {
	ws        string
	droplet   int
	state     string
	heartbeat time.Duration // age of the last heartbeat; 0: never sent one
	since     time.Duration // age of state_since
	issued    int
	applied   int
}

func insert(t *testing.T, pool *pgxpool.Pool, rows []row) {
	t.Helper()
	for _, r := range rows {
		var hb *time.Time
		if r.heartbeat > 0 {
			at := t0.Add(-r.heartbeat)
			hb = &at
		}
		var droplet *int
		if r.droplet > 0 {
			droplet = &r.droplet
		}
		_, err := pool.Exec(t.Context(), `INSERT INTO fleet_status (workspace, droplet_id, state, state_since, desired_state,
			last_heartbeat_at, manifest_version_issued, manifest_version_applied)
			VALUES ($1, $2, $3, $4, 'running', $5, $6, $7)`,
			r.ws, droplet, r.state, t0.Add(-r.since), hb, r.issued, r.applied)
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestStats(t *testing.T) {
	pool := openPool(t)
	insert(t, pool, []row{
		{ws: "ws-fresh", droplet: 1, state: "ACTIVE_HEALTHY", heartbeat: 10 * time.Second, since: time.Hour, issued: 3, applied: 3},
		{ws: "ws-minute", droplet: 2, state: "ACTIVE_HEALTHY", heartbeat: 60 * time.Second, since: time.Hour, issued: 4, applied: 3},
		{ws: "ws-degraded", droplet: 3, state: "ACTIVE_DEGRADED", heartbeat: 7 * time.Minute, since: time.Hour, issued: 9, applied: 2},
		{ws: "ws-critical", droplet: 4, state: "ACTIVE_CRITICAL", heartbeat: 2 * time.Hour, since: time.Hour, issued: 1, applied: 1},
		// Never heartbeated: its age counts from state_since.
		{ws: "ws-silent", droplet: 5, state: "REBOOTING", since: 100 * time.Second},
		// Not counted: booting, or no droplet.
		{ws: "ws-booting", droplet: 6, state: "BOOTING", since: time.Minute},
		{ws: "ws-sleeping", state: "PENDING", since: time.Hour},
	})
	c := New(Config{Pool: pool, Now: func() time.Time { return t0 }})
	s, ok := c.Stats(t.Context())
	if !ok {
		t.Fatal("no stats")
	}
	want := Stats{
		HeartbeatAge: Histogram{Count: 5, Sum: 10 + 60 + 420 + 7200 + 100, Bounds: AgeBuckets,
			//       15 30 60 90 120 180 300 600 900 1800 3600 21600 86400
			Counts: []uint64{1, 1, 2, 2, 3, 3, 3, 4, 4, 4, 4, 5, 5}},
		// ws-silent was never issued a manifest: not in the lag histogram.
		VersionLag: Histogram{Count: 4, Sum: 0 + 1 + 7 + 0, Bounds: LagBuckets,
			//       0  1  2  3  5 10 20 50
			Counts: []uint64{2, 3, 3, 3, 3, 4, 4, 4}},
	}
	if diff := cmp.Diff(want, s); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
}

func TestExposition(t *testing.T) {
	pool := openPool(t)
	insert(t, pool, []row{
		{ws: "ws-a", droplet: 1, state: "ACTIVE_HEALTHY", heartbeat: 20 * time.Second, since: time.Hour, issued: 2, applied: 1},
	})
	c := New(Config{Pool: pool, Now: func() time.Time { return t0 }})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	want := `
# HELP genesis_agent_version_lag Manifest versions issued to each enrolled droplet but not yet applied (issued - applied).
# TYPE genesis_agent_version_lag histogram
genesis_agent_version_lag_bucket{le="0"} 0
genesis_agent_version_lag_bucket{le="1"} 1
genesis_agent_version_lag_bucket{le="2"} 1
genesis_agent_version_lag_bucket{le="3"} 1
genesis_agent_version_lag_bucket{le="5"} 1
genesis_agent_version_lag_bucket{le="10"} 1
genesis_agent_version_lag_bucket{le="20"} 1
genesis_agent_version_lag_bucket{le="50"} 1
genesis_agent_version_lag_bucket{le="+Inf"} 1
genesis_agent_version_lag_sum 1
genesis_agent_version_lag_count 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "genesis_agent_version_lag"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg, "genesis_heartbeat_age_seconds", "genesis_fleetstats_errors_total"); err != nil || n != 2 {
		t.Errorf("gathered %d series (err %v), want the age histogram and the error counter", n, err)
	}
}

// TestCacheAndFailure checks that a result is reused for MaxAge, and that a
// failing database keeps the last good result and counts the error.
func TestCacheAndFailure(t *testing.T) {
	pool := openPool(t)
	insert(t, pool, []row{{ws: "ws-a", droplet: 1, state: "ACTIVE_HEALTHY", heartbeat: 20 * time.Second, since: time.Hour}})
	now := t0
	c := New(Config{Pool: pool, MaxAge: time.Minute, Now: func() time.Time { return now }})
	first, _ := c.Stats(t.Context())
	insert(t, pool, []row{{ws: "ws-b", droplet: 2, state: "ACTIVE_HEALTHY", heartbeat: 20 * time.Second, since: time.Hour}})
	if s, _ := c.Stats(t.Context()); s.HeartbeatAge.Count != first.HeartbeatAge.Count {
		t.Errorf("within MaxAge: count %d, want the cached %d", s.HeartbeatAge.Count, first.HeartbeatAge.Count)
	}
	now = now.Add(2 * time.Minute)
	if s, _ := c.Stats(t.Context()); s.HeartbeatAge.Count != 2 {
		t.Errorf("after MaxAge: count %d, want 2", s.HeartbeatAge.Count)
	}
	pool.Close()
	now = now.Add(2 * time.Minute)
	s, ok := c.Stats(context.Background())
	if !ok || s.HeartbeatAge.Count != 2 {
		t.Errorf("database gone: got %+v ok=%v, want the last result", s.HeartbeatAge, ok)
	}
	if got := testutil.ToFloat64(c.errors); got != 1 {
		t.Errorf("errors = %v, want 1", got)
	}
}
