package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// Hibernation around the planner and the executor (seed 2.3, 3.4):
//
//   - PREPARE_HIBERNATE: before a hibernate action snapshots, the tenant's
//     manifest is rendered again (fleet_status says HIBERNATING, so it says
//     state: hibernated), and the action waits until the droplet's stored
//     heartbeat confirms that the agent stopped n8n, or PrepareTimeout
//     passes (a dead agent cannot confirm: the snapshot is taken anyway,
//     logged and recorded). Journal steps prepare → prepared |
//     prepare_timed_out | prepare_skipped; a resumed operation past them
//     does not wait again.
//   - Idle warnings: the planner lists tenants to warn; each is recorded
//     (fleet_status.idle_warned_at, audit_log), logged, counted and sent
//     to the notifier once.
//   - Wake fast path: Wake sets wake_requested and announces it; the
//     leader, whichever replica took the call, runs a pass for the tenant.
//   - Cost: the monthly cost of the observed droplets and snapshot storage.

// Journal steps of the prepare phase of a hibernation.
const (
	StepPrepare         = "prepare"
	StepPrepared        = "prepared"
	StepPrepareTimedOut = "prepare_timed_out"
	StepPrepareSkipped  = "prepare_skipped"
)

// DefaultPrepareTimeout bounds the wait for an agent to confirm that n8n
// stopped before a hibernation's snapshot.
const DefaultPrepareTimeout = 5 * time.Minute

// prepareHibernate is PREPARE_HIBERNATE for a hibernate action (see
// above). It never fails the action: at worst the snapshot is taken
// without the agent's confirmation.
func (r *Reconciler) prepareHibernate(ctx context.Context, opID int64, a plan.Action, log *slog.Logger) {
	st := r.cfg.Store
	step, err := st.OperationStep(ctx, opID)
	if err != nil {
		log.Error("read journal step failed", "err", err)
	}
	if step != "" && step != StepPrepare {
		return // resumed past the prepare phase
	}
	if err := st.Step(ctx, opID, StepPrepare, a.DropletID); err != nil {
		log.Error("journal step failed", "step", StepPrepare, "err", err)
	}
	end := func(step, result string, confirmed bool, detail map[string]any) {
		detail["result"], detail["droplet_id"] = result, a.DropletID
		if err := st.RecordPrepare(ctx, opID, a.Workspace, step, confirmed, detail); err != nil && ctx.Err() == nil {
			log.Error("record hibernate prepare failed", "err", err)
		}
		r.cfg.Metrics.hib.prepare.WithLabelValues(result).Inc()
	}
	if r.cfg.Manifest == nil {
		log.Info("hibernate prepare skipped: no manifests are issued")
		end(StepPrepareSkipped, "skipped", false, map[string]any{"why": "no manifests are issued"})
		return
	}
	if err := r.cfg.Manifest(ctx, a); err != nil {
		log.Warn("render hibernating manifest failed", "err", err)
	}
	enrolled, err := st.AgentEnrolled(ctx, a.DropletID)
	if err != nil {
		log.Error("look up agent failed", "err", err)
	}
	if !enrolled {
		log.Warn("hibernate prepare skipped: no agent enrolled on the droplet", "droplet_id", a.DropletID)
		end(StepPrepareSkipped, "skipped", false, map[string]any{"why": "no agent enrolled on the droplet"})
		return
	}
	timeout := r.cfg.PrepareTimeout
	if timeout <= 0 {
		timeout = DefaultPrepareTimeout
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := st.N8NStopped(wctx, a.Workspace, a.DropletID)
		if err != nil && wctx.Err() == nil {
			log.Warn("read heartbeat failed", "err", err)
		}
		if ok {
			log.Info("agent confirmed n8n stopped", "waited_seconds", time.Since(start).Seconds())
			end(StepPrepared, "confirmed", true, map[string]any{"waited_seconds": time.Since(start).Seconds()})
			return
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return // leadership lost: the next leader resumes at prepare
			}
			log.Warn("agent did not confirm n8n stopped in time; snapshotting anyway", "timeout", timeout)
			end(StepPrepareTimedOut, "timeout", false, map[string]any{"timeout": timeout.String()})
			return
		case <-tick.C:
		}
	}
}

// warnIdle records and sends the plan's idle warnings. A warning another
// pass recorded already is not sent again.
func (r *Reconciler) warnIdle(ctx context.Context, ws []plan.IdleWarning) {
	for _, w := range ws {
		at := r.cfg.Now().UTC()
		n := Notification{Kind: NotifyIdleWarning, Workspace: w.Workspace, LastActivity: w.LastActivity, AfterIdle: w.AfterIdle,
			HibernateAt: w.HibernateAt, WarnedAt: at}
		recorded, err := r.cfg.Store.RecordIdleWarning(ctx, w.Workspace, at, map[string]any{
			"last_activity": w.LastActivity, "after_idle": w.AfterIdle, "hibernate_at": w.HibernateAt})
		if err != nil {
			r.log.Error("record idle warning failed", "tenant", w.Workspace, "err", err)
			continue
		}
		if !recorded {
			continue
		}
		r.cfg.Metrics.hib.warnings.Inc()
		r.log.Info("tenant warned of idle hibernation", "tenant", w.Workspace, "last_activity", w.LastActivity, "hibernate_at", w.HibernateAt)
		if r.cfg.Notify == nil {
			continue
		}
		result := "sent"
		if err := r.cfg.Notify(ctx, n); err != nil {
			result = "failed"
			r.log.Warn("idle warning notification failed", "tenant", w.Workspace, "err", err)
		}
		r.cfg.Metrics.hib.notifications.WithLabelValues(string(n.Kind), result).Inc()
	}
}

// ErrWakeConflict means the tenant cannot be woken through the API: it is
// not hibernated, or git declares it hibernated (a commit of state: running
// wakes it).
var ErrWakeConflict = api.NewError(api.ErrConflict, "cannot wake")

// ErrUnknownTenant means no such tenant is declared or recorded.
var ErrUnknownTenant = api.NewError(api.ErrNotFound, "unknown tenant")

// Wake is the dashboard's fast path: it asks for a hibernated tenant's
// droplet back without a commit. It records wake_requested (with an audit
// entry naming actor) and kicks the loop, which wakes the tenant from its
// latest snapshot at its current size.
func (r *Reconciler) Wake(ctx context.Context, id, actor string) (store.FleetRow, error) {
	snap, ok := r.Snapshot()
	if !ok {
		return store.FleetRow{}, errNoSnapshot
	}
	ts, declared := snap.Tenants[id]
	if !declared {
		return store.FleetRow{}, fmt.Errorf("%w %s", ErrUnknownTenant, id)
	}
	if ts.Tenant != nil && ts.Tenant.Spec.State != schema.StateRunning {
		return store.FleetRow{}, fmt.Errorf("%w %s: git declares state: %s (commit state: running to wake it)", ErrWakeConflict, id, ts.Tenant.Spec.State)
	}
	err := r.cfg.Store.RequestWake(ctx, id, actor)
	switch {
	case errors.Is(err, store.ErrUnknownTenant):
		return store.FleetRow{}, fmt.Errorf("%w %s", ErrUnknownTenant, id)
	case errors.Is(err, store.ErrNotHibernated):
		return store.FleetRow{}, fmt.Errorf("%w %s: %v", ErrWakeConflict, id, err)
	case err != nil:
		return store.FleetRow{}, err
	}
	// A wake is new input, as a changed tenant file is: a backoff or a
	// terminal hold of an earlier try does not delay it.
	if _, err := r.cfg.Store.Forget(ctx, id); err != nil {
		return store.FleetRow{}, err
	}
	r.mu.Lock()
	delete(r.holds, id)
	r.mu.Unlock()
	// The leader hears of it through store.EventChannel (events.go); if
	// this replica leads, it goes ahead without waiting for that.
	r.log.Info("wake requested", "tenant", id, "actor", actor)
	r.passFor(id)
	rows, err := r.cfg.Store.Fleet(ctx)
	if err != nil {
		return store.FleetRow{}, err
	}
	for _, row := range rows {
		if row.Workspace == id {
			return row, nil
		}
	}
	return store.FleetRow{Workspace: id}, nil
}

// recordCost sets the monthly cost gauges from an observation: droplets at
// their size's price, snapshot storage at the fleet's price per GB-month.
func (r *Reconciler) recordCost(f *schema.Fleet, o plan.Observed) {
	if f == nil {
		return
	}
	droplets, snapshots, gb := 0.0, 0.0, 0.0
	for _, d := range o.Droplets {
		droplets += f.MonthlyUSD(d.Size)
	}
	for _, s := range o.Snapshots {
		gb += s.SizeGB
	}
	snapshots = f.SnapshotMonthlyUSD(gb)
	m := r.cfg.Metrics.hib
	m.cost.WithLabelValues("droplets").Set(droplets)
	m.cost.WithLabelValues("snapshots").Set(snapshots)
	m.snapshotBytes.Set(gb * (1 << 30))
}

// hibernationMetrics are the hibernation series.
type hibernationMetrics struct {
	prepare       *prometheus.CounterVec
	warnings      prometheus.Counter
	notifications *prometheus.CounterVec
	cost          *prometheus.GaugeVec
	snapshotBytes prometheus.Gauge
}

func newHibernationMetrics(reg prometheus.Registerer) *hibernationMetrics {
	m := &hibernationMetrics{
		prepare: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_hibernate_prepare_total",
			Help: "Hibernation prepare phases by result (confirmed: the agent stopped n8n; timeout: snapshotted without confirmation; skipped: no agent)."}, []string{"result"}),
		warnings: prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_idle_warnings_total",
			Help: "Tenants warned that idleness will hibernate them."}),
		notifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_notifications_total",
			Help: "Notifications POSTed to --notify-url by kind and result."}, []string{"kind", "result"}),
		cost: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_fleet_monthly_cost_usd",
			Help: "Monthly cost of the observed fleet in USD: droplets at their size's price, snapshot storage per GB-month."}, []string{"kind"}),
		snapshotBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_snapshot_bytes",
			Help: "Bytes of droplet snapshots the fleet stores (size_gigabytes × 2^30)."}),
	}
	if reg != nil {
		reg.MustRegister(m.prepare, m.warnings, m.notifications, m.cost, m.snapshotBytes)
	}
	return m
}
