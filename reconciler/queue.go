package reconciler

import (
	"context"
	"time"

	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
)

// The work queue under the pass (controller-runtime's reconcileHandler is
// the model for its contract). Each pass observes DigitalOcean once for the
// whole fleet and plans; the plan's actions become one job per workspace
// (claim/release deduplicate them). A job's outcome maps to exactly one
// queue operation, by the kind of its error (reconciler/cloud ErrorKind):
//
//   - success: forget (the workspace's retry state is deleted);
//   - transient (5xx, 429, timeouts, and errors of our own making such as a
//     manifest that failed to render): requeue after Backoff(attempts);
//   - terminal (422 and other bad input): wait for new input: the workspace
//     is held until its tenant file's hash differs from the one it failed
//     with, or an operator retries (POST /v1/tenants/{id}/retry);
//   - "not yet": pending (the droplet had an action in progress) after
//     PendingWait, capacity (no candidate account had room) after
//     CapacityWait, not found (the droplet went away) after NotFoundWait.
//
// The state lives in Postgres (tenant_retries, store.RecordFailure), so a
// new leader continues every backoff where the old one left it. Each pass
// hands it to the pure planner as plan.Observed.Held; the planner leaves a
// held workspace alone and reports it in plan.Plan.Held. A workspace whose
// wait ended is added to the next scoped pass (due), and the leader's loop
// wakes for the earliest end (nextDue).

// Backoff of transient failures: BackoffBase·2^(attempts-1), capped at
// BackoffMax, jittered by ±BackoffJitter so tenants that failed together
// (one DigitalOcean outage) do not retry together.
const (
	BackoffBase   = 10 * time.Second
	BackoffMax    = 15 * time.Minute
	BackoffJitter = 0.2
)

// Known waits of "not yet" failures.
const (
	// PendingWait follows a 422 "pending event" that outlasted Execute's
	// own wait: DigitalOcean's droplet actions take tens of seconds.
	PendingWait = 30 * time.Second
	// CapacityWait follows a create for which every candidate account
	// answered "droplet limit": room comes back when droplets go or an
	// operator raises a limit, not within seconds.
	CapacityWait = 5 * time.Minute
	// NotFoundWait follows a 404 on something the plan expected (the
	// droplet went away): the next full observation replans it.
	NotFoundWait = 30 * time.Second
)

// Backoff is the wait after the attempts-th transient failure in a row
// (attempts ≥ 1; lower counts as 1). u in [0, 1) draws the jitter: the
// result is BackoffBase·2^(attempts-1) capped at BackoffMax, scaled by
// 1-BackoffJitter+2·BackoffJitter·u, and never more than BackoffMax.
func Backoff(attempts int, u float64) time.Duration {
	d := BackoffBase
	for i := 1; i < attempts && d < BackoffMax; i++ {
		d *= 2
	}
	d = min(d, BackoffMax)
	u = min(max(u, 0), 1)
	d = time.Duration(float64(d) * (1 - BackoffJitter + 2*BackoffJitter*u))
	return min(d, BackoffMax)
}

// holdKind maps an action's error to its hold kind. An error that is not
// DigitalOcean's (rendering user data or a manifest, the journal) is
// transient: nothing says the same input will fail again.
func holdKind(err error) string {
	switch cloud.KindOf(err) {
	case cloud.KindTerminal:
		return plan.HoldTerminal
	case cloud.KindCapacity:
		return plan.HoldCapacity
	case cloud.KindPending:
		return plan.HoldPending
	case cloud.KindNotFound:
		return plan.HoldNotFound
	default:
		return plan.HoldTransient
	}
}

// holdUntil is when a failure of kind, the attempts-th in a row at now,
// may be tried again (zero for terminal: new input only).
func holdUntil(kind string, attempts int, now time.Time, u float64) time.Time {
	switch kind {
	case plan.HoldTerminal:
		return time.Time{}
	case plan.HoldPending:
		return now.Add(PendingWait)
	case plan.HoldCapacity:
		return now.Add(CapacityWait)
	case plan.HoldNotFound:
		return now.Add(NotFoundWait)
	default:
		return now.Add(Backoff(attempts, u))
	}
}

// requeue is the queue operation for an action's outcome: forget on
// success, otherwise a hold by the error's kind, persisted. The in-memory
// copy lets the next scoped pass know when the hold is due.
func (r *Reconciler) requeue(ctx context.Context, a plan.Action, hash, commit string, runErr error) {
	ws := a.Workspace
	if runErr == nil {
		r.mu.Lock()
		_, known := r.holds[ws]
		delete(r.holds, ws)
		r.mu.Unlock()
		if !known && !r.holdsUnknown() {
			return // nothing persisted to forget
		}
		if _, err := r.cfg.Store.Forget(ctx, ws); err != nil {
			r.log.Error("forget retry state failed", "tenant", ws, "err", err)
		}
		return
	}
	kind := holdKind(runErr)
	now := r.cfg.Now()
	u := r.jitter()
	h, err := r.cfg.Store.RecordFailure(ctx, ws, store.Failure{Kind: kind, Action: a.Kind, Error: runErr.Error(), Hash: hash, Commit: commit},
		func(attempts int) time.Time { return holdUntil(kind, attempts, now, u) })
	if err != nil {
		r.log.Error("record retry state failed", "tenant", ws, "err", err)
		return
	}
	r.mu.Lock()
	r.holds[ws] = h
	r.mu.Unlock()
	r.cfg.Metrics.retries.WithLabelValues(kind).Inc()
	log := r.log.With("tenant", ws, "action", a.Kind, "attempt", h.Attempts, "last_error_kind", kind)
	if kind == plan.HoldTerminal {
		log.Warn("action failed terminally; waiting for a change of the tenant's file or an operator retry")
		return
	}
	log.Info("action failed; backing off", "retry_after", h.Until)
}

// holdsUnknown reports whether no pass has loaded the persisted retry
// state yet (then a success cannot tell whether there is any to forget).
func (r *Reconciler) holdsUnknown() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.holdsLoaded
}

// loadHolds reads the persisted retry state for a pass, keeps it for
// scoping and updates the backing-off gauge. d is the desired state the
// holds are judged against.
func (r *Reconciler) loadHolds(ctx context.Context, d plan.Desired, now time.Time) (map[string]plan.Hold, error) {
	holds, err := r.cfg.Store.Holds(ctx)
	if err != nil {
		return nil, err
	}
	counts := map[string]int{}
	for ws, h := range holds {
		if h.Holds(d.Hashes[ws], now) {
			counts[h.Kind]++
		}
	}
	for _, k := range plan.HoldKinds {
		r.cfg.Metrics.backingOff.WithLabelValues(k).Set(float64(counts[k]))
	}
	r.mu.Lock()
	r.holds, r.holdsLoaded = make(map[string]plan.Hold, len(holds)), true
	for ws, h := range holds {
		r.holds[ws] = h
	}
	r.mu.Unlock()
	return holds, nil
}

// dueLocked lists the workspaces whose hold ended by now: the next scoped
// pass plans them again. r.mu is held.
func (r *Reconciler) dueLocked(now time.Time) []string {
	var out []string
	for ws, h := range r.holds {
		if h.Kind != plan.HoldTerminal && !now.Before(h.Until) {
			out = append(out, ws)
		}
	}
	return out
}

// nextDue is the earliest end of a timed hold, if any.
func (r *Reconciler) nextDue() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var next time.Time
	for _, h := range r.holds {
		if h.Kind != plan.HoldTerminal && (next.IsZero() || h.Until.Before(next)) {
			next = h.Until
		}
	}
	return next, !next.IsZero()
}

// settleHolds forgets the holds of the plan's scope that no longer hold
// and got no action (nothing left to do for them, or they left git), so a
// stale hold does not bring its workspace back into every scoped pass. A
// workspace in flight keeps its hold: its job's outcome decides.
func (r *Reconciler) settleHolds(ctx context.Context, holds map[string]plan.Hold, p plan.Plan, o plan.Observed, d plan.Desired, scope []string, now time.Time) {
	acting := map[string]bool{}
	for _, a := range p.Actions {
		acting[a.Workspace] = true
	}
	for _, a := range p.Withheld {
		acting[a.Workspace] = true
	}
	in := func(ws string) bool { return true }
	if scope != nil {
		set := map[string]bool{}
		for _, ws := range scope {
			set[ws] = true
		}
		in = func(ws string) bool { return set[ws] }
	}
	for ws, h := range holds {
		if !in(ws) || acting[ws] || o.InFlight[ws] != "" || h.Holds(d.Hashes[ws], now) {
			continue
		}
		if _, err := r.cfg.Store.Forget(ctx, ws); err != nil {
			r.log.Error("forget retry state failed", "tenant", ws, "err", err)
			continue
		}
		r.mu.Lock()
		delete(r.holds, ws)
		r.mu.Unlock()
	}
}
