package tenants

import (
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// Desired turns a snapshot of the state repository into the planner's
// input: every tenant at the version to act on (an invalid file's last
// valid version), with the blob it came from as its content identity.
// Tenants that were never valid have nothing to act on and are left out.
// It lives here, beside Snapshot, so that genesis plan computes a plan
// without linking the reconciler's database and cloud packages.
func (s Snapshot) Desired() plan.Desired {
	d := plan.Desired{Commit: s.Commit, Fleet: s.Fleet, Tenants: map[string]*schema.Tenant{}, Hashes: map[string]string{}}
	for id, ts := range s.Tenants {
		if ts.Tenant == nil {
			continue
		}
		d.Tenants[id] = ts.Tenant
		d.Hashes[id] = ts.ValidBlob
	}
	return d
}
