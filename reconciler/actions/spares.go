package actions

import (
	"context"
	"fmt"

	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// Hot spares: the planner decides (plan/spares.go); here the assignment of
// a spare to a tenant is carried out, after cloud.Execute has retagged the
// droplet:
//
//  1. Postgres, in one transaction (store.MoveSpare): the droplet, its
//     address and its agent move from the spare's workspace to the
//     tenant's;
//  2. the tenant's manifest is rendered and signed for that droplet (the
//     Manifest hook), which wakes the parked agent's long-poll at once: it
//     adopts the tenant's workspace and converges;
//  3. the droplet is renamed to the tenant's deterministic name (so later
//     hibernations and resizes find it by name).
//
// Every step is idempotent; the operation is journaled like any other, so a
// crash part way is resumed by the next leader.

// DesiredOf is the state the actions of workspace ws work towards: the
// tenant's, or for a spare running (absent when it is being destroyed).
func DesiredOf(d plan.Desired, ws string, actions []plan.Action) schema.State {
	if t := d.Tenants[ws]; t != nil {
		return t.Spec.State
	}
	for _, a := range actions {
		if towards := a.Kind.Info().Towards; towards != "" && towards != schema.StateRunning {
			return towards
		}
	}
	return schema.StateRunning
}

// assignSpare finishes an assign_spare action once Execute (the tags) ran
// with execErr; it returns the action's error.
func (e Executor) assignSpare(ctx context.Context, c *cloud.Pool, a plan.Action, res cloud.Result, desired schema.State, execErr error) error {
	err := execErr
	if err == nil {
		a.Account = res.Account
		err = e.Store.MoveSpare(ctx, a, res.IP, desired)
	}
	if err == nil && e.Manifest != nil {
		if merr := e.Manifest(ctx, a); merr != nil {
			err = fmt.Errorf("render manifest: %w", merr)
		}
	}
	if err == nil && a.Droplet != "" {
		err = c.Rename(ctx, res.Account, res.DropletID, a.Droplet)
	}
	result := "assigned"
	if err != nil {
		result = "failed"
	}
	if ctx.Err() == nil {
		e.Metrics.Assignments.WithLabelValues(result).Inc()
	}
	return err
}
