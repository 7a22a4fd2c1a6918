package cloud

import (
	"context"
	"fmt"

	"github.com/digitalocean/godo"
)

// HoldReservedIP makes the reserved IPv4 ip (in account) point at droplet
// dropletID of region, and returns it: with ip "" (the tenant has none
// yet), or ip gone from the account, a new one is reserved for the
// droplet. It is idempotent: an ip already on the droplet costs one read,
// and a create interrupted by a crash leaves at most an unrecorded reserved
// IP, which DigitalOcean lists (and bills) until someone releases it, so
// the create names the droplet and is logged.
func (p *Pool) HoldReservedIP(ctx context.Context, account, region, ip string, dropletID int) (string, error) {
	if err := leaseValid(ctx); err != nil {
		return "", fmt.Errorf("reserve ip for droplet %d: %w", dropletID, err)
	}
	ac, err := p.account(account, "reserve ip")
	if err != nil {
		return "", err
	}
	if ip != "" {
		var r *godo.ReservedIP
		err := p.call(ctx, ac, "get reserved ip "+ip, func(ctx context.Context) (*godo.Response, error) {
			var resp *godo.Response
			var err error
			r, resp, err = ac.client.ReservedIPs.Get(ctx, ip)
			return resp, err
		})
		switch {
		case IsNotFound(err):
			p.log.Warn("reserved ip gone; reserving a new one", "account", account, "ip", ip)
			ip = ""
		case err != nil:
			return "", err
		case r.Droplet != nil && r.Droplet.ID == dropletID:
			return ip, nil
		default:
			var act *godo.Action
			if err := p.call(ctx, ac, fmt.Sprintf("assign reserved ip %s to droplet %d", ip, dropletID), func(ctx context.Context) (*godo.Response, error) {
				var resp *godo.Response
				var err error
				act, resp, err = ac.client.ReservedIPActions.Assign(ctx, ip, dropletID)
				return resp, err
			}); err != nil {
				return "", err
			}
			if act, err = p.waitAction(ctx, ac, act.ID); err != nil {
				return "", err
			}
			if act.Status != godo.ActionCompleted {
				return "", &Error{Kind: KindTransient, Account: account, Op: "assign reserved ip " + ip, Err: fmt.Errorf("action %d %s", act.ID, act.Status)}
			}
			p.log.Info("reserved ip moved", "account", account, "ip", ip, "droplet", dropletID)
			return ip, nil
		}
	}
	var r *godo.ReservedIP
	if err := p.call(ctx, ac, fmt.Sprintf("reserve ip for droplet %d", dropletID), func(ctx context.Context) (*godo.Response, error) {
		var resp *godo.Response
		var err error
		r, resp, err = ac.client.ReservedIPs.Create(ctx, &godo.ReservedIPCreateRequest{DropletID: dropletID})
		return resp, err
	}); err != nil {
		return "", err
	}
	p.log.Info("reserved ip created", "account", account, "ip", r.IP, "droplet", dropletID, "region", region)
	return r.IP, nil
}

// ReleaseReservedIP gives ip back to DigitalOcean (state: absent); 404 is
// done.
func (p *Pool) ReleaseReservedIP(ctx context.Context, account, ip string) error {
	if err := leaseValid(ctx); err != nil {
		return fmt.Errorf("release reserved ip %s: %w", ip, err)
	}
	ac, err := p.account(account, "release reserved ip")
	if err != nil {
		return err
	}
	err = p.call(ctx, ac, "release reserved ip "+ip, func(ctx context.Context) (*godo.Response, error) {
		return ac.client.ReservedIPs.Delete(ctx, ip)
	})
	if IsNotFound(err) {
		return nil
	}
	return err
}
