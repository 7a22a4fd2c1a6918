package cloud

import (
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// Steps of a spare's assignment.
const (
	StepTagged  = "tagged"  // assign_spare: the droplet carries the tenant's tags, not the spare's
	StepRenamed = "renamed" // the droplet has the tenant's deterministic name
)

// assignSpare moves a spare's droplet to the tenant on DigitalOcean: the
// tenant's tags are added first and the spare's removed after, so at every
// moment the droplet is found under one workspace (a tenant's tag wins, see
// plan.WorkspaceFromTags). Each step looks at the droplet first, so a
// second call after a crash finishes what the first began. A droplet that
// carries neither the spare's nor the tenant's workspace tag is refused:
// it is somebody else's.
func (x *exec) assignSpare(ctx context.Context, ac *account) error {
	a := x.a
	op := fmt.Sprintf("assign spare droplet %d to %s", a.DropletID, a.Workspace)
	if a.DropletID == 0 || !schema.IsSpareWorkspace(a.Spare) {
		return terminalf(ac.name, op, "the action names no spare droplet")
	}
	region, _, ok := schema.ParseSpareWorkspace(a.Spare)
	if !ok {
		return terminalf(ac.name, op, "spare workspace %q is not spare-<region>-<slot>", a.Spare)
	}
	d, err := x.p.getDroplet(ctx, ac, a.DropletID)
	if err != nil {
		return err
	}
	if d == nil {
		return terminalf(ac.name, op, "the spare's droplet is gone")
	}
	if !slices.Contains(d.Tags, plan.WorkspaceTag(a.Spare)) && !slices.Contains(d.Tags, plan.WorkspaceTag(a.Workspace)) {
		return terminalf(ac.name, op, "droplet %d (%s) is tagged for neither %s nor %s", d.ID, d.Name, a.Spare, a.Workspace)
	}
	x.res.Account, x.res.DropletID = ac.name, d.ID
	x.res.IP, _ = d.PublicIPv4()
	res := []godo.Resource{{ID: strconv.Itoa(d.ID), Type: godo.DropletResourceType}}
	want := plan.Tags(a.Workspace, ac.name, a.Tier)
	for _, tag := range want {
		if slices.Contains(d.Tags, tag) {
			continue
		}
		if err := x.p.call(ctx, ac, "create tag "+tag, func(ctx context.Context) (*godo.Response, error) {
			_, resp, err := ac.client.Tags.Create(ctx, &godo.TagCreateRequest{Name: tag})
			return resp, err
		}); err != nil {
			return err
		}
		if err := x.p.call(ctx, ac, "tag droplet with "+tag, func(ctx context.Context) (*godo.Response, error) {
			return ac.client.Tags.TagResources(ctx, tag, &godo.TagResourcesRequest{Resources: res})
		}); err != nil {
			return err
		}
	}
	for _, tag := range plan.SpareTags(a.Spare, ac.name, region) {
		if slices.Contains(want, tag) || !slices.Contains(d.Tags, tag) {
			continue
		}
		err := x.p.call(ctx, ac, "untag droplet "+tag, func(ctx context.Context) (*godo.Response, error) {
			return ac.client.Tags.UntagResources(ctx, tag, &godo.UntagResourcesRequest{Resources: res})
		})
		if err != nil && !IsNotFound(err) {
			return err
		}
	}
	x.progress(StepTagged)
	return nil
}

// Rename gives droplet id of account the name name (the deterministic name
// of its new workspace) and waits for the action; nothing when it has it
// already. A droplet busy with another action is waited for.
func (p *Pool) Rename(ctx context.Context, account string, id int, name string) error {
	if err := leaseValid(ctx); err != nil {
		return fmt.Errorf("rename droplet %d: %w", id, err)
	}
	ac, err := p.account(account, "rename")
	if err != nil {
		return err
	}
	op := fmt.Sprintf("rename droplet %d to %s", id, name)
	pl := p.newPoller()
	for {
		d, err := p.getDroplet(ctx, ac, id)
		if err != nil {
			return err
		}
		if d == nil {
			return terminalf(account, op, "the droplet is gone")
		}
		if d.Name == name {
			return nil
		}
		var act *godo.Action
		err = p.call(ctx, ac, op, func(ctx context.Context) (*godo.Response, error) {
			var resp *godo.Response
			var err error
			act, resp, err = ac.client.DropletActions.Rename(ctx, id, name)
			return resp, err
		})
		if err == nil {
			if act, err = p.waitAction(ctx, ac, act.ID); err == nil && act.Status != godo.ActionCompleted {
				err = &Error{Kind: KindTransient, Account: account, Op: op, Err: fmt.Errorf("rename action %d errored", act.ID)}
			}
			if err == nil {
				continue // the loop sees the new name
			}
		}
		if KindOf(err) != KindPending && KindOf(err) != KindTransient {
			return err
		}
		if err := pl.wait(ctx); err != nil {
			return &Error{Kind: KindPending, Account: account, Op: op, Err: err}
		}
	}
}
