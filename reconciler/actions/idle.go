package actions

import (
	"context"

	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/plan"
)

// WarnIdle records and sends the plan's idle warnings: each is recorded
// (fleet_status.idle_warned_at, audit_log), logged, counted and sent to
// the notifier once. A warning another pass recorded already is not sent
// again.
func (e Executor) WarnIdle(ctx context.Context, ws []plan.IdleWarning) {
	for _, w := range ws {
		at := e.Now().UTC()
		n := notify.Notification{Kind: notify.IdleWarning, Workspace: w.Workspace, LastActivity: w.LastActivity, AfterIdle: w.AfterIdle,
			HibernateAt: w.HibernateAt, WarnedAt: at}
		recorded, err := e.Store.RecordIdleWarning(ctx, w.Workspace, at, map[string]any{
			"last_activity": w.LastActivity, "after_idle": w.AfterIdle, "hibernate_at": w.HibernateAt})
		if err != nil {
			e.Log.Error("record idle warning failed", "tenant", w.Workspace, "err", err)
			continue
		}
		if !recorded {
			continue
		}
		e.Metrics.Warnings.Inc()
		e.Log.Info("tenant warned of idle hibernation", "tenant", w.Workspace, "last_activity", w.LastActivity, "hibernate_at", w.HibernateAt)
		e.notice(ctx, n)
	}
}

// notice queues n for people (Executor.Notify), logging a failure: a
// notice never fails what it reports.
func (e Executor) notice(ctx context.Context, n notify.Notification) {
	if e.Notify == nil {
		return
	}
	if err := e.Notify(ctx, n); err != nil {
		e.Log.Warn("queue notice failed", "kind", n.Kind, "workspace", n.Workspace, "account", n.Account, "err", err)
	}
}
