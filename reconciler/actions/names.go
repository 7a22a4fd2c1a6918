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

// movesDroplet reports whether a succeeded action of kind leaves the
// tenant on a new droplet (its name and reserved IP follow).
func movesDroplet(k plan.Kind) bool {
	switch k {
	case plan.Create, plan.Wake, plan.Resize, plan.Rebuild, plan.AssignSpare:
		return true
	}
	return false
}

// nameTarget is the address the succeeded action a leaves its tenant's
// name at (addr: the droplet's public address, its reserved IP when it
// holds one), and whether it moves the name at all.
func (n *Names) nameTarget(a plan.Action, addr string) (string, bool) {
	if n == nil || schema.IsSpareWorkspace(a.Workspace) {
		return "", false
	}
	switch {
	case movesDroplet(a.Kind):
		return addr, addr != ""
	}
	switch a.Kind {
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
func (e Executor) writeName(ctx context.Context, c *cloud.Pool, op Op, res cloud.Result, addr string, log *slog.Logger) (*store.NameWrite, error) {
	a := op.Action
	target, ok := e.Names.nameTarget(a, addr)
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

// holdReserved moves the tenant's reserved IP (spec.tiers.<t>.reservedIP)
// with the droplet a succeeded action a left it on, or releases it when
// the tenant is gone (destroy, or the point_name to "" of an absent
// tenant). It returns what to record (nil: nothing changed) and the
// address the tenant's name should say. A reserved IP that cannot be moved
// fails the action (the queue retries it; a half-moved address would leave
// the name pointing nowhere); one that cannot be released fails only a
// point_name (the planner repeats it), never the destroy that already
// happened.
func (e Executor) holdReserved(ctx context.Context, c *cloud.Pool, op Op, res cloud.Result, log *slog.Logger) (*store.ReservedIP, string, error) {
	a := op.Action
	addr := res.IP
	switch {
	case movesDroplet(a.Kind) && e.ReservedIP != nil && e.ReservedIP(schema.Tier(a.Tier)) && res.DropletID != 0 && !schema.IsSpareWorkspace(a.Workspace):
		cur, err := e.Store.ReservedIPOf(ctx, a.Workspace)
		if err != nil {
			return nil, addr, err
		}
		ip := cur.Address
		if ip != "" && cur.Account != res.Account {
			// Reserved IPs do not cross accounts: the tenant's droplet
			// moved to another one, so its address does too.
			if err := c.ReleaseReservedIP(ctx, cur.Account, ip); err != nil {
				log.Warn("release of the reserved ip in the old account failed; it stays billed there until released", "ip", ip, "account", cur.Account, "err", err)
			}
			ip = ""
		}
		held, err := c.HoldReservedIP(ctx, res.Account, a.Region, ip, res.DropletID)
		if err != nil {
			return nil, addr, fmt.Errorf("reserved ip: %w", err)
		}
		if err := e.Store.Step(ctx, op.ID, StepReserved, res.DropletID); err != nil {
			log.Error("journal step failed", "step", StepReserved, "err", err)
		}
		return &store.ReservedIP{Address: held, Account: res.Account}, held, nil
	case a.Kind == plan.Destroy || (a.Kind == plan.PointName && a.Target == ""):
		cur, err := e.Store.ReservedIPOf(ctx, a.Workspace)
		if err != nil || cur.Address == "" {
			return nil, addr, err
		}
		if err := c.ReleaseReservedIP(ctx, cur.Account, cur.Address); err != nil {
			if a.Kind == plan.PointName {
				return nil, addr, fmt.Errorf("release reserved ip %s: %w", cur.Address, err)
			}
			log.Warn("release of the reserved ip failed; a point_name retries it", "ip", cur.Address, "err", err)
			return nil, addr, nil
		}
		log.Info("reserved ip released", "ip", cur.Address, "account", cur.Account)
		return &store.ReservedIP{}, addr, nil
	}
	return nil, addr, nil
}

// StepReserved is the journal step of an action that moved its tenant's
// reserved IP to its droplet.
const StepReserved = "reserved_ip_held"
