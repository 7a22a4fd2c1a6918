package reconciler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/reconciler/watchdog"
	"genesis.dev/fleet/tenants"
)

// The watchdog's tick of the loop: package watchdog decides, the loop
// writes its health transitions and starts its remediations as jobs, and
// package actions acts (actions/remediate.go).

// DefaultWatchdogEvery is how often the leader runs the watchdog.
const DefaultWatchdogEvery = 15 * time.Second

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
	d := snap.Desired()
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
	r.watchNotices(ctx, rows, dec, now)
	return dec, nil
}

// DefaultOperatorRequestDeadline is Config.OperatorRequestDeadline's
// default: several watchdog runs.
const DefaultOperatorRequestDeadline = 10 * time.Minute

// watchNotices queues the notices a watchdog run owes people: each tenant
// found past its lifecycle deadline, and each operator's action still not
// taken past Config.OperatorRequestDeadline (its tenant left its running
// state, or kept changing under the watchdog). Queueing is deduplicated
// and damped per tenant (notices.go); a failure is logged, never fails
// the run.
func (r *Reconciler) watchNotices(ctx context.Context, rows []watchdog.Row, dec watchdog.Decision, now time.Time) {
	var ns []notify.Notification
	steps := map[string]watchdog.Step{}
	for _, m := range dec.Remediations {
		steps[m.Workspace] = m.Step
	}
	for _, o := range dec.Overdue {
		detail := "the watchdog takes its step"
		if s, ok := steps[o.Workspace]; ok {
			detail = "the watchdog's step: " + string(s)
		} else if dec.Outage || dec.Recovering {
			detail = "the watchdog holds its step back: fleet-wide silence"
		}
		ns = append(ns, notify.Notification{Kind: notify.Stuck, Workspace: o.Workspace,
			Summary: o.Workspace + " is stuck: " + o.Reason, Detail: detail})
	}
	for _, row := range rows {
		if row.Requested == watchdog.StepNone || row.RequestedAt.IsZero() || now.Sub(row.RequestedAt) < r.cfg.OperatorRequestDeadline {
			continue
		}
		if steps[row.Workspace] == row.Requested {
			continue // taken in this run
		}
		ns = append(ns, notify.Notification{Kind: notify.OperatorRequestStuck, Workspace: row.Workspace,
			Summary: fmt.Sprintf("%s of %s, asked by %s %s ago, was not taken", row.Requested, row.Workspace, row.RequestedBy,
				now.Sub(row.RequestedAt).Round(time.Second)),
			Detail: fmt.Sprintf("the tenant is %s (an operator's step runs only on a running droplet); reason given: %s", row.Lifecycle, row.RequestReason)})
	}
	for _, n := range ns {
		r.wlog.Warn("notice", "kind", n.Kind, "tenant", n.Workspace, "summary", n.Summary)
		if err := r.queueNotice(ctx, n); err != nil && ctx.Err() == nil {
			r.wlog.Error("queue notice failed", "kind", n.Kind, "tenant", n.Workspace, "err", err)
		}
	}
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

// remediate starts one ladder step for a tenant: the action (or FAILED)
// comes from actions.Executor.Remediation, and runs as the workspace's job.
func (r *Reconciler) remediate(ctx context.Context, c *cloud.Pool, snap tenants.Snapshot, d plan.Desired, row watchdog.Row, m watchdog.Remediation) {
	x := r.executor(r.wlog)
	a, ok := x.Remediation(ctx, d, r.Observed, row, m, snap.Commit)
	if !ok {
		return
	}
	if !r.claim(m.Workspace) {
		return
	}
	id, ok := x.BeginRemediation(ctx, a, row, m, snap.Commit)
	if !ok {
		r.release(m.Workspace)
		return
	}
	hash := d.Hashes[m.Workspace]
	r.jobs.Go(func() {
		defer r.release(m.Workspace)
		x.Remediated(ctx, string(m.Step), r.run(ctx, c, id, a, "running", hash, snap.Commit, false))
	})
}

// retire destroys the droplet a rebuild replaced, now that the new one is
// healthy, and completes the rebuild.
func (r *Reconciler) retire(ctx context.Context, c *cloud.Pool, ws, commit string) {
	x := r.executor(r.wlog)
	a, ok := x.Retirement(ctx, ws)
	if !ok {
		return
	}
	if !r.claim(ws) {
		return
	}
	op, ok := x.BeginRetire(ctx, a)
	if !ok {
		r.release(ws)
		return
	}
	r.jobs.Go(func() {
		defer r.release(ws)
		x.Retired(ctx, a, r.run(ctx, c, op, a, "running", "", commit, false))
	})
}

// watchdogMetrics are the watchdog's gauges; its remediation steps are
// counted by the executor (actions.Metrics.Steps).
type watchdogMetrics struct {
	health *prometheus.GaugeVec
	outage prometheus.Gauge
}

func newWatchdogMetrics() *watchdogMetrics {
	return &watchdogMetrics{
		health: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_watchdog_tenants",
			Help: "Running tenants by health as the watchdog last judged them (healthy, degraded, critical, failed)."}, []string{"health"}),
		outage: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_watchdog_outage",
			Help: "1 while the outage guard holds (too much of the fleet silent at once: no remediation)."}),
	}
}

func (m *watchdogMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.health, m.outage}
}
