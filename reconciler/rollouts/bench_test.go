package rollouts

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/rollout"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// simFleet is n tenants on real Postgres whose droplets are simulated in
// SQL: every released tenant gets a manifest of the rollout's target (as
// agentapi's render would issue), and applyAfter later its agent reports
// it applied and healthy, or (failing) that it rejected it. The clock is
// simulated: a step every tick.
type simFleet struct {
	st         *store.Store
	x          *Executor
	snap       tenants.Snapshot
	now        time.Time
	applyAfter time.Duration
}

const simN8N = "1.123.81"

func newSimFleet(tb testing.TB, n int, policy *schema.Rollout) *simFleet {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, pgtest.New(tb), log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(st.Close)
	fleet := testkit.Fleet()
	fleet.Spec.Defaults.N8NVersion = simN8N
	fleet.Spec.Rollout = policy
	sf := &simFleet{st: st, now: time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC), applyAfter: 30 * time.Second}
	sf.snap = tenants.Snapshot{Commit: "0123456789abcdef0123456789abcdef01234567", Fleet: fleet, Templates: map[string]*schema.Template{},
		Tenants: make(map[string]tenants.TenantState, n)}
	for i := range n {
		ws := fmt.Sprintf("ws-%06d", i)
		sf.snap.Tenants[ws] = tenants.TenantState{ID: ws, Tenant: &schema.Tenant{Metadata: schema.TenantMeta{ID: ws, Tier: schema.TierStarter}, Spec: schema.TenantSpec{State: schema.StateRunning}}}
	}
	sf.x = New(Config{Store: st, Desired: func() (tenants.Snapshot, bool) { return sf.snap, true }, Now: func() time.Time { return sf.now }, Logger: log})
	if err := sf.x.Step(ctx); err != nil { // adopts the fleet's inputs
		tb.Fatal(err)
	}
	r, _, err := st.LatestRollout(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO fleet_status (workspace, droplet_id, state, desired_state, health, manifest_version_issued, manifest_version_applied)
		SELECT 'ws-' || lpad(i::text, 6, '0'), 100000 + i, 'ACTIVE_HEALTHY', 'running', 'healthy', 1, 1 FROM generate_series(0, $1 - 1) i`,
		`INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash)
		SELECT 100000 + i, 'ws-' || lpad(i::text, 6, '0'), 'age1bench', decode(repeat('00', 32), 'hex'), sha256(('c-' || i)::bytea)
		FROM generate_series(0, $1 - 1) i`,
	} {
		if _, err := st.Pool().Exec(ctx, q, n); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := st.Pool().Exec(ctx, `INSERT INTO manifests (droplet_id, version, workspace, envelope, digest, issued_at, expires_at, commit, fleet_inputs)
		SELECT droplet_id, 1, workspace, '\x7b7d', sha256(workspace::bytea), $2::timestamptz, $2::timestamptz + interval '1 day', $3, $1 FROM agents`,
		r.Target, sf.now, sf.snap.Commit); err != nil {
		tb.Fatal(err)
	}
	return sf
}

// change makes the fleet's default n8n version v (a new fleet pointer,
// as the index gives for a changed genesis.yaml).
func (sf *simFleet) change(v string) {
	f := *sf.snap.Fleet
	f.Spec.Defaults.N8NVersion = v
	sf.snap.Fleet = &f
	sf.snap.Commit = "89abcdef0123456789abcdef0123456789abcdef"
}

// droplets plays the render and the agents at sf.now: released members
// without a manifest of the target get one; manifests of the target
// issued applyAfter ago are applied (or, failing, rejected).
func (sf *simFleet) droplets(ctx context.Context, r store.Rollout, failing bool) error {
	if _, err := sf.st.Pool().Exec(ctx, `INSERT INTO manifests (droplet_id, version, workspace, envelope, digest, issued_at, expires_at, commit, fleet_inputs)
		SELECT a.droplet_id, a.manifest_version + 1, a.workspace, '\x7b7d', sha256((a.workspace || r.target)::bytea), $2::timestamptz, $2::timestamptz + interval '1 day', '89abcdef0123456789abcdef0123456789abcdef', r.target
		FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id JOIN agents a ON a.workspace = m.workspace
		WHERE m.rollout_id = $1 AND m.released_at IS NOT NULL
		AND NOT EXISTS (SELECT 1 FROM manifests x WHERE x.droplet_id = a.droplet_id AND x.fleet_inputs = r.target)`, r.ID, sf.now); err != nil {
		return fmt.Errorf("render: %w", err)
	}
	ready := `SELECT x.droplet_id, x.version FROM manifests x WHERE x.fleet_inputs = $1 AND x.issued_at <= $2`
	var err error
	if failing {
		_, err = sf.st.Pool().Exec(ctx, `UPDATE fleet_status f SET heartbeat = jsonb_build_object('rejected', jsonb_build_array(
			jsonb_build_object('version', d.version, 'part', 'n8n', 'target', '9.9.9', 'reason', 'verify failed')))
			FROM (`+ready+`) d WHERE f.droplet_id = d.droplet_id AND NOT f.heartbeat ? 'rejected'`, r.Target, sf.now.Add(-sf.applyAfter))
	} else {
		_, err = sf.st.Pool().Exec(ctx, `UPDATE fleet_status f SET manifest_version_applied = d.version
			FROM (`+ready+`) d WHERE f.droplet_id = d.droplet_id AND f.manifest_version_applied < d.version`, r.Target, sf.now.Add(-sf.applyAfter))
	}
	return err
}

// run steps every tick of simulated time until the newest rollout is no
// longer running (at most limit) and returns it, the simulated time it
// took and the steps.
func (sf *simFleet) run(tb testing.TB, tick, limit time.Duration, failing bool) (store.Rollout, time.Duration, int) {
	ctx := context.Background()
	start := sf.now
	steps := 0
	for {
		if err := sf.x.Step(ctx); err != nil {
			tb.Fatal(err)
		}
		steps++
		r, _, err := sf.st.LatestRollout(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		if r.State != rollout.Running || sf.now.Sub(start) > limit {
			return r, sf.now.Sub(start), steps
		}
		if err := sf.droplets(ctx, r, failing); err != nil {
			tb.Fatal(err)
		}
		sf.now = sf.now.Add(tick)
	}
}

// benchPolicy is a 1% canary, a 10% wave and the rest, 5 minutes of bake
// each. The canary changes 5 droplets at a time and tolerates 4 failures:
// a version that fails everywhere reaches at most 5 droplets (the budget
// and the one that breaks it; a breach needs budget + 1 failures, so no
// policy can stop it with fewer).
func benchPolicy() *schema.Rollout {
	return &schema.Rollout{Waves: []schema.RolloutWave{
		{Name: "canary", Percent: 1, Bake: schema.Duration(5 * time.Minute), MaxUnavailable: "5", FailureBudget: "4"},
		{Name: "ten", Percent: 10, Bake: schema.Duration(5 * time.Minute), MaxUnavailable: "25%", FailureBudget: "1%"},
		{Name: "rest", Rest: true, Bake: schema.Duration(5 * time.Minute), MaxUnavailable: "10%", FailureBudget: "1%"},
	}, TenantChanges: schema.TenantChangesImmediate, OnFailure: schema.OnFailurePause, ProgressDeadline: schema.Duration(30 * time.Minute)}
}

// BenchmarkRollout15000 rolls a good and a failing n8n version over
// 15,000 tenants with benchPolicy, droplets applying 30 s (simulated)
// after their manifest, the executor stepping every 5 s (simulated), on
// real Postgres. It reports the full rollout's simulated time against the
// policy's lower bound (rollout.LowerBound at 30 s per droplet) as a
// ratio, and for the failing version the droplets that got it before the
// pause and the simulated time to the pause; ms/step is the real cost of
// one step over the fleet.
func BenchmarkRollout15000(b *testing.B) {
	const n = 15000
	for range b.N {
		b.StopTimer()
		sf := newSimFleet(b, n, benchPolicy())
		sf.change("1.124.0")
		b.StartTimer()
		wall := time.Now()
		r, took, steps := sf.run(b, 5*time.Second, 6*time.Hour, false)
		b.ReportMetric(float64(time.Since(wall).Milliseconds())/float64(steps), "ms/step")
		if r.State != rollout.Done {
			b.Fatalf("good version: rollout %s (%s)", r.State, r.Reason)
		}
		waves := rollout.Assign(benchPolicy(), Members(sf.snap), r.ID)
		bound := rollout.LowerBound(waves, sf.applyAfter)
		b.ReportMetric(took.Minutes(), "sim-min")
		b.ReportMetric(bound.Minutes(), "bound-min")
		b.ReportMetric(took.Seconds()/bound.Seconds(), "x-bound")

		b.StopTimer()
		bad := newSimFleet(b, n, benchPolicy())
		bad.change("9.9.9")
		b.StartTimer()
		r, took, _ = bad.run(b, 5*time.Second, 6*time.Hour, true)
		if r.State != rollout.Paused {
			b.Fatalf("failing version: rollout %s (%s)", r.State, r.Reason)
		}
		var affected int
		if err := bad.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM rollout_members WHERE rollout_id = $1 AND released_at IS NOT NULL`, r.ID).Scan(&affected); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(affected), "affected")
		b.ReportMetric(float64(waves[0].FailureBudget), "canary-budget")
		b.ReportMetric(took.Seconds(), "sim-s-to-pause")
	}
}

// TestRolloutSimulated is the benchmark's scenario on 600 tenants: a
// good version finishes within 1.5× its lower bound (the steps' 5 s
// granularity only), a failing one pauses in the canary with nobody
// outside it released.
func TestRolloutSimulated(t *testing.T) {
	sf := newSimFleet(t, 600, benchPolicy())
	sf.change("1.124.0")
	r, took, _ := sf.run(t, 5*time.Second, 6*time.Hour, false)
	if r.State != rollout.Done {
		t.Fatalf("rollout %s (%s)", r.State, r.Reason)
	}
	bound := rollout.LowerBound(rollout.Assign(benchPolicy(), Members(sf.snap), r.ID), sf.applyAfter)
	if took < bound || took > bound*3/2 {
		t.Errorf("took %s of simulated time, lower bound %s", took, bound)
	}
	bad := newSimFleet(t, 600, benchPolicy())
	// A hundred tenants are declared hibernated: no canary among them.
	for i := range 100 {
		ws := fmt.Sprintf("ws-%06d", i)
		ts := bad.snap.Tenants[ws]
		tn := *ts.Tenant
		tn.Spec.State = schema.StateHibernated
		ts.Tenant = &tn
		bad.snap.Tenants[ws] = ts
	}
	bad.change("9.9.9")
	var notices []notify.Notification
	bad.x.cfg.Notify = func(_ context.Context, n notify.Notification) error {
		notices = append(notices, n)
		return nil
	}
	r, _, _ = bad.run(t, 5*time.Second, 6*time.Hour, true)
	// People hear of the pause once, with the reason.
	if len(notices) != 1 || notices[0].Kind != notify.RolloutPaused || notices[0].Rollout != r.ID || notices[0].Detail != r.Reason ||
		!strings.Contains(notices[0].Summary, "paused") {
		t.Errorf("notices %+v, want one rollout_paused for %s (%s)", notices, r.ID, r.Reason)
	}
	var asleep int
	if err := bad.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM rollout_members WHERE rollout_id = $1 AND wave < 2 AND workspace < 'ws-000100'`, r.ID).Scan(&asleep); err != nil {
		t.Fatal(err)
	}
	if asleep != 0 {
		t.Errorf("%d tenants declared hibernated are in the canary or the 10%% wave", asleep)
	}
	if r.State != rollout.Paused || r.Wave != 0 {
		t.Fatalf("failing version: %s at wave %d (%s)", r.State, r.Wave, r.Reason)
	}
	var outside int
	if err := bad.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM rollout_members WHERE rollout_id = $1 AND wave > 0 AND released_at IS NOT NULL`, r.ID).Scan(&outside); err != nil {
		t.Fatal(err)
	}
	if outside != 0 {
		t.Errorf("%d tenants outside the canary were released", outside)
	}
	var affected int
	if err := bad.st.Pool().QueryRow(context.Background(), `SELECT count(*) FROM rollout_members WHERE rollout_id = $1 AND released_at IS NOT NULL`, r.ID).Scan(&affected); err != nil {
		t.Fatal(err)
	}
	if budget := 4; affected > budget+1 {
		t.Errorf("%d droplets got the failing version before the pause, want at most the canary's budget + 1 (%d)", affected, budget+1)
	}
}
