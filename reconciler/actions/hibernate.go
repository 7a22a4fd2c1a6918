package actions

import (
	"context"
	"log/slog"
	"time"

	"genesis.dev/fleet/reconciler/plan"
)

// PREPARE_HIBERNATE (seed 2.3, 3.4): before a hibernate action snapshots,
// the tenant's manifest is rendered again (fleet_status says HIBERNATING,
// so it says state: hibernated), and the action waits until the droplet's
// stored heartbeat confirms that the agent stopped n8n, or PrepareTimeout
// passes (a dead agent cannot confirm: the snapshot is taken anyway,
// logged and recorded). Journal steps prepare → prepared |
// prepare_timed_out | prepare_skipped; a resumed operation past them does
// not wait again.

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
func (e Executor) prepareHibernate(ctx context.Context, opID int64, a plan.Action, log *slog.Logger) {
	st := e.Store
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
		e.Metrics.Prepare.WithLabelValues(result).Inc()
	}
	if e.Manifest == nil {
		log.Info("hibernate prepare skipped: no manifests are issued")
		end(StepPrepareSkipped, "skipped", false, map[string]any{"why": "no manifests are issued"})
		return
	}
	if err := e.Manifest(ctx, a); err != nil {
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
	timeout := e.PrepareTimeout
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
