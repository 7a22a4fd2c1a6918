package activator

import (
	"context"
	"errors"
	"time"
)

// tenant is the activator's state of one workspace, guarded by Handler.mu.
type tenant struct {
	id   string
	held int
	// ep is the current (or last) wake episode.
	ep *episode
	// pixels are the open pixels waiting for the tenant, oldest first.
	pixels []pixel
	// draining is true while the episode's goroutine replays pixels: new
	// pixels queue behind them, so the replay keeps arrival order.
	draining  bool
	lastTouch time.Time
}

// episode is one wake of a tenant: started by the first request that finds
// no current episode, it asks for the wake once and reads the tenant's
// status until it is up, refused or WakeTimeout passes. Every request of
// the tenant in the meantime waits on done.
type episode struct {
	done  chan struct{}
	start time.Time
	// Set before done is closed (read after it).
	ip      string
	refused bool
	woke    bool // Wake was called and succeeded
	upAt    time.Time
	// answered is set by the first answer proxied from the woken droplet.
	answered chan struct{}
}

func (ep *episode) finished() bool {
	select {
	case <-ep.done:
		return true
	default:
		return false
	}
}

// fresh reports whether a finished episode's outcome still holds: an up
// tenant's address, or a refusal, is trusted for UpTTL; a failed episode
// is not (the next request starts a new one).
//
// An up tenant's address stops holding at once when a status read after
// it says the tenant no longer runs there (hibernated again, moved): the
// next request starts a new episode instead of being proxied to a droplet
// that is gone.
func (h *Handler) fresh(ep *episode, t *tenant, now time.Time) bool {
	if !(ep.ip != "" || ep.refused) || now.Sub(ep.upAt) >= h.cfg.UpTTL {
		return false
	}
	if ep.ip != "" {
		if tbl := h.statuses.Load(); tbl != nil && tbl.at.After(ep.upAt) {
			if st := tbl.m[t.id]; !st.Up() || st.IP != ep.ip {
				return false
			}
		}
	}
	return true
}

// tenantLocked returns ws's state, created when absent.
func (h *Handler) tenantLocked(ws string) *tenant {
	t := h.tenants[ws]
	if t == nil {
		t = &tenant{id: ws}
		h.tenants[ws] = t
	}
	return t
}

// episodeLocked returns t's current episode, starting one when there is
// none (or the last one ended and is no longer fresh).
func (h *Handler) episodeLocked(t *tenant, now time.Time) *episode {
	if ep := t.ep; ep != nil && (!ep.finished() || h.fresh(ep, t, now)) {
		return ep
	}
	ep := &episode{done: make(chan struct{}), start: now, answered: make(chan struct{})}
	t.ep = ep
	if h.closed {
		close(ep.done) // no wake after Close: requests get 503
		return ep
	}
	h.wg.Add(1)
	go h.runEpisode(t, ep)
	return ep
}

// admit counts a request of ws as held, within the bounds, and returns its
// tenant and episode; false past a bound.
func (h *Handler) admit(ws string, now time.Time) (*tenant, *episode, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.tenantLocked(ws)
	if h.closed || h.held >= h.cfg.MaxHeld || t.held >= h.cfg.MaxHeldPerTenant {
		if h.idleLocked(t, now) {
			delete(h.tenants, ws)
		}
		return nil, nil, false
	}
	t.held++
	h.held++
	h.m.held.Inc()
	ep := h.episodeLocked(t, now)
	if h.onHold != nil {
		h.onHold(ws, t.held, h.held)
	}
	return t, ep, true
}

// release ends a request's hold.
func (h *Handler) release(t *tenant) {
	h.mu.Lock()
	defer h.mu.Unlock()
	t.held--
	h.held--
	h.m.held.Dec()
	if h.idleLocked(t, h.now()) && h.tenants[t.id] == t {
		delete(h.tenants, t.id)
	}
}

// idleLocked reports whether t holds nothing worth keeping.
func (h *Handler) idleLocked(t *tenant, now time.Time) bool {
	return t.held == 0 && len(t.pixels) == 0 && !t.draining &&
		(t.ep == nil || (t.ep.finished() && !h.fresh(t.ep, t, now)))
}

// sweep drops idle tenants' state.
func (h *Handler) sweep() {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	for id, t := range h.tenants {
		if h.idleLocked(t, now) {
			delete(h.tenants, id)
		}
	}
}

// runEpisode is an episode's goroutine (package doc): it reads the
// tenant's status, asks for the wake once (again only after a failed
// call), and polls every PollInterval until the tenant is up, the wake is
// refused, WakeTimeout passes or the Handler closes. An up tenant's queued
// pixels are then replayed here, in order.
func (h *Handler) runEpisode(t *tenant, ep *episode) {
	defer h.wg.Done()
	ctx, cancel := h.stopContext(h.cfg.WakeTimeout)
	defer cancel()
	ws := t.id
	log := h.log.With("tenant", ws)
	tick := time.NewTicker(h.cfg.PollInterval)
	defer tick.Stop()
	woke := false
	for {
		st, err := h.cfg.Status(ctx, ws)
		if err == nil && st.Up() {
			h.up(t, ep, st.IP, woke)
			log.Info("tenant up", "ip", st.IP, "woke", woke, "after", h.now().Sub(ep.start).Round(time.Millisecond))
			h.touch(ws, true)
			h.replay(t, st.IP)
			return
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("read tenant status failed", "err", err)
		}
		if !woke && ctx.Err() == nil {
			err := h.cfg.Wake(ctx, ws)
			switch {
			case errors.Is(err, ErrWakeRefused):
				h.m.wakes.WithLabelValues("refused").Inc()
				log.Info("wake refused", "err", err)
				h.finish(t, ep, true)
				return
			case err != nil:
				h.m.wakes.WithLabelValues("error").Inc()
				log.Warn("wake request failed; trying again", "err", err, "in", h.cfg.PollInterval)
			default:
				h.m.wakes.WithLabelValues("requested").Inc()
				log.Info("wake requested by traffic")
				woke = true
			}
		}
		select {
		case <-ctx.Done():
			log.Warn("tenant did not come up during the wake episode", "timeout", h.cfg.WakeTimeout, "lifecycle", st.Lifecycle)
			h.finish(t, ep, false)
			return
		case <-tick.C:
		}
	}
}

// up ends ep with the tenant's address: held requests go there. Pixels
// queued so far are replayed before any new one goes straight through.
func (h *Handler) up(t *tenant, ep *episode, ip string, woke bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ep.ip, ep.woke, ep.upAt = ip, woke, h.now()
	t.draining = len(t.pixels) > 0
	close(ep.done)
}

// finish ends ep without the tenant up (refused, or not up in time): held
// requests get 503, and the queued pixels are dropped (no wake is coming
// from this episode to replay them to).
func (h *Handler) finish(t *tenant, ep *episode, refused bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	ep.refused, ep.upAt = refused, h.now()
	reason := "wake_failed"
	if refused {
		reason = "wake_refused"
	}
	h.m.dropped.WithLabelValues(reason).Add(float64(len(t.pixels)))
	clear(t.pixels)
	t.pixels = nil
	close(ep.done)
}

// touch records ws's activity, at most every TouchEvery unless force, in
// the background.
func (h *Handler) touch(ws string, force bool) {
	if h.cfg.Touch == nil {
		return
	}
	h.mu.Lock()
	t := h.tenants[ws]
	now := h.now()
	if h.closed || t == nil || (!force && now.Sub(t.lastTouch) < h.cfg.TouchEvery) {
		h.mu.Unlock()
		return
	}
	t.lastTouch = now
	h.wg.Add(1)
	h.mu.Unlock()
	go func() {
		defer h.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := h.cfg.Touch(ctx, ws); err != nil {
			h.log.Warn("record activity failed", "tenant", ws, "err", err)
		}
	}()
}

// stopContext returns a context that ends after d or when the Handler
// closes, whichever is first; its watcher goroutine exits with it.
func (h *Handler) stopContext(d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	go func() {
		select {
		case <-h.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}
