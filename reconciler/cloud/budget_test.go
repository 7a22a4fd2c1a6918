package cloud

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/plan"
)

// fakeClock is a virtual clock: Sleep moves it forward.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) SleepUntil(ctx context.Context, until time.Time) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if until.After(c.t) {
		c.t = until
	}
	return nil
}

func (c *fakeClock) elapsed(since time.Time) time.Duration { return c.Now().Sub(since) }

func answer(status, remaining int, reset time.Time, retryAfter string) *http.Response {
	h := http.Header{}
	h.Set("RateLimit-Remaining", strconv.Itoa(remaining))
	h.Set("RateLimit-Reset", strconv.FormatInt(reset.Unix(), 10))
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	return &http.Response{StatusCode: status, Header: h}
}

func TestBudgetSlidingWindow(t *testing.T) {
	c := newFakeClock()
	b := newBudget(5, 100, c.Now, c.SleepUntil)
	start := c.Now()
	ctx := context.Background()
	for i := range 5 {
		done, err := b.acquire(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.elapsed(start); got != time.Duration(i)*time.Second {
			t.Fatalf("request %d went at +%v; the first 5 are a burst", i, got)
		}
		c.t = c.t.Add(time.Second) // answered a second later
		done(nil)
	}
	// The 6th waits until the first answer (at +1s) leaves the minute.
	done, err := b.acquire(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	done(nil)
	if got, want := c.elapsed(start), 61*time.Second; got != want {
		t.Errorf("6th request at +%v, want +%v", got, want)
	}
}

func TestBudgetInFlightHoldsTokens(t *testing.T) {
	c := newFakeClock()
	b := newBudget(2, -1, c.Now, c.SleepUntil)
	ctx := context.Background()
	d1, _ := b.acquire(ctx, 1)
	d2, _ := b.acquire(ctx, 1)
	got := make(chan time.Time)
	go func() {
		d3, err := b.acquire(ctx, 1)
		if err != nil {
			t.Error(err)
		}
		got <- c.Now()
		d3(nil)
	}()
	select {
	case <-got:
		t.Fatal("a third request went out while two were in flight at a limit of 2")
	case <-time.After(20 * time.Millisecond):
	}
	start := c.Now()
	d1(nil)
	d2(nil)
	if at := <-got; at.Sub(start) != time.Minute {
		t.Errorf("third request at +%v, want +1m after the answers", at.Sub(start))
	}
}

func TestBudgetHeaders(t *testing.T) {
	ctx := context.Background()
	t.Run("server has fewer left than we think", func(t *testing.T) {
		c := newFakeClock()
		b := newBudget(-1, 5000, c.Now, c.SleepUntil)
		reset := c.Now().Add(10 * time.Minute)
		done, _ := b.acquire(ctx, 1)
		done(answer(200, 2, reset, "")) // somebody else spent 4,997
		for range 2 {
			done, _ := b.acquire(ctx, 1)
			done(nil)
		}
		if c.elapsed(reset.Add(-10*time.Minute)) != 0 {
			t.Fatalf("the 2 remaining requests waited")
		}
		done, _ = b.acquire(ctx, 1)
		done(nil)
		if got := c.Now(); got.Before(reset) {
			t.Errorf("request after the server's budget ran out went at %v, before reset %v", got, reset)
		}
	})
	t.Run("429 closes the bucket for Retry-After", func(t *testing.T) {
		c := newFakeClock()
		b := newBudget(-1, -1, c.Now, c.SleepUntil)
		start := c.Now()
		done, _ := b.acquire(ctx, 1)
		done(answer(429, 100, start.Add(time.Hour), "7"))
		done, _ = b.acquire(ctx, 1)
		done(nil)
		if got := c.elapsed(start); got != 7*time.Second {
			t.Errorf("next request at +%v, want +7s", got)
		}
	})
}

func TestBudgetPriorityOrder(t *testing.T) {
	c := newFakeClock()
	b := newBudget(1, -1, c.Now, c.SleepUntil)
	ctx := context.Background()
	// Take the only token and keep it in flight while waiters line up.
	hold, _ := b.acquire(ctx, 0)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i, prio := range []int{5, 3, 0, 3} {
		wg.Go(func() {
			done, err := b.acquire(ctx, prio)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			done(nil)
		})
		testkit.WaitForFast(t, "the next waiter", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.waiters) == i+1 })
	}
	hold(nil)
	wg.Wait()
	want := []int{2, 1, 3, 0} // prio 0, then the two 3s in arrival order, then 5
	for i := range want {
		if order[i] != want[i] {
			t.Fatalf("order = %v, want %v", order, want)
		}
	}
}

func TestBudgetCancelledWaiterLeaves(t *testing.T) {
	c := newFakeClock()
	b := newBudget(1, -1, c.Now, c.SleepUntil)
	hold, _ := b.acquire(context.Background(), 0)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() {
		_, err := b.acquire(ctx, 0)
		errc <- err
	}()
	testkit.WaitForFast(t, "a waiter", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.waiters) == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	hold(nil)
	if _, err := b.acquire(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
}

func TestSlotsPriority(t *testing.T) {
	s := newSlots(1)
	ctx := context.Background()
	rel, _ := s.acquire(ctx, 0)
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	for i, prio := range []int{4, 1, 1, 0} {
		wg.Go(func() {
			r, err := s.acquire(ctx, prio)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			r()
		})
		testkit.WaitForFast(t, "the next slot request queued", func() bool { return s.queued() == i+1 })
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.acquire(cctx, 0); err == nil {
		t.Fatal("acquire with a cancelled context succeeded while full")
	}
	rel()
	wg.Wait()
	if want := []int{3, 1, 2, 0}; len(order) != 4 || order[0] != want[0] || order[1] != want[1] || order[2] != want[2] || order[3] != want[3] {
		t.Errorf("order = %v, want %v", order, want)
	}
}

func TestEndpointOf(t *testing.T) {
	for _, tc := range []struct{ method, path, want string }{
		{"GET", "/v2/droplets", "droplets_list"},
		{"POST", "/v2/droplets", "droplet_create"},
		{"GET", "/v2/droplets/12", "droplet_get"},
		{"DELETE", "/v2/droplets/12", "droplet_delete"},
		{"POST", "/v2/droplets/12/actions", "droplet_action"},
		{"GET", "/v2/droplets/12/actions/3", "action_get"},
		{"GET", "/v2/actions/3", "action_get"},
		{"GET", "/v2/snapshots", "snapshots_list"},
		{"GET", "/v2/snapshots/9", "snapshot_get"},
		{"DELETE", "/v2/snapshots/9", "snapshot_delete"},
		{"DELETE", "/v2/droplets", "other"},
		{"GET", "/v2/volumes", "other"},
		{"GET", "/elsewhere", "other"},
	} {
		if got := endpointOf(tc.method, tc.path); got != tc.want {
			t.Errorf("endpointOf(%s %s) = %q, want %q", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	resp := func(code int, msg string) error {
		return &godo.ErrorResponse{Response: &http.Response{StatusCode: code, Request: &http.Request{Method: "POST"}}, Message: msg}
	}
	for _, tc := range []struct {
		name string
		err  error
		want ErrorKind
	}{
		{"droplet limit", resp(422, "creating this/these droplet(s) will exceed your droplet limit"), KindCapacity},
		{"pending event", resp(422, "Droplet already has a pending event."), KindPending},
		{"validation", resp(422, "You specified an invalid size for Droplet creation."), KindTerminal},
		{"unauthorized", resp(401, "Unable to authenticate you"), KindTerminal},
		{"not found", resp(404, "The resource you requested could not be found."), KindNotFound},
		{"rate limited", resp(429, "API Rate limit exceeded."), KindTransient},
		{"server error", resp(503, ""), KindTransient},
		{"connection", &netErr{}, KindTransient},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := classify("a", "op", tc.err).Kind; got != tc.want {
				t.Errorf("kind = %v, want %v", got, tc.want)
			}
		})
	}
}

// netErr is a net.Error (a timeout).
type netErr struct{}

func (*netErr) Error() string   { return "i/o timeout" }
func (*netErr) Timeout() bool   { return true }
func (*netErr) Temporary() bool { return true }

func TestWorkspaceFromSnapshotName(t *testing.T) {
	for name, want := range map[string]string{
		"genesis-acme-3-snap":     "acme",
		"genesis-acme-co-12-snap": "acme-co",
		"genesis-acme-3":          "",
		"genesis-acme-x-snap":     "",
		"manual":                  "",
		// An operator's snapshot (plan.ManualSnapshotName).
		"genesis-acme-co-12-snap-20261207054001": "acme-co",
		"genesis-acme-co-12-snap-2026120705400":  "",
	} {
		if got := workspaceFromSnapshotName(name); got != want {
			t.Errorf("workspaceFromSnapshotName(%q) = %q, want %q", name, got, want)
		}
	}
}

// TestBudgetListingsLeaveActionsAReserve: listings stop at four fifths of a
// window, and while the next listing sleeps for the window the actions take
// the reserve at once (the reliability suite's create-action-errored case:
// a booting droplet's polls starved behind the passes' listings).
func TestBudgetListingsLeaveActionsAReserve(t *testing.T) {
	c := newFakeClock()
	// Time stands still: a sleep lasts until its context ends.
	stuck := func(ctx context.Context, _ time.Time) error { <-ctx.Done(); return ctx.Err() }
	b := newBudget(10, -1, c.Now, stuck)
	ctx := context.Background()
	for range 8 {
		done, err := b.acquire(ctx, prioObserve)
		if err != nil {
			t.Fatal(err)
		}
		done(nil)
	}
	lctx, cancel := context.WithCancel(ctx)
	listing := make(chan error, 1)
	go func() {
		done, err := b.acquire(lctx, prioObserve)
		if err == nil {
			done(nil)
		}
		listing <- err
	}()
	testkit.WaitForFast(t, "an observer", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.observers) == 1 })
	for i := range 2 {
		got := make(chan error, 1)
		go func() {
			done, err := b.acquire(ctx, plan.Create.Priority())
			if err == nil {
				done(nil)
			}
			got <- err
		}()
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("action %d waited behind a listing sleeping for the window's reserve", i+1)
		}
	}
	select {
	case err := <-listing:
		t.Fatalf("the 9th listing in a window of 10 went out (err %v); 2 are reserved for actions", err)
	default:
	}
	// The window is full now: an action waits too.
	actx, acancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer acancel()
	if _, err := b.acquire(actx, plan.Create.Priority()); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("11th request in a window of 10: err %v, want to wait", err)
	}
	cancel()
	if err := <-listing; !errors.Is(err, context.Canceled) {
		t.Fatalf("listing: err %v, want canceled", err)
	}
}
