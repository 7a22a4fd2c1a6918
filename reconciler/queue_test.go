package reconciler

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		attempts int
		u        float64
		want     time.Duration
	}{
		{0, 0.5, 10 * time.Second},
		{1, 0.5, 10 * time.Second},
		{2, 0.5, 20 * time.Second},
		{3, 0.5, 40 * time.Second},
		{7, 0.5, 640 * time.Second},
		{8, 0.5, BackoffMax},
		{100, 0.5, BackoffMax},
		{1, 0, 8 * time.Second},
		{1, 0.999999, 12 * time.Second},
		{2, 0, 16 * time.Second},
		{8, 1, BackoffMax},
		{8, 0, 12 * time.Minute},
		{1 << 30, 1, BackoffMax},
		{3, -5, 32 * time.Second},
		{3, 7, 48 * time.Second},
	} {
		t.Run(fmt.Sprintf("%d/%g", tc.attempts, tc.u), func(t *testing.T) {
			got := Backoff(tc.attempts, tc.u).Round(time.Millisecond)
			if got != tc.want {
				t.Errorf("Backoff(%d, %g) = %v, want %v", tc.attempts, tc.u, got, tc.want)
			}
		})
	}
}

// TestBackoffProperties: over random attempts and jitter draws, the wait
// never exceeds the cap, never shrinks as attempts grow (same draw), and
// stays within ±BackoffJitter of the un-jittered wait.
func TestBackoffProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		n, u := 1+rng.IntN(60), rng.Float64()
		d, next := Backoff(n, u), Backoff(n+1, u)
		if d > BackoffMax || d <= 0 {
			t.Fatalf("Backoff(%d, %g) = %v, want in (0, %v]", n, u, d, BackoffMax)
		}
		if next < d {
			t.Fatalf("Backoff(%d, %g) = %v < Backoff(%d) = %v: it shrank", n+1, u, next, n, d)
		}
		plain := Backoff(n, 0.5)
		lo, hi := time.Duration(float64(plain)*(1-BackoffJitter)), time.Duration(float64(plain)*(1+BackoffJitter))
		if d < lo-time.Millisecond || d > hi+time.Millisecond {
			t.Fatalf("Backoff(%d, %g) = %v, want within ±%g of %v", n, u, d, BackoffJitter, plain)
		}
	}
}

// queueFleet puts each region in its own account, so a fault injected on
// one account's creates hits exactly one tenant.
func queueFleet() *schema.Fleet {
	f := testFleet()
	f.Spec.Accounts[1].Regions = []string{"fra1"}
	f.Spec.Sizes = map[string]schema.Size{"s-1vcpu-1gb": {MonthlyUSD: 6}}
	return f
}

// callCounter counts the simulator's DigitalOcean requests per account,
// leaving out the pass's shared observation (the fleet-wide listings by the
// genesis tag), so what remains is what a tenant's actions spend.
type callCounter struct {
	mu      sync.Mutex
	creates map[string]int // POST /v2/droplets
	calls   map[string]int // every request but the shared observation
}

func (c *callCounter) wrap(next http.Handler) http.Handler {
	accounts := map[string]string{"Bearer tok-a": "acct-a", "Bearer tok-b": "acct-b"}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acct := accounts[r.Header.Get("Authorization")]
		shared := r.Method == http.MethodGet && (r.URL.Query().Get("tag_name") == plan.TagFleet || r.URL.Path == "/v2/snapshots")
		c.mu.Lock()
		if !shared {
			c.calls[acct]++
		}
		if r.Method == http.MethodPost && r.URL.Path == "/v2/droplets" {
			c.creates[acct]++
		}
		c.mu.Unlock()
		next.ServeHTTP(w, r)
	})
}

func (c *callCounter) get() (creates, calls map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	creates, calls = map[string]int{}, map[string]int{}
	for k, v := range c.creates {
		creates[k] = v
	}
	for k, v := range c.calls {
		calls[k] = v
	}
	return creates, calls
}

// queueWorld is a reconciler over queueFleet with one tenant whose creates
// DigitalOcean refuses (422: terminal) and one whose creates fail with 503
// (transient), every time.
type queueWorld struct {
	*harness
	count *callCounter
	log   *slog.Logger
}

func newQueueWorld(t *testing.T) *queueWorld {
	t.Helper()
	h := &harness{t: t, state: testkit.NewStateRepo(t)}
	h.repo = h.state.Dir
	w := &queueWorld{harness: h, count: &callCounter{creates: map[string]int{}, calls: map[string]int{}},
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	h.state.WriteFleet(queueFleet())
	h.state.WriteTenant(tenant("ws-term", "running", "nyc3"))
	h.state.WriteTenant(tenant("ws-flaky", "running", "fra1"))
	h.state.Commit("two tenants")
	h.sim = dosimtest.Start(t, dosim.Config{Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 50}, {Name: "acct-b", Token: "tok-b", DropletLimit: 50}},
		Limits: dosim.Limits{RatePerMinute: -1, RatePerHour: -1}}, dosimtest.WithMiddleware(w.count.wrap))
	h.sim.Sim.Freeze(true)
	for _, f := range []dosim.Fault{
		{Kind: dosim.FaultError, Route: "POST /v2/droplets", Account: "acct-a", Status: 422, Message: "You specified an invalid image for Droplet creation.", Count: 1 << 30},
		{Kind: dosim.FaultError, Route: "POST /v2/droplets", Account: "acct-b", Status: 503, Count: 1 << 30},
	} {
		if _, err := h.sim.Sim.InjectFault(f); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	h.store, err = store.Open(t.Context(), pgtest.New(t), w.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.store.Close)
	h.src, err = tenants.Open(tenants.Config{Repo: h.repo, Logger: w.log})
	if err != nil {
		t.Fatal(err)
	}
	h.rec = w.newReconciler()
	return w
}

// newReconciler is a replica on the world's database and simulator (a new
// leader after a restart), on the simulator's clock, with no jitter.
func (w *queueWorld) newReconciler() *Reconciler {
	return New(Config{Store: w.store, Logger: w.log, Now: w.sim.Sim.Now, Jitter: func() float64 { return 0.5 },
		NewCloud: func(f *schema.Fleet) (*cloud.Pool, error) {
			var accts []cloud.Account
			for _, a := range f.Spec.Accounts {
				accts = append(accts, cloud.Account{Name: a.Name, Token: tokens[a.Name], BaseURL: w.sim.URL})
			}
			return cloud.New(cloud.Config{Accounts: accts, Logger: w.log, Limits: cloud.Limits{PollMin: time.Millisecond, PollMax: 5 * time.Millisecond,
				RetryBase: time.Millisecond, RetryMax: 2 * time.Millisecond, PerMinute: 1 << 20, PerHour: 1 << 20}})
		}})
}

// sync delivers the repository's head to the reconciler.
func (w *queueWorld) sync(ctx context.Context) {
	w.t.Helper()
	snap, err := w.src.Sync(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	w.rec.Deliver(ctx, snap, nil)
}

// run steps the simulated clock by step for d, with a pass (and its jobs)
// after each step, as the leader's loop does when kicked or due.
func (w *queueWorld) run(ctx context.Context, d, step time.Duration) {
	w.t.Helper()
	for end := w.sim.Sim.Now().Add(d); w.sim.Sim.Now().Before(end); {
		w.sim.Sim.Advance(step)
		if _, err := w.rec.Pass(ctx); err != nil {
			w.t.Fatal(err)
		}
		w.rec.Wait()
	}
}

func (w *queueWorld) holds(ctx context.Context) map[string]plan.Hold {
	w.t.Helper()
	hs, err := w.store.Holds(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	return hs
}

// TestQueueBackoffByKind runs a simulated hour in which every create of
// ws-term answers 422 and every create of ws-flaky 503, and counts what
// each spends at DigitalOcean: the terminal one tries once and waits for
// new input (a change of its file, an operator's retry: each makes it try
// at once, and once); the transient one backs off exponentially to the
// cap. A new leader continues the backoff from Postgres.
func TestQueueBackoffByKind(t *testing.T) {
	w := newQueueWorld(t)
	ctx := t.Context()
	w.sync(ctx)
	w.run(ctx, time.Hour, 10*time.Second)

	creates, calls := w.count.get()
	t.Logf("simulated hour: creates %v, calls by account (shared observation left out) %v", creates, calls)
	hs := w.holds(ctx)
	if got := creates["acct-a"]; got != 1 {
		t.Errorf("creates of the terminal tenant in an hour = %d, want 1", got)
	}
	if got, want := hs["ws-term"], (plan.Hold{Kind: plan.HoldTerminal, Attempts: 1, Action: plan.Create}); got.Kind != want.Kind || got.Attempts != want.Attempts || got.Action != want.Action || !got.Until.IsZero() {
		t.Errorf("terminal hold = %+v, want %+v", got, want)
	}
	// 10 s × 2^n to the 15 min cap: tries at 0, 10, 30, 70, 150, 310,
	// 630, 1270, 2170, 3070 s (plus up to one 10 s step of lateness each).
	flaky := hs["ws-flaky"]
	if flaky.Kind != plan.HoldTransient || flaky.Attempts < 8 || flaky.Attempts > 10 {
		t.Errorf("transient hold = %+v, want transient after 8-10 attempts", flaky)
	}
	if wait := flaky.Until.Sub(w.sim.Sim.Now()); wait > BackoffMax || wait <= 0 {
		t.Errorf("transient hold ends in %v, want within (0, %v]", wait, BackoffMax)
	}
	if perTry := creates["acct-b"] / max(flaky.Attempts, 1); creates["acct-b"]%max(flaky.Attempts, 1) != 0 || perTry < 1 || perTry > 5 {
		t.Errorf("creates of the transient tenant = %d over %d attempts, want the same bounded number per attempt", creates["acct-b"], flaky.Attempts)
	}
	m := w.rec.cfg.Metrics
	for kind, want := range map[string]float64{plan.HoldTransient: 1, plan.HoldTerminal: 1, plan.HoldCapacity: 0, plan.HoldPending: 0, plan.HoldNotFound: 0} {
		if got := testutil.ToFloat64(m.backingOff.WithLabelValues(kind)); got != want {
			t.Errorf("genesis_tenants_backing_off{kind=%q} = %v, want %v", kind, got, want)
		}
	}
	if got := testutil.ToFloat64(m.retries.WithLabelValues(plan.HoldTransient)); got != float64(flaky.Attempts) {
		t.Errorf("genesis_action_retries_total{kind=transient} = %v, want %d", got, flaky.Attempts)
	}

	// /v1/fleet and the plan say who is held, until when, and why.
	rows, err := w.store.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tv := range fleetapi.View(rows, w.rec).Tenants {
		got = append(got, fmt.Sprintf("%s kind=%s attempts=%d until=%v", tv.Workspace, tv.LastErrorKind, tv.Attempts, tv.RetryAfter.Equal(flaky.Until)))
	}
	want := []string{fmt.Sprintf("ws-flaky kind=transient attempts=%d until=true", flaky.Attempts), "ws-term kind=terminal attempts=1 until=false"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("fleet view (-want +got):\n%s", diff)
	}
	var text strings.Builder
	p := w.rec.LastPlan()
	plan.WriteText(&text, p, plan.Summary{}, "")
	for _, s := range []string{"held: ws-flaky: backing off until " + flaky.Until.UTC().Format(time.RFC3339), "held: ws-term: waiting for a change of its file"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("plan text lacks %q:\n%s", s, text.String())
		}
	}

	// A new leader (a restart) continues the backoff: nothing is tried
	// before the persisted retry_after.
	w.rec = w.newReconciler()
	w.sync(ctx)
	before, _ := w.count.get()
	if wait := flaky.Until.Sub(w.sim.Sim.Now()); wait > 10*time.Second {
		w.run(ctx, wait-10*time.Second, 10*time.Second)
	}
	after, _ := w.count.get()
	if after["acct-b"] != before["acct-b"] || after["acct-a"] != before["acct-a"] {
		t.Errorf("creates after a leader restart, before the persisted retry_after: %v → %v, want none", before, after)
	}
	w.run(ctx, 20*time.Second, 10*time.Second)
	if got := w.holds(ctx)["ws-flaky"].Attempts; got != flaky.Attempts+1 {
		t.Errorf("attempts after the persisted retry_after = %d, want %d (continued, not restarted)", got, flaky.Attempts+1)
	}

	// A change of the terminal tenant's file is new input: it tries at
	// once, once.
	before, _ = w.count.get()
	term := tenant("ws-term", "running", "nyc3")
	term.Metadata.Name = "Term Inc"
	w.state.WriteTenant(term)
	w.state.Commit("rename ws-term")
	w.sync(ctx)
	w.run(ctx, 10*time.Minute, 10*time.Second)
	after, _ = w.count.get()
	if got := after["acct-a"] - before["acct-a"]; got != 1 {
		t.Errorf("creates of the terminal tenant after a change of its file = %d, want 1", got)
	}
	if got := w.holds(ctx)["ws-term"].Attempts; got != 2 {
		t.Errorf("terminal attempts = %d, want 2", got)
	}

	// An operator's retry clears the hold: it tries at once, once.
	if err := w.rec.Retry(ctx, "ws-term", "test", "retry requested through the API"); err != nil {
		t.Fatalf("retry of a tenant held terminally: %v", err)
	}
	w.run(ctx, 10*time.Minute, 10*time.Second)
	final, _ := w.count.get()
	if got := final["acct-a"] - after["acct-a"]; got != 1 {
		t.Errorf("creates of the terminal tenant after a retry = %d, want 1", got)
	}
	// A retry of a tenant that is neither FAILED nor held is refused.
	if err := w.rec.Retry(ctx, "ws-nobody", "test", "retry"); err == nil {
		t.Errorf("retry of a tenant with nothing to retry: nil error, want ErrNotFailed")
	}
}

// TestQueueRealLoopHour runs the leader's real loop (Run: election,
// resync, kicks, workers) against the same faults while the simulator's
// clock runs a simulated hour in a few real seconds, and reports what each
// tenant spent at DigitalOcean. Before the work queue the terminal tenant
// was planned again after every failure, as fast as DigitalOcean answered.
func TestQueueRealLoopHour(t *testing.T) {
	w := newQueueWorld(t)
	w.rec.cfg.Resync = 20 * time.Millisecond // 20 simulated seconds
	w.rec.cfg.LeaderRetry = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(t.Context())
	w.sync(ctx)
	done := make(chan error, 1)
	go func() { done <- w.rec.Run(ctx) }()
	start := w.sim.Sim.Now()
	for w.sim.Sim.Now().Sub(start) < time.Hour {
		time.Sleep(time.Millisecond)
		w.sim.Sim.Advance(time.Second)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	creates, calls := w.count.get()
	t.Logf("real loop, simulated hour: creates %v, calls by account (shared observation left out) %v", creates, calls)
	if got := creates["acct-a"]; got > 2 {
		t.Errorf("creates of the terminal tenant in a simulated hour = %d, want at most 2", got)
	}
	if got := calls["acct-b"]; got > 100 {
		t.Errorf("calls of the transient tenant in a simulated hour = %d, want at most 100 (backing off to the 15 min cap)", got)
	}
}
