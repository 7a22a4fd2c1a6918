package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/plan"
)

// operatorSnapshot is the operator's "snapshot now" (genesis action
// snapshot): POST /v1/tenants/{id}/actions; the leader's watchdog takes a
// live snapshot of the running droplet, which the demo finds in the
// simulator, while the tenant stays ACTIVE_HEALTHY; then it shows what the
// tenant's newest heartbeat said of each probe (health_detail).
func (d *demo) operatorSnapshot(ctx context.Context, id string) (string, error) {
	if _, err := d.client.Act(ctx, id, "snapshot", "demo: a copy before a risky change"); err != nil {
		return "", err
	}
	f, err := d.fleetNow(ctx)
	if err != nil {
		return "", err
	}
	t := tenantIn(f, id)
	prefix := plan.SnapshotName(id, generation(t)) + "-"
	c := d.local.Client(t.Account)
	start := time.Now()
	var name string
	for name == "" {
		ss, _, err := c.Snapshots.ListDroplet(ctx, &godo.ListOptions{PerPage: 200})
		if err == nil {
			for _, s := range ss {
				if strings.HasPrefix(s.Name, prefix) {
					name = s.Name
				}
			}
		}
		if name != "" {
			break
		}
		if time.Since(start) > d.timeout {
			return "", fmt.Errorf("no snapshot %s* after %s (see the logs in %s)", prefix, d.timeout, d.work)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
	took := time.Since(start)
	if f, err = d.fleetNow(ctx); err != nil {
		return "", err
	}
	t = tenantIn(f, id)
	if t.Lifecycle != string(lifecycle.ActiveHealthy) {
		return "", fmt.Errorf("%s is %s after its snapshot, want %s (a snapshot leaves the tenant alone)", id, t.Lifecycle, lifecycle.ActiveHealthy)
	}
	out := fmt.Sprintf("POST /v1/tenants/%s/actions {\"action\":\"snapshot\"} → live snapshot %s in %.1fs; %s stayed %s", id, name, took.Seconds(), id, t.Lifecycle)
	if hd := t.HealthDetail; hd != nil {
		var parts []string
		for c, h := range hd.Components {
			s := c + " ok"
			if !h.OK {
				s = c + " FAILING"
			}
			if h.Detail != "" {
				s += " (" + h.Detail + ")"
			}
			parts = append(parts, s)
		}
		sort.Strings(parts)
		out += fmt.Sprintf("\nits newest heartbeat (%s): %s; memory %d/%d MiB, disk %d/%d MiB",
			hd.ReportedAt.Format(time.TimeOnly), strings.Join(parts, ", "), hd.MemoryUsed>>20, hd.MemoryTotal>>20, hd.DiskUsed>>20, hd.DiskTotal>>20)
	}
	return out, nil
}
