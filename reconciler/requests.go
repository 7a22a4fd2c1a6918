package reconciler

import (
	"context"
	"errors"
	"fmt"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/reconciler/watchdog"
	"genesis.dev/fleet/schema"
)

// Requests of people to the loop, taken by any replica: a wake (the
// dashboard's fast path: Wake sets wake_requested and announces it; the
// leader, whichever replica took the call, runs a pass for the tenant) and
// a retry of a FAILED or backing-off tenant. Both are new input: they clear
// the tenant's hold in the work queue.

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
	// RequestWake cleared the tenant's retry state (a wake is new input);
	// so does this replica's copy.
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

// ErrBadAction means an operator asked for a step that is not one.
var ErrBadAction = api.NewError(api.ErrBadRequest, "action")

// stepBackup is the operator action "backup": not a watchdog step, a
// request the manifest carries to the agent.
const stepBackup watchdog.Step = "backup"

// ErrNotRunning means the tenant has no running droplet to act on.
var ErrNotRunning = api.NewError(api.ErrConflict, "cannot act")

// Operate records an operator's action on a tenant's droplet (POST
// /v1/tenants/{id}/actions), with an audit entry naming actor and reason;
// any replica takes the call.
//
//   - reboot, power_cycle, rebuild and snapshot: the leader's watchdog
//     runs the step at its next run (Config.WatchdogEvery) like one of its
//     own — journaled, through the account's rate budget, a rebuild with
//     the copy rules of every rebuild; a snapshot is taken live and leaves
//     the tenant's state and ladder alone.
//   - backup: the droplet's next manifest asks its agent for a backup now
//     (store.RequestBackup), rendered at once by this replica, until a
//     good backup that started after the request exists (the tenant's
//     recovery_point then names it).
func (r *Reconciler) Operate(ctx context.Context, id, action, actor, reason string) error {
	if action == ActionRotateSecrets {
		return r.rotateSecrets(ctx, id, actor, reason)
	}
	step := watchdog.Step(action)
	switch step {
	case watchdog.StepReboot, watchdog.StepPowerCycle, watchdog.StepRebuild, watchdog.StepSnapshot, stepBackup:
	default:
		return fmt.Errorf("%w: %q is not reboot, power_cycle, rebuild, snapshot or backup", ErrBadAction, action)
	}
	if n := len(reason); n == 0 || n > 500 {
		return fmt.Errorf("%w: reason: 1-500 characters (got %d)", ErrBadAction, n)
	}
	var err error
	if step == stepBackup {
		err = r.cfg.Store.RequestBackup(ctx, id, actor, reason)
		if err == nil && r.cfg.Manifest != nil {
			// The request is an input of the droplet's manifest: render it
			// now (any replica may; a version issued in between is
			// detected). Should this fail, the leader's manifest sweep
			// issues it.
			if rerr := r.cfg.Manifest(ctx, plan.Action{Kind: plan.UpdateManifest, Workspace: id}); rerr != nil {
				r.log.Warn("render the manifest that asks for the backup failed; the sweep issues it", "tenant", id, "err", rerr)
			}
		}
	} else {
		err = r.cfg.Store.RequestStep(ctx, id, step, actor, reason)
	}
	switch {
	case errors.Is(err, store.ErrUnknownTenant):
		return fmt.Errorf("%w %s", ErrUnknownTenant, id)
	case errors.Is(err, store.ErrNotRunning):
		return fmt.Errorf("%w %s: %v", ErrNotRunning, id, err)
	case err != nil:
		return err
	}
	r.log.Warn("operator action requested", "tenant", id, "action", action, "actor", actor, "reason", reason)
	return nil
}
