package actions

import (
	"context"
	"fmt"
	"log/slog"

	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// StepNamed is the journal step of an action that wrote its tenant's
// stable name.
const StepNamed = "name_pointed"

// Names is the fleet's spec.dns as the executor needs it: the actions that
// move a tenant's droplet write its stable name <workspace>.<Zone>.
type Names struct {
	Account, Zone string
	TTL           int
	// Activator and ActivatorIPv6 are where a hibernated tenant's name
	// points ("" : it keeps its last address).
	Activator, ActivatorIPv6 string
}

// NamesOf is f's spec.dns for the executor (nil without one).
func NamesOf(f *schema.Fleet) *Names {
	if f == nil || f.Spec.DNS == nil || f.Spec.DNS.Zone == "" {
		return nil
	}
	d := f.Spec.DNS
	return &Names{Account: d.Account, Zone: d.Zone, TTL: int(d.TTL.Std().Seconds()), Activator: d.Activator, ActivatorIPv6: d.ActivatorIPv6}
}

// nameTarget is the address the succeeded action a leaves its tenant's
// name at, and whether it moves the name at all.
func (n *Names) nameTarget(a plan.Action, res cloud.Result) (string, bool) {
	if n == nil || schema.IsSpareWorkspace(a.Workspace) {
		return "", false
	}
	switch a.Kind {
	case plan.Create, plan.Wake, plan.Resize, plan.Rebuild, plan.AssignSpare:
		return res.IP, res.IP != ""
	case plan.Hibernate:
		return n.Activator, n.Activator != ""
	case plan.Destroy:
		return "", true // state: absent, the only removal
	case plan.PointName:
		return a.Target, true
	}
	return "", false
}

// writeName points the tenant's stable name where the succeeded action a
// left it, journaling the step, and returns what to record. A failure of
// the write does not fail a droplet's action (the droplet is fine, and
// rolling it back would lose more than a stale record): it is logged and
// counted, the record keeps its old target, and the planner's point_name
// repairs it. For point_name itself the failure is the action's.
func (e Executor) writeName(ctx context.Context, c *cloud.Pool, op Op, res cloud.Result, log *slog.Logger) (*store.NameWrite, error) {
	a := op.Action
	target, ok := e.Names.nameTarget(a, res)
	if !ok {
		return nil, nil
	}
	n := cloud.Name{Account: e.Names.Account, Zone: e.Names.Zone, Host: a.Workspace, TTL: e.Names.TTL}
	ipv6 := ""
	if target != "" && target == e.Names.Activator {
		ipv6 = e.Names.ActivatorIPv6
	}
	err := c.PointName(ctx, n, target, ipv6)
	result := "succeeded"
	if err != nil {
		result = "failed"
	}
	if e.Metrics != nil && e.Metrics.Names != nil {
		e.Metrics.Names.WithLabelValues(string(a.Kind), result).Inc()
	}
	if err != nil {
		if a.Kind == plan.PointName {
			return nil, fmt.Errorf("point %s at %q: %w", n.FQDN(), target, err)
		}
		log.Warn("stable name not moved; a point_name repair follows", "name", n.FQDN(), "target", target, "err", err)
		return nil, nil
	}
	if err := e.Store.Step(ctx, op.ID, StepNamed, res.DropletID); err != nil {
		log.Error("journal step failed", "step", StepNamed, "err", err)
	}
	log.Info("stable name points", "name", n.FQDN(), "target", target)
	return &store.NameWrite{Target: target}, nil
}
