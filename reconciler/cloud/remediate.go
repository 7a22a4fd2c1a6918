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

// snapshotNow takes an operator's snapshot of the action's running droplet
// (a.SnapshotName), live: DigitalOcean snapshots a running droplet as it
// is, crash-consistent. Like hibernate it is a loop over what DigitalOcean
// shows — the snapshot there → done; the droplet busy (perhaps with the
// snapshot an earlier call started) → wait; else post the snapshot — so a
// call resumed after a crash takes no second one. The droplet is never
// stopped or touched otherwise.
func (x *exec) snapshotNow(ctx context.Context, ac *account) error {
	name := x.a.SnapshotName
	op := fmt.Sprintf("snapshot droplet %s as %s", x.a.Droplet, name)
	if plan.ParseGeneration(x.a.Workspace, name) == 0 || plan.TrimSnapshotStamp(name) == name {
		return terminalf(ac.name, op, "%q is not an operator's snapshot name of workspace %s", name, x.a.Workspace)
	}
	x.res.Account = ac.name
	pl := x.p.newPoller()
	for {
		snap, err := x.p.findSnapshot(ctx, ac, name)
		if err != nil {
			return err
		}
		if snap != nil {
			x.res.SnapshotID, x.res.SnapshotSizeGB = snap.ID, snap.SizeGigaBytes
			x.progress(StepSnapshotted)
			return nil
		}
		d, err := x.droplet(ctx, ac)
		if err != nil {
			return err
		}
		if d == nil {
			return terminalf(ac.name, op, "droplet %d (%s) is gone", x.a.DropletID, x.a.Droplet)
		}
		x.res.DropletID = d.ID
		act, err := x.p.dropletAction(ctx, ac, d.ID, "snapshot", name)
		if err == nil {
			x.progress(StepSnapshotting)
			if act, err = x.p.waitAction(ctx, ac, act.ID); err == nil {
				if act.Status != godo.ActionCompleted {
					return &Error{Kind: KindTransient, Account: ac.name, Op: op, Err: fmt.Errorf("snapshot action %d errored", act.ID)}
				}
				continue // the loop finds the snapshot
			}
		}
		// Busy with another action (a pending event, perhaps the
		// snapshot an earlier call started): wait and look again.
		if KindOf(err) != KindPending {
			return err
		}
		if err := pl.wait(ctx); err != nil {
			return &Error{Kind: KindPending, Account: ac.name, Op: op, Err: err}
		}
	}
}
