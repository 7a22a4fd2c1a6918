package availability

import (
	"context"
	"math"
	"slices"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// Counted are the lifecycle states in which a tenant declared running is
// probed (package doc: running by intention, not in a planned transition).
func Counted() []lifecycle.State {
	return []lifecycle.State{lifecycle.ActiveHealthy, lifecycle.ActiveDegraded, lifecycle.ActiveCritical,
		lifecycle.Rebooting, lifecycle.Failed}
}

// Select lists the tenants of snap to probe given their lifecycle states
// (fleet_status.state by workspace), by workspace; ErrOff when the fleet
// has no spec.dns (no stable names). Pure.
func Select(snap tenants.Snapshot, states map[string]string) ([]Target, error) {
	f := snap.Fleet
	if f == nil || f.Spec.DNS == nil || f.Spec.DNS.Zone == "" {
		return nil, ErrOff
	}
	counted := Counted()
	var out []Target
	for id, ts := range snap.Tenants {
		t := ts.Tenant
		if t == nil || t.Spec.State != schema.StateRunning || !slices.Contains(counted, lifecycle.State(states[id])) {
			continue
		}
		host := f.StableName(id)
		if host == "" {
			continue
		}
		out = append(out, Target{Workspace: id, Tier: string(t.Metadata.Tier), Host: host})
	}
	slices.SortFunc(out, func(a, b Target) int {
		if a.Workspace < b.Workspace {
			return -1
		}
		if a.Workspace > b.Workspace {
			return 1
		}
		return 0
	})
	return out, nil
}

// MaxWorst bounds GET /v1/availability's ?worst=N.
const MaxWorst = 100

// Report is GET /v1/availability at now: every tier's windows and the
// worst tenants by 30-day ratio.
func Report(ctx context.Context, st *store.Store, now time.Time, worst int) (api.Availability, error) {
	now = now.UTC().Truncate(time.Minute)
	out := api.Availability{Objective: Objective, At: now, Tiers: []api.TierAvailability{}, Worst: []api.TenantAvailability{}}
	tiers, err := st.AvailabilityByTier(ctx, now)
	if err != nil {
		return out, err
	}
	for _, r := range tiers {
		out.Tiers = append(out.Tiers, api.TierAvailability{Tier: r.Tier, Tenants: r.Tenants, Windows: windows(r.Windows)})
	}
	rows, err := st.AvailabilityWorst(ctx, now, store.AvailabilityWindows, worst)
	if err != nil {
		return out, err
	}
	for _, r := range rows {
		out.Worst = append(out.Worst, api.TenantAvailability{Workspace: r.Workspace, Tier: r.Tier, Windows: windows(r.Windows)})
	}
	return out, nil
}

// TenantReport is workspace's windows at now (nil when it had no probe
// in 30 days).
func TenantReport(ctx context.Context, st *store.Store, workspace string, now time.Time) (*api.TenantAvailability, error) {
	r, ok, err := st.TenantAvailability(ctx, workspace, now.UTC().Truncate(time.Minute))
	if err != nil || !ok {
		return nil, err
	}
	return &api.TenantAvailability{Workspace: r.Workspace, Tier: r.Tier, Windows: windows(r.Windows)}, nil
}

// windows converts store.AvailabilityWindows' counts.
func windows(c []store.Counts) api.AvailabilityWindows {
	w := func(c store.Counts) api.AvailabilityWindow {
		out := api.AvailabilityWindow{Probes: c.Probes, Up: c.Up}
		if r, ok := c.Ratio(); ok {
			budget := 1 - (1-r)/(1-Objective)
			budget = math.Round(budget*1e9) / 1e9
			out.Ratio, out.BudgetRemaining = &r, &budget
		}
		return out
	}
	return api.AvailabilityWindows{Hour: w(c[0]), Day: w(c[1]), Week: w(c[2]), Month: w(c[3])}
}
