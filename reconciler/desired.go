package reconciler

import (
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// Desired turns a snapshot of the state repository into the planner's
// input: every tenant at the version to act on (an invalid file's last
// valid version), with the blob it came from as its content identity.
// Tenants that were never valid have nothing to act on and are left out.
func Desired(snap tenants.Snapshot) plan.Desired {
	d := plan.Desired{Commit: snap.Commit, Fleet: snap.Fleet, Tenants: map[string]*schema.Tenant{}, Hashes: map[string]string{}}
	for id, ts := range snap.Tenants {
		if ts.Tenant == nil {
			continue
		}
		d.Tenants[id] = ts.Tenant
		d.Hashes[id] = ts.ValidBlob
	}
	return d
}
