package cloud

import (
	"container/heap"
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// budget is one account's request budget: the token bucket every request
// to DigitalOcean (listing, polling and retries included) takes a token
// from before it is sent.
//
// DigitalOcean counts requests per token over sliding windows (250 in the
// last minute, 5,000 in the last hour). A bucket that refills at a steady
// rate cannot match a sliding window: with capacity C and rate L/W it lets
// C+L requests into one window (429s), and with rate (L−C)/W it wastes C.
// So each window here is a bucket of L tokens in which a token comes back
// exactly W after the request that took it was answered — the server
// counted that request no later than we saw the answer, so by then it has
// left the server's window too. In-flight requests hold their token. The
// result is the full burst DigitalOcean allows and never more, as long as
// nobody else spends the token's budget.
//
// For when somebody does, every response's RateLimit-Remaining and
// RateLimit-Reset are read: when the server says fewer requests remain this
// hour than the bucket thinks, the server's count becomes a cap until Reset,
// and once the cap is spent the bucket waits for Reset. A 429 closes the
// bucket until its Retry-After (or Reset) has passed.
//
// Waiters are served by priority (plan.Kind.Priority; lower first), FIFO
// within one. Listings for Observe (prioObserve) go before every action
// but may not spend the last fifth of any window (observeReserve): a
// reconciler whose passes come faster than its listings fit in the budget
// would otherwise spend all of it on listings, and an action's polls of a
// booting droplet would starve behind them for as long as passes keep
// coming (the reliability suite's "create action errored" case found it).
// So while the listings wait for the reserve, actions take from it.
type budget struct {
	now        func() time.Time
	sleepUntil func(context.Context, time.Time) error

	mu       sync.Mutex
	windows  []*window
	inFlight int
	// blocked is when a 429 lets requests through again.
	blocked time.Time
	// The server's view, when it is stricter than ours.
	capped   bool
	cap      int
	capUntil time.Time
	waiters  waitHeap
	// observers wait for listings (prioObserve), ahead of waiters.
	observers waitHeap
	seq       uint64
	// changed is closed (and replaced) whenever the state changes.
	changed chan struct{}
}

// window is one sliding window: the answer times of the requests still in
// it, oldest first.
type window struct {
	limit int
	span  time.Duration
	times []time.Time
}

// unlimited is a limit that never binds.
const unlimited = -1

func newBudget(perMinute, perHour int, now func() time.Time, sleepUntil func(context.Context, time.Time) error) *budget {
	b := &budget{now: now, sleepUntil: sleepUntil, changed: make(chan struct{})}
	if perMinute != unlimited {
		b.windows = append(b.windows, &window{limit: perMinute, span: time.Minute})
	}
	if perHour != unlimited {
		b.windows = append(b.windows, &window{limit: perHour, span: time.Hour})
	}
	return b
}

// prune drops the requests that have left the window by now.
func (w *window) prune(now time.Time) {
	i := 0
	for i < len(w.times) && !w.times[i].Add(w.span).After(now) {
		i++
	}
	if i > 0 {
		w.times = append(w.times[:0], w.times[i:]...)
	}
}

// observeReserve is the part of a window's limit that listings leave to
// actions.
func observeReserve(limit int) int { return limit / 5 }

// next returns when the window has a token for one more request beyond
// inFlight while keeping reserve tokens free, and false when only an
// in-flight request's answer can tell.
func (w *window) next(now time.Time, inFlight, reserve int) (time.Time, bool) {
	w.prune(now)
	free := w.limit - reserve - inFlight - len(w.times)
	if free > 0 {
		return now, true
	}
	if w.limit-reserve-inFlight <= 0 {
		return time.Time{}, false
	}
	// The oldest 1-free requests must leave first.
	return w.times[-free].Add(w.span), true
}

// nextLocked returns when a request of the observe class (or not) may be
// sent, or false when it has to wait for an in-flight request to finish.
func (b *budget) nextLocked(now time.Time, observe bool) (time.Time, bool) {
	at := now
	if b.blocked.After(at) {
		at = b.blocked
	}
	if b.capped {
		floor := 0
		if observe {
			for _, w := range b.windows {
				if w.span == time.Hour {
					floor = observeReserve(w.limit)
				}
			}
		}
		if !now.Before(b.capUntil) {
			b.capped = false
		} else if b.cap <= floor && b.capUntil.After(at) {
			at = b.capUntil
		}
	}
	for _, w := range b.windows {
		reserve := 0
		if observe {
			reserve = observeReserve(w.limit)
		}
		t, ok := w.next(now, b.inFlight, reserve)
		if !ok {
			return time.Time{}, false
		}
		if t.After(at) {
			at = t
		}
	}
	return at, true
}

func (b *budget) notifyLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// acquire waits for a token at priority prio and returns the function to
// call with the request's outcome.
//
// The head of each queue (observers, waiters) is the only one of its queue
// that looks at the budget; it sleeps until its token is due or the state
// changes, whichever comes first, so an action's head is never left waiting
// behind a listing that sleeps for its reserve.
func (b *budget) acquire(ctx context.Context, prio int) (func(*http.Response), error) {
	observe := prio == prioObserve
	b.mu.Lock()
	q := &b.waiters
	if observe {
		q = &b.observers
	}
	b.seq++
	w := &waiter{prio: prio, seq: b.seq}
	heap.Push(q, w)
	for {
		var at time.Time
		known := false
		if (*q)[0] == w {
			now := b.now()
			var ready bool
			at, known = b.nextLocked(now, observe)
			ready = known && !at.After(now)
			if ready && !observe && len(b.observers) > 0 {
				// A listing that may go now goes first: wake it, and
				// wait for the change its taking the token makes.
				if oat, ok := b.nextLocked(now, true); ok && !oat.After(now) {
					ready, known = false, false
					b.notifyLocked()
				}
			}
			if ready {
				heap.Pop(q)
				b.inFlight++
				if b.capped {
					b.cap--
				}
				b.notifyLocked() // the next waiter is at the head now
				b.mu.Unlock()
				return b.done, nil
			}
		}
		changed := b.changed
		b.mu.Unlock()
		err := b.waitChange(ctx, changed, at, known)
		b.mu.Lock()
		if err != nil {
			heap.Remove(q, w.index)
			b.notifyLocked()
			b.mu.Unlock()
			return nil, err
		}
	}
}

// waitChange blocks until changed is closed, or, when known, until at has
// come; it fails only when ctx ends.
func (b *budget) waitChange(ctx context.Context, changed <-chan struct{}, at time.Time, known bool) error {
	if !known {
		select {
		case <-changed:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-changed:
			cancel()
		case <-sctx.Done():
		}
	}()
	if err := b.sleepUntil(sctx, at); err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return nil
}

// done records a request's answer (resp is nil when none came back).
func (b *budget) done(resp *http.Response) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	b.inFlight--
	for _, w := range b.windows {
		w.times = append(w.times, now)
	}
	if resp != nil {
		b.observeLocked(now, resp)
	}
	b.notifyLocked()
}

// observeLocked reads the rate headers of one answer.
func (b *budget) observeLocked(now time.Time, resp *http.Response) {
	reset := time.Time{}
	if v, err := strconv.ParseInt(resp.Header.Get("RateLimit-Reset"), 10, 64); err == nil {
		// Reset is in whole seconds, rounded down: add one.
		reset = time.Unix(v+1, 0)
	}
	if rem, err := strconv.Atoi(resp.Header.Get("RateLimit-Remaining")); err == nil {
		ours := -1
		for _, w := range b.windows {
			if w.span == time.Hour {
				w.prune(now)
				ours = w.limit - len(w.times)
			}
		}
		switch {
		case ours >= 0 && rem < ours && reset.After(now):
			// Somebody else spends this token too: the server's count
			// wins until Reset. Requests in flight were not in rem.
			b.capped, b.cap, b.capUntil = true, rem-b.inFlight, reset
		case ours >= 0 && rem >= ours:
			b.capped = false
		}
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		until := reset
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			until = now.Add(time.Duration(s) * time.Second)
		}
		if until.After(b.blocked) {
			b.blocked = until
		}
	}
}

// active returns how many requests are in flight.
func (b *budget) active() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.inFlight
}

// waiter is one goroutine waiting for a token or a job slot.
type waiter struct {
	prio  int
	seq   uint64
	index int
	// ready is closed when a slot is handed over (slots only).
	ready   chan struct{}
	granted bool
}

// waitHeap orders waiters by priority, then arrival.
type waitHeap []*waiter

func (h waitHeap) Len() int { return len(h) }
func (h waitHeap) Less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio < h[j].prio
	}
	return h[i].seq < h[j].seq
}
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *waitHeap) Push(x any) {
	w := x.(*waiter)
	w.index = len(*h)
	*h = append(*h, w)
}
func (h *waitHeap) Pop() any {
	old := *h
	n := len(old)
	w := old[n-1]
	old[n-1] = nil
	w.index = -1
	*h = old[:n-1]
	return w
}

// slots bounds how many jobs run at once in one account; waiting jobs start
// by priority, FIFO within one.
type slots struct {
	mu      sync.Mutex
	max     int
	busy    int
	waiters waitHeap
	seq     uint64
}

func newSlots(n int) *slots { return &slots{max: n} }

// acquire waits for a slot and returns its release function.
func (s *slots) acquire(ctx context.Context, prio int) (func(), error) {
	s.mu.Lock()
	if s.busy < s.max && len(s.waiters) == 0 {
		s.busy++
		s.mu.Unlock()
		return s.release, nil
	}
	s.seq++
	w := &waiter{prio: prio, seq: s.seq, ready: make(chan struct{})}
	heap.Push(&s.waiters, w)
	s.mu.Unlock()
	select {
	case <-w.ready:
		return s.release, nil
	case <-ctx.Done():
		s.mu.Lock()
		if w.granted {
			s.mu.Unlock()
			s.release()
		} else {
			heap.Remove(&s.waiters, w.index)
			s.mu.Unlock()
		}
		return nil, ctx.Err()
	}
}

func (s *slots) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.waiters) > 0 {
		w := heap.Pop(&s.waiters).(*waiter)
		w.granted = true
		close(w.ready)
		return
	}
	s.busy--
}

// queued returns how many jobs wait for a slot.
func (s *slots) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters)
}
