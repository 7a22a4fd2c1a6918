package cloud

import (
	"context"
	"fmt"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/reconciler/plan"
)

// Steps of the watchdog's actions.
const (
	StepRebootSent = "reboot_sent" // reboot or power_cycle action accepted
	StepRebooted   = "rebooted"    // the action completed
)

// remediate runs the watchdog's ladder steps:
//
//   - Reboot and PowerCycle post the droplet action (found by id, with its
//     name checked) and wait for it to complete. A droplet that is gone is
//     a terminal error: the ladder moves on to a rebuild after its
//     cool-down.
//   - Rebuild creates the next generation's droplet beside the dead one,
//     from a.Snapshot when set (in the account holding it) or from the
//     base image, exactly as a wake or a create does (found again by name
//     when resumed). The dead droplet is not touched.
func (x *exec) remediate(ctx context.Context) error {
	switch x.a.Kind {
	case plan.Reboot, plan.PowerCycle:
		return x.inAccount(ctx, x.a.Account, x.reboot)
	case plan.Rebuild:
		if x.a.Gen < 1 || x.a.Droplet != plan.DropletName(x.a.Workspace, x.a.Gen) {
			return terminalf(x.a.Account, "rebuild", "droplet name %q is not generation %d of workspace %s", x.a.Droplet, x.a.Gen, x.a.Workspace)
		}
		if x.a.Snapshot == "" {
			return x.create(ctx, godo.DropletCreateImage{Slug: x.a.Image}, "", x.a.Droplet, x.a.Size)
		}
		id, err := snapshotImage(x.a.Account, x.a.Snapshot)
		if err != nil {
			return err
		}
		return x.create(ctx, godo.DropletCreateImage{ID: id}, x.a.Snapshot, x.a.Droplet, x.a.Size)
	}
	return terminalf(x.a.Account, string(x.a.Kind), "not a remediation")
}

func (x *exec) reboot(ctx context.Context, ac *account) error {
	typ := string(x.a.Kind)
	d, err := x.droplet(ctx, ac)
	if err != nil {
		return err
	}
	if d == nil {
		return terminalf(ac.name, typ, "droplet %d (%s) is gone", x.a.DropletID, x.a.Droplet)
	}
	var act *godo.Action
	err = x.p.call(ctx, ac, fmt.Sprintf("%s droplet %d", typ, d.ID), func(ctx context.Context) (*godo.Response, error) {
		var resp *godo.Response
		var err error
		if x.a.Kind == plan.Reboot {
			act, resp, err = ac.client.DropletActions.Reboot(ctx, d.ID)
		} else {
			act, resp, err = ac.client.DropletActions.PowerCycle(ctx, d.ID)
		}
		return resp, err
	})
	if err != nil {
		return err
	}
	x.progress(StepRebootSent)
	if act, err = x.p.waitAction(ctx, ac, act.ID); err != nil {
		return err
	}
	if act.Status != godo.ActionCompleted {
		return terminalf(ac.name, typ, "%s action %d errored", typ, act.ID)
	}
	x.progress(StepRebooted)
	return nil
}
