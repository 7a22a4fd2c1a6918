package reconciler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/reconciler/watchdog"
	"genesis.dev/fleet/tenants"
)

// DefaultWatchdogEvery is how often the leader runs the watchdog.
const DefaultWatchdogEvery = 15 * time.Second

// watchdogMetrics are the watchdog's series.
type watchdogMetrics struct {
	steps  *prometheus.CounterVec
	health *prometheus.GaugeVec
	outage prometheus.Gauge
}

func newWatchdogMetrics() *watchdogMetrics {
	return &watchdogMetrics{
		steps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_watchdog_remediations_total",
			Help: "Remediation steps by kind (reboot, power_cycle, rebuild, retire, fail) and result (succeeded, failed)."}, []string{"kind", "result"}),
		health: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_watchdog_tenants",
			Help: "Running tenants by health as the watchdog last judged them (healthy, degraded, critical, failed)."}, []string{"health"}),
		outage: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_watchdog_outage",
			Help: "1 while the outage guard holds (too much of the fleet silent at once: no remediation)."}),
	}
}

func (m *watchdogMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.steps, m.health, m.outage}
}

// Watch runs the watchdog once: it judges every running tenant from its
// heartbeats (package watchdog), writes the health transitions, and starts
// each remediation step that is due as a journaled job, through the
// account scheduler like every other action. The leader calls it every
// Config.WatchdogEvery; tests call it directly.
func (r *Reconciler) Watch(ctx context.Context) (watchdog.Decision, error) {
	snap, ok := r.Snapshot()
	if !ok {
		return watchdog.Decision{}, errNoSnapshot
	}
	if snap.Fleet == nil {
		return watchdog.Decision{}, fmt.Errorf("no valid genesis.yaml at %s", snap.Commit)
	}
	c, err := r.cloudFor(snap.Fleet)
	if err != nil {
		return watchdog.Decision{}, err
	}
	rows, err := r.cfg.Store.WatchRows(ctx)
	if err != nil {
		return watchdog.Decision{}, err
	}
	ops, err := r.cfg.Store.InFlight(ctx)
	if err != nil {
		return watchdog.Decision{}, err
	}
	busy := map[string]bool{}
	for _, op := range ops {
		busy[op.Workspace] = true
	}
	r.mu.Lock()
	for ws := range r.running {
		busy[ws] = true
	}
	r.mu.Unlock()
	d := Desired(snap)
	byWS := map[string]watchdog.Row{}
	for i := range rows {
		rows[i].InFlight = busy[rows[i].Workspace]
		rows[i].GitHash = d.Hashes[rows[i].Workspace]
		byWS[rows[i].Workspace] = rows[i]
	}
	now := r.cfg.Now()
	pol := watchdog.PolicyFrom(snap.Fleet.Spec.Watchdog)
	r.mu.Lock()
	pol.LastOutage = r.lastOutage
	r.mu.Unlock()
	dec := watchdog.Evaluate(rows, pol, now)
	r.recordWatch(dec)
	for _, tr := range dec.Transitions {
		err := r.cfg.Store.ApplyTransition(ctx, tr)
		switch {
		case errors.Is(err, store.ErrStale):
			continue
		case err != nil:
			return dec, err
		}
		r.wlog.Info("tenant health changed", "tenant", tr.Workspace, "from", tr.From, "to", tr.To, "reason", tr.Reason, "ladder_reset", tr.Reset)
	}
	for _, ws := range dec.Retry {
		if err := r.Retry(ctx, ws, "git", "the tenant's file changed"); err != nil && !errors.Is(err, store.ErrNotFailed) {
			return dec, err
		}
	}
	for _, ws := range dec.Retire {
		r.retire(ctx, c, ws, snap.Commit)
	}
	for _, m := range dec.Remediations {
		r.remediate(ctx, c, snap, d, byWS[m.Workspace], m)
	}
	return dec, nil
}

// recordWatch updates the gauges and logs the outage guard's edges.
func (r *Reconciler) recordWatch(dec watchdog.Decision) {
	m := r.cfg.Metrics.watchdog
	m.health.Reset()
	for _, h := range []string{"healthy", "degraded", "critical", "failed"} {
		m.health.WithLabelValues(h).Set(float64(dec.Health[h]))
	}
	r.mu.Lock()
	was := r.outage
	r.outage = dec.Outage
	if dec.Outage {
		r.lastOutage = r.cfg.Now()
	}
	r.mu.Unlock()
	switch {
	case dec.Outage && !was:
		m.outage.Set(1)
		r.wlog.Error("fleet-wide silence: remediation suspended", "silent", dec.Silent, "watched", dec.Watched, "held", dec.Held)
	case !dec.Outage && was:
		m.outage.Set(0)
		r.wlog.Info("fleet-wide silence over: remediation resumes after a grace for late agents", "silent", dec.Silent, "watched", dec.Watched)
	}
}

// remediate starts one ladder step for a tenant.
func (r *Reconciler) remediate(ctx context.Context, c *cloud.Pool, snap tenants.Snapshot, d plan.Desired, row watchdog.Row, m watchdog.Remediation) {
	steps := r.cfg.Metrics.watchdog.steps
	log := r.wlog.With("tenant", m.Workspace, "step", m.Step)
	if m.Step == watchdog.StepFail {
		err := r.cfg.Store.Fail(ctx, m.Workspace, row.Lifecycle, m.Heartbeat, m.Reason, d.Hashes[m.Workspace], snap.Commit)
		if errors.Is(err, store.ErrStale) {
			return
		}
		if err != nil {
			log.Error("record FAILED failed", "err", err)
			return
		}
		steps.WithLabelValues("fail", "succeeded").Inc()
		log.Error("tenant FAILED: remediation exhausted; retry with POST /v1/tenants/{id}/retry or a change of its file", "reason", m.Reason)
		return
	}
	a := plan.Action{Workspace: m.Workspace, Account: row.Account, Droplet: row.DropletName, DropletID: row.DropletID, Reason: "watchdog: " + m.Reason, APICalls: 3}
	switch m.Step {
	case watchdog.StepReboot:
		a.Kind = plan.Reboot
	case watchdog.StepPowerCycle:
		a.Kind = plan.PowerCycle
	case watchdog.StepRebuild:
		rb, err := plan.RebuildAction(d, r.Observed(), m.Workspace)
		if errors.Is(err, plan.ErrNotObserved) {
			log.Warn("rebuild waits for a complete observation", "err", err)
			return
		}
		if err != nil {
			// Nothing can be built (no room, no tenant): a person must act.
			m.Step, m.Reason = watchdog.StepFail, fmt.Sprintf("%s; rebuild impossible: %v", m.Reason, err)
			r.remediate(ctx, c, snap, d, row, m)
			return
		}
		rb.Reason = rb.Reason + " (" + m.Reason + ")"
		a = rb
	}
	if !r.claim(m.Workspace) {
		return
	}
	id, err := r.cfg.Store.BeginRemediation(ctx, a, row.Lifecycle, m.Heartbeat, r.cfg.Now(), snap.Commit)
	if err != nil {
		r.release(m.Workspace)
		if !errors.Is(err, store.ErrStale) && !errors.Is(err, store.ErrBusy) {
			log.Error("journal remediation failed", "err", err)
		}
		return
	}
	log.Warn("remediation started", "op", id, "droplet_id", a.DropletID, "reason", a.Reason)
	hash := d.Hashes[m.Workspace]
	r.jobs.Go(func() {
		defer r.release(m.Workspace)
		result := "failed"
		if r.run(ctx, c, id, a, "running", hash, snap.Commit, false) {
			result = "succeeded"
		}
		if ctx.Err() == nil {
			steps.WithLabelValues(string(m.Step), result).Inc()
		}
	})
}

// retire destroys the droplet a rebuild replaced, now that the new one is
// healthy, and completes the rebuild.
func (r *Reconciler) retire(ctx context.Context, c *cloud.Pool, ws, commit string) {
	id, name, account, err := r.cfg.Store.Replacing(ctx, ws)
	if err != nil || id == 0 {
		if err != nil {
			r.wlog.Error("read replaced droplet failed", "tenant", ws, "err", err)
		}
		return
	}
	if !r.claim(ws) {
		return
	}
	a := plan.Action{Kind: plan.Destroy, Workspace: ws, Account: account, Droplet: name, DropletID: id, APICalls: 1,
		Reason: "watchdog: the rebuilt droplet is healthy; retiring the one it replaced"}
	op, err := r.cfg.Store.BeginRetire(ctx, a)
	if err != nil {
		r.release(ws)
		if !errors.Is(err, store.ErrBusy) {
			r.wlog.Error("journal retire failed", "tenant", ws, "err", err)
		}
		return
	}
	r.jobs.Go(func() {
		defer r.release(ws)
		if !r.run(ctx, c, op, a, "running", "", commit, false) {
			if ctx.Err() == nil {
				r.cfg.Metrics.watchdog.steps.WithLabelValues("retire", "failed").Inc()
			}
			return
		}
		if err := r.cfg.Store.Retired(ctx, ws, id); err != nil {
			r.wlog.Error("record retired droplet failed", "tenant", ws, "err", err)
			return
		}
		r.cfg.Metrics.watchdog.steps.WithLabelValues("retire", "succeeded").Inc()
	})
}

// Retry takes a FAILED tenant out of FAILED (actor: who asked), with its
// remediation ladder reset, and clears its work-queue hold (a backoff, or
// a terminal failure waiting for new input: queue.go), so the next pass
// tries it at once; store.ErrNotFailed when it was neither.
func (r *Reconciler) Retry(ctx context.Context, id, actor, reason string) error {
	snap, _ := r.Snapshot()
	held, err := r.cfg.Store.Forget(ctx, id)
	if err != nil {
		return err
	}
	r.mu.Lock()
	delete(r.holds, id)
	r.mu.Unlock()
	err = r.cfg.Store.RetryTenant(ctx, id, actor, reason, snap.Commit)
	if errors.Is(err, store.ErrNotFailed) && held {
		// Only a backoff was cleared: nothing was written that announces
		// it, so announce it here for the leader (its holds reload from
		// Postgres at its next pass, which this asks for).
		err = r.cfg.Store.Audit(ctx, actor, "retry", id, map[string]any{"reason": reason, "cleared": "backoff"}, snap.Commit)
		if err == nil {
			err = r.cfg.Store.Publish(ctx, store.Event{Kind: store.EventRetry, Workspace: id})
		}
	}
	if err != nil {
		return err
	}
	// Announced in RetryTenant's transaction: the leader runs a pass for
	// the tenant whichever replica took the call.
	r.wlog.Info("tenant retry", "tenant", id, "actor", actor, "reason", reason)
	r.passFor(id)
	return nil
}
