package availability

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

func TestMain(m *testing.M) {
	if os.Getenv(benchServerEnv) != "" {
		benchServe()
		return
	}
	pgtest.Main(m)
}

const zone = "t.genesis.test"

func openStore(t testing.TB) *store.Store {
	t.Helper()
	s, err := store.Open(t.Context(), pgtest.New(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// fixed lists the targets ws-000 … of tier pro (ws-000 starter).
func fixed(n int) func(context.Context) ([]Target, error) {
	var ts []Target
	for i := range n {
		ws := fmt.Sprintf("ws-%03d", i)
		tier := "pro"
		if i == 0 {
			tier = "starter"
		}
		ts = append(ts, Target{Workspace: ws, Tier: tier, Host: ws + "." + zone})
	}
	return func(context.Context) ([]Target, error) { return ts, nil }
}

func newProber(t testing.TB, st *store.Store, w *world, c *clock, replica string, targets func(context.Context) ([]Target, error), reg prometheus.Registerer) *Prober {
	t.Helper()
	return New(Config{Store: st, Replica: replica, Targets: targets, Interval: time.Minute, Timeout: 5 * time.Second, Concurrency: 8,
		RootCAs: w.roots, DialContext: w.dial, Now: c.Now, Registerer: reg})
}

// TestOutageTenMinutes: a tenant whose name refuses connections for 10
// rounds of a day of 60 s rounds (the clock injected) reads exactly
// 1 - 10/1440 over the day and the 30 days, 50/60 over the hour that
// holds the outage; the counters say the same.
func TestOutageTenMinutes(t *testing.T) {
	st := openStore(t)
	w := newWorld(t, zone, 2)
	day := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	c := &clock{now: day}
	reg := prometheus.NewRegistry()
	p := newProber(t, st, w, c, "r1", fixed(3), reg)
	ctx := t.Context()
	for m := range store.MinutesPerDay {
		w.setDown("ws-001."+zone, m >= 600 && m < 610)
		res, err := p.Round(ctx)
		if err != nil {
			t.Fatalf("round %d: %v", m, err)
		}
		if res.Probed != 3 || res.Stored != 3 {
			t.Fatalf("round %d: %+v", m, res)
		}
		if m == 609 {
			got, err := TenantReport(ctx, st, "ws-001", c.Now())
			if err != nil {
				t.Fatal(err)
			}
			if got.Windows.Hour.Probes != 60 || got.Windows.Hour.Up != 50 {
				t.Errorf("hour 09:10-10:09: %+v, want 50 of 60 up", got.Windows.Hour)
			}
		}
		if m < store.MinutesPerDay-1 {
			c.Advance(time.Minute)
		}
	}
	got, err := TenantReport(ctx, st, "ws-001", c.Now())
	if err != nil || got == nil {
		t.Fatalf("report: %v %v", got, err)
	}
	want := 1 - 10.0/1440
	for name, win := range map[string]struct {
		probes, up int64
		ratio      *float64
	}{"1d": {got.Windows.Day.Probes, got.Windows.Day.Up, got.Windows.Day.Ratio},
		"30d": {got.Windows.Month.Probes, got.Windows.Month.Up, got.Windows.Month.Ratio}} {
		if win.probes != 1440 || win.up != 1430 || win.ratio == nil || math.Abs(*win.ratio-want) > 1e-12 {
			t.Errorf("%s: %d of %d up, ratio %v; want 1430 of 1440 (%v)", name, win.up, win.probes, win.ratio, want)
		}
	}
	if h := got.Windows.Hour; h.Probes != 60 || h.Up != 60 {
		t.Errorf("the last hour: %+v, want 60 of 60", h)
	}
	// Budget: 10 minutes of 1440 at 99.5% spends 10/7.2 of the day's.
	if b := got.Windows.Day.BudgetRemaining; b == nil || math.Abs(*b-(1-10/7.2)) > 1e-6 {
		t.Errorf("day's budget remaining %v, want %v", b, 1-10/7.2)
	}
	for _, tc := range []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"pro down", p.m.probes.WithLabelValues("pro", "down"), 10},
		{"pro up", p.m.probes.WithLabelValues("pro", "up"), 2*1440 - 10},
		{"starter up", p.m.probes.WithLabelValues("starter", "up"), 1440},
		{"connect errors", p.m.errors.WithLabelValues(KindConnect), 10},
		{"enterprise (initialised)", p.m.probes.WithLabelValues("enterprise", "up"), 0},
	} {
		if got := testutil.ToFloat64(tc.c); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	rep, err := Report(ctx, st, c.Now(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Worst) != 1 || rep.Worst[0].Workspace != "ws-001" || len(rep.Tiers) != 2 || rep.Tiers[0].Tier != "pro" || rep.Tiers[0].Tenants != 2 {
		t.Errorf("report: %+v", rep)
	}
	if d := rep.Tiers[0].Windows.Day; d.Probes != 2880 || d.Up != 2870 {
		t.Errorf("tier pro over the day: %+v", d)
	}
}

// TestProbeKinds: each way a name can fail is counted under its kind.
func TestProbeKinds(t *testing.T) {
	w := newWorld(t, zone, 1)
	c := &clock{now: time.Now()}
	p := newProber(t, nil, w, c, "r1", nil, prometheus.NewRegistry())
	w.setStatus("ws-503."+zone, http.StatusServiceUnavailable)
	w.setDown("ws-down."+zone, true)
	untrusting := New(Config{Timeout: 5 * time.Second, DialContext: w.dial, Registerer: prometheus.NewRegistry()})
	for _, tc := range []struct {
		p    *Prober
		host string
		want string
	}{
		{p, "ws-up." + zone, ""},
		{p, "ws-503." + zone, KindStatus},
		{p, "ws-down." + zone, KindConnect},
		{p, "ws-x.elsewhere.test", KindDNS},
		{untrusting, "ws-up." + zone, KindTLS}, // the system roots do not know the test CA
	} {
		t.Run(tc.host+"/"+tc.want, func(t *testing.T) {
			if got := tc.p.probe(t.Context(), tc.host); got != tc.want {
				t.Errorf("kind %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseHealth(t *testing.T) {
	for _, tc := range []struct {
		body, err string
	}{
		{`{"status":"ok"}`, ""},
		{`{"status":"ok","extra":1}`, ""},
		{`{"status":"error"}`, `health body: status is "error", not "ok"`},
		{`{}`, "health body: no status field"},
		{`ok`, "health body: not a JSON object: invalid character 'o' looking for beginning of value"},
		{`{"status":1}`, "health body: not a JSON object: json: cannot unmarshal number into Go struct field .status of type string"},
	} {
		err := ParseHealth([]byte(tc.body))
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.err {
			t.Errorf("%s: error %q, want %q", tc.body, got, tc.err)
		}
	}
}

func FuzzParseHealth(f *testing.F) {
	for _, s := range []string{`{"status":"ok"}`, `{}`, `[]`, `null`, `{"status":null}`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if err := ParseHealth(b); err == nil && len(b) > maxHealthBody {
			t.Errorf("accepted %d bytes", len(b))
		}
	})
}

// TestTwoReplicas: two probers over one database probe each tenant once a
// round — never twice — while they share the shards; when one dies (stops
// without releasing) the other takes its shards once the leases expire,
// and when one stops cleanly the other takes them at its next round.
func TestTwoReplicas(t *testing.T) {
	st := openStore(t)
	w := newWorld(t, zone, 2)
	c := &clock{now: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)}
	targets := fixed(40)
	a := newProber(t, st, w, c, "a", targets, prometheus.NewRegistry())
	b := newProber(t, st, w, c, "b", targets, prometheus.NewRegistry())
	ctx := t.Context()
	all, _ := targets(ctx)
	probedBy := map[string]int{}
	round := func(n int, ps ...*Prober) map[string]int {
		t.Helper()
		for _, p := range ps {
			res, err := p.Round(ctx)
			if err != nil {
				t.Fatalf("round %d: %v", n, err)
			}
			probedBy[p.cfg.Replica] = res.Probed
		}
		hits := w.takeHits()
		for host, k := range hits {
			if k > 1 {
				t.Errorf("round %d: %s probed %d times", n, host, k)
			}
		}
		c.Advance(time.Minute)
		return hits
	}
	everyOnce := func(n int, hits map[string]int) {
		t.Helper()
		for _, tg := range all {
			if hits[tg.Host] != 1 {
				t.Errorf("round %d: %s probed %d times, want once", n, tg.Host, hits[tg.Host])
			}
		}
	}
	n := 0
	for range 4 {
		n++
		hits := round(n, a, b)
		if n != 2 { // in round 2 b's first shards arrive after a gave them back: missed once
			everyOnce(n, hits)
		}
	}
	if len(a.Shards()) != 32 || len(b.Shards()) != 32 || probedBy["a"]+probedBy["b"] != 40 || probedBy["b"] == 0 {
		t.Fatalf("shared: a %d shards, b %d; probed %v", len(a.Shards()), len(b.Shards()), probedBy)
	}
	// a dies: b goes on alone; a's tenants wait for the leases to expire
	// (3 intervals), then b probes everyone.
	for range 4 {
		n++
		round(n, b)
	}
	n++
	everyOnce(n, round(n, b))
	if len(b.Shards()) != store.AvailabilityShards {
		t.Errorf("b after a died: %d shards", len(b.Shards()))
	}
	// a comes back and b stops cleanly (Run returns and releases): a
	// takes everything at its next round.
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- b.Run(runCtx) }()
	testkit.WaitFor(t, "b's first round in Run", func() bool { return testutil.ToFloat64(b.m.rounds.WithLabelValues("ok")) >= 10 })
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.takeHits()
	n++
	everyOnce(n, round(n, a))
	if len(a.Shards()) != store.AvailabilityShards {
		t.Errorf("a after b released: %d shards", len(a.Shards()))
	}
	// No tenant was stored twice for a minute: each tenant's day holds at
	// most one probe per round.
	for _, tg := range all {
		r, _, err := st.TenantAvailability(ctx, tg.Workspace, c.Now())
		if err != nil {
			t.Fatal(err)
		}
		if p := r.Windows[1].Probes; p > int64(n+1) || p < int64(n-4) {
			t.Errorf("%s: %d probes stored over %d rounds", tg.Workspace, p, n)
		}
	}
}

// TestSelect: only tenants declared running whose lifecycle counts are
// probed; no spec.dns is ErrOff.
func TestSelect(t *testing.T) {
	tenant := func(tier schema.Tier, state schema.State) tenants.TenantState {
		return tenants.TenantState{Tenant: &schema.Tenant{Metadata: schema.TenantMeta{Tier: tier}, Spec: schema.TenantSpec{State: state}}}
	}
	snap := tenants.Snapshot{Fleet: &schema.Fleet{Spec: schema.FleetSpec{DNS: &schema.DNS{Zone: zone}}}, Tenants: map[string]tenants.TenantState{
		"ws-a": tenant(schema.TierPro, schema.StateRunning),
		"ws-b": tenant(schema.TierStarter, schema.StateRunning),
		"ws-c": tenant(schema.TierPro, schema.StateHibernated),
		"ws-d": tenant(schema.TierPro, schema.StateRunning),
		"ws-e": tenant(schema.TierEnterprise, schema.StateRunning),
		"ws-f": {},
	}}
	states := map[string]string{"ws-a": string(lifecycle.ActiveHealthy), "ws-b": string(lifecycle.Rebooting), "ws-c": string(lifecycle.Hibernated),
		"ws-d": string(lifecycle.Waking), "ws-e": string(lifecycle.Failed)}
	got, err := Select(snap, states)
	if err != nil {
		t.Fatal(err)
	}
	want := []Target{{"ws-a", "pro", "ws-a." + zone}, {"ws-b", "starter", "ws-b." + zone}, {"ws-e", "enterprise", "ws-e." + zone}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	snap.Fleet.Spec.DNS = nil
	if _, err := Select(snap, states); err != ErrOff {
		t.Errorf("without spec.dns: err %v, want ErrOff", err)
	}
}
