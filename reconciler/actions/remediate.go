package actions

import (
	"context"
	"errors"
	"fmt"
	"time"

	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/reconciler/watchdog"
)

// The watchdog's acting side. Package watchdog decides (a pure function of
// heartbeats, policy and now); store/remediation.go holds its SQL; here a
// decided ladder step becomes an action and a journal entry, and a
// rebuild's replaced droplet is retired. The loop claims the workspace and
// runs the journaled action as a job like any other.

// Remediation is the action of ladder step m for the tenant of row: a
// reboot, a power cycle, or a rebuild (a new droplet beside the dead one,
// planned from observed). It reports false when there is no action to
// start: the step is fail (FAILED is recorded here, and alerts), a rebuild
// waits for a complete observation, or a rebuild is impossible (no room,
// no tenant: FAILED, for a person to act). Logs go to e.Log.
func (e Executor) Remediation(ctx context.Context, d plan.Desired, observed func() plan.Observed, row watchdog.Row, m watchdog.Remediation, commit string) (plan.Action, bool) {
	log := e.Log.With("tenant", m.Workspace, "step", m.Step)
	if m.Step == watchdog.StepFail {
		err := e.Store.Fail(ctx, m.Workspace, row.Lifecycle, m.Heartbeat, m.Reason, d.Hashes[m.Workspace], commit)
		if errors.Is(err, store.ErrStale) {
			return plan.Action{}, false
		}
		if err != nil {
			log.Error("record FAILED failed", "err", err)
			return plan.Action{}, false
		}
		e.Metrics.Steps.WithLabelValues("fail", "succeeded").Inc()
		log.Error("tenant FAILED: remediation exhausted; retry with POST /v1/tenants/{id}/retry or a change of its file", "reason", m.Reason)
		e.notice(ctx, notify.Notification{Kind: notify.TenantFailed, Workspace: m.Workspace,
			Summary: "tenant " + m.Workspace + " FAILED: a person must act (POST /v1/tenants/" + m.Workspace + "/retry, or a change of its file)", Detail: m.Reason})
		return plan.Action{}, false
	}
	a := plan.Action{Workspace: m.Workspace, Account: row.Account, Droplet: row.DropletName, DropletID: row.DropletID, Reason: "watchdog: " + m.Reason}
	switch m.Step {
	case watchdog.StepReboot:
		a.Kind = plan.Reboot
	case watchdog.StepPowerCycle:
		a.Kind = plan.PowerCycle
	case watchdog.StepSnapshot:
		a.Kind = plan.SnapshotNow
		a.Reason = m.Reason
		// (An adopted droplet's name may carry no generation: 1.)
		gen := max(1, plan.ParseGeneration(m.Workspace, row.DropletName))
		a.SnapshotName = plan.ManualSnapshotName(m.Workspace, gen, e.Now())
	case watchdog.StepRebuild:
		rb, err := plan.RebuildAction(d, observed(), m.Workspace)
		if errors.Is(err, plan.ErrNotObserved) {
			log.Warn("rebuild waits for a complete observation", "err", err)
			return plan.Action{}, false
		}
		if err != nil {
			// Nothing can be built (no room, no tenant): a person must act.
			m.Step, m.Reason = watchdog.StepFail, fmt.Sprintf("%s; rebuild impossible: %v", m.Reason, err)
			return e.Remediation(ctx, d, observed, row, m, commit)
		}
		rb.Reason = rb.Reason + " (" + m.Reason + ")"
		e.restoreNewest(ctx, &rb, observed())
		a = rb
	}
	a.APICalls = a.Kind.Info().APICalls
	return a, true
}

// restoreNewest makes rebuild a restore the workspace's newest backup
// when it is newer than the snapshot a starts from (or a starts fresh): a
// rebuild never starts from an older copy when a newer one exists.
func (e Executor) restoreNewest(ctx context.Context, a *plan.Action, o plan.Observed) {
	b, ok, err := e.Store.NewestGoodBackup(ctx, a.Workspace)
	if err != nil {
		e.Log.Error("read newest backup failed; the rebuild starts from its snapshot or fresh", "tenant", a.Workspace, "err", err)
		return
	}
	if !ok {
		return
	}
	var from plan.Snapshot
	for _, s := range o.Snapshots {
		if s.ID == a.Snapshot && a.Snapshot != "" {
			from = s
		}
	}
	if a.Restore = plan.RestoreFrom(from, &plan.BackupCopy{ID: b.ID, DropletID: int(b.DropletID), Started: b.Started}); a.Restore != "" {
		a.Reason += fmt.Sprintf("; restores backup %s of %s, the newest copy", b.ID, b.Started.UTC().Format(time.RFC3339))
	}
}

// BeginRemediation journals remediation a of step m for the tenant of row
// (store.BeginRemediation: compare-and-set on the state and heartbeat the
// decision was made on). It reports false when it must not run: the
// workspace changed since, or has an operation in flight.
func (e Executor) BeginRemediation(ctx context.Context, a plan.Action, row watchdog.Row, m watchdog.Remediation, commit string) (int64, bool) {
	log := e.Log.With("tenant", m.Workspace, "step", m.Step)
	if a.Restore != "" {
		// Asked before the rebuild is journaled, so a process killed in
		// between cannot leave a rebuild that was never asked to restore
		// (the resumed rebuild would start from older data). A request
		// left by a rebuild that is then not journaled names the same
		// next-generation droplet the next decision asks again (upsert).
		if err := e.Store.RequestRestore(ctx, a.Workspace, a.Droplet, a.Restore, commit); err != nil {
			log.Error("request restore failed; the rebuilt droplet starts from its snapshot or fresh (the replaced one is kept until it has a copy)", "backup", a.Restore, "err", err)
		}
	}
	id, err := e.Store.BeginRemediation(ctx, a, row.Lifecycle, m.Heartbeat, e.Now(), commit)
	if err != nil {
		if !errors.Is(err, store.ErrStale) && !errors.Is(err, store.ErrBusy) {
			log.Error("journal remediation failed", "err", err)
		}
		return 0, false
	}
	log.Warn("remediation started", "op", id, "droplet_id", a.DropletID, "reason", a.Reason)
	return id, true
}

// Remediated counts a remediation step's job that ended (succeeded or
// not); a job cut short by the end of leadership is not counted.
func (e Executor) Remediated(ctx context.Context, step string, succeeded bool) {
	result := "failed"
	if succeeded {
		result = "succeeded"
	}
	if ctx.Err() == nil {
		e.Metrics.Steps.WithLabelValues(step, result).Inc()
	}
}

// Retirement is what ends the droplet a rebuild of ws replaced, once the
// new one is healthy; false when there is none (or it could not be read:
// logged). The replaced droplet is destroyed outright only when a backup
// it took is newer than its last sign of life (the proof goes into the
// action's reason, so the journal keeps it); otherwise it is retired:
// stopped, snapshotted, and destroyed only once the snapshot exists. No
// droplet whose data has no newer copy is destroyed.
func (e Executor) Retirement(ctx context.Context, ws string) (plan.Action, bool) {
	r, err := e.Store.Replacing(ctx, ws)
	if err != nil || r.ID == 0 {
		if err != nil {
			e.Log.Error("read replaced droplet failed", "tenant", ws, "err", err)
		}
		return plan.Action{}, false
	}
	var newest *plan.BackupCopy
	b, ok, err := e.Store.NewestBackupBy(ctx, ws, r.ID)
	if err != nil {
		e.Log.Error("read replaced droplet's backups failed; it is snapshotted before it is destroyed", "tenant", ws, "err", err)
	}
	if ok {
		newest = &plan.BackupCopy{ID: b.ID, DropletID: int(b.DropletID), Started: b.Started}
	}
	return plan.RetireAction(plan.Replaced{Workspace: ws, ID: r.ID, Name: r.Name, Account: r.Account, LastSeen: r.LastSeen}, newest), true
}

// BeginRetire journals retirement a; false when it must not run now.
func (e Executor) BeginRetire(ctx context.Context, a plan.Action) (int64, bool) {
	op, err := e.Store.BeginRetire(ctx, a)
	if err != nil {
		if !errors.Is(err, store.ErrBusy) {
			e.Log.Error("journal retire failed", "tenant", a.Workspace, "err", err)
		}
		return 0, false
	}
	return op, true
}

// Retired completes the rebuild once retirement a's job ended: when it
// succeeded, the replaced droplet is forgotten (store.Retired).
func (e Executor) Retired(ctx context.Context, a plan.Action, succeeded bool) {
	if !succeeded {
		if ctx.Err() == nil {
			e.Metrics.Steps.WithLabelValues("retire", "failed").Inc()
		}
		return
	}
	if err := e.Store.Retired(ctx, a.Workspace, a.DropletID); err != nil {
		e.Log.Error("record retired droplet failed", "tenant", a.Workspace, "err", err)
		return
	}
	e.Metrics.Steps.WithLabelValues("retire", "succeeded").Inc()
}
