package fleetapi

import (
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// View is GET /v1/fleet: the tenants of rows (fleet_status) and of the
// loop's snapshot, each with what git declares and its monthly cost.
func View(rows []store.FleetRow, r Fleet) api.Fleet {
	snap, _ := r.Snapshot()
	p := r.LastPlan()
	doc := api.Fleet{Commit: snap.Commit, Leader: r.Leading(), At: time.Now().UTC(), Orphans: p.Orphans, Refused: p.Refused, Deferred: p.Deferred}
	if err := r.SyncError(); err != nil {
		doc.SyncError = err.Error()
	}
	seen := map[string]bool{}
	for _, row := range rows {
		v := api.FleetTenant{TenantStatus: api.TenantStatus(row), Commit: snap.Commit}
		if ts, ok := snap.Tenants[row.Workspace]; ok {
			v.Declared, v.Valid = true, ts.Status == tenants.StatusValid
			for _, e := range ts.Errors {
				v.FileErrors = append(v.FileErrors, e.Error())
			}
		}
		v.MonthlyUSD = tenantCost(snap.Fleet, row, &doc.Cost)
		v.StableName = snap.Fleet.StableName(row.Workspace)
		// A row whose file is gone: desired "undeclared", ORPHANED while
		// it holds a droplet or snapshot (lifecycle.Render). Spares are
		// the fleet's own, never declared.
		lc, desired := lifecycle.Render(true, lifecycle.State(row.Lifecycle), v.Declared || schema.IsSpareWorkspace(row.Workspace), row.Desired,
			row.DropletID != 0 || row.SnapshotID != "")
		v.Lifecycle, v.Desired = string(lc), desired
		seen[row.Workspace] = true
		doc.Tenants = append(doc.Tenants, v)
	}
	for _, id := range snap.IDs() {
		if seen[id] {
			continue
		}
		ts := snap.Tenants[id]
		declared := ""
		if ts.Tenant != nil {
			declared = string(ts.Tenant.Spec.State)
		}
		// No row yet: PENDING when it should run, NOT_CREATED (nothing to do) when hibernated or absent.
		lc, desired := lifecycle.Render(false, "", true, declared, false)
		v := api.FleetTenant{TenantStatus: api.TenantStatus{Workspace: id, Lifecycle: string(lc), Desired: desired}, Declared: true, Valid: ts.Status == tenants.StatusValid, Commit: snap.Commit}
		for _, e := range ts.Errors {
			v.FileErrors = append(v.FileErrors, e.Error())
		}
		doc.Tenants = append(doc.Tenants, v)
	}
	return doc
}

// tenantCost is a fleet_status row's monthly cost (its droplet's size, or
// the snapshot it wakes from when it has no droplet), added to sum.
func tenantCost(f *schema.Fleet, row store.FleetRow, sum *api.FleetCost) float64 {
	if f == nil {
		return 0
	}
	var c float64
	switch {
	case row.DropletID != 0 && row.Size != "":
		c = f.MonthlyUSD(row.Size)
		sum.Droplets += c
	case row.SnapshotID != "":
		c = f.SnapshotMonthlyUSD(row.SnapshotGB)
		sum.Snapshots += c
	}
	sum.Total += c
	return c
}

// withRecoveryPoints sets each tenant's recovery_point from pts.
func withRecoveryPoints(doc *api.Fleet, pts map[string]backup.Point) {
	for i := range doc.Tenants {
		if p, ok := pts[doc.Tenants[i].Workspace]; ok {
			doc.Tenants[i].RecoveryPoint = p.API()
		}
	}
}
