package plan

import (
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// TestAccountStatus: a draining account takes no new droplet (the create
// goes to another account serving the region, or waits for capacity) but
// keeps its droplets and still takes a wake from its snapshot; a disabled
// one takes neither.
func TestAccountStatus(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		status     schema.AccountStatus
		createIn   string // "" : no capacity
		wakes      bool
		keepsDrops bool
	}{
		{schema.AccountActive, "acct-a", true, true},
		{schema.AccountDraining, "acct-b", true, true},
		{schema.AccountDisabled, "acct-b", false, true},
	} {
		t.Run(string(c.status), func(t *testing.T) {
			f := testFleet(t)
			f.Spec.Accounts = []schema.Account{
				{Name: "acct-a", Regions: []string{"nyc3"}, MaxDroplets: 10, TokenEnv: "A", Status: c.status},
				{Name: "acct-b", Regions: []string{"nyc3"}, MaxDroplets: 10, TokenEnv: "B"},
			}
			// Load acct-b so an active acct-a is the least loaded.
			drops := []Droplet{
				{ID: 1, Name: "genesis-ws-old-1", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Status: "active", Workspace: "ws-old"},
				{ID: 2, Name: "genesis-ws-x-1", Account: "acct-b", Region: "nyc3", Size: "s-1vcpu-1gb", Status: "active", Workspace: "ws-x"},
				{ID: 3, Name: "genesis-ws-y-1", Account: "acct-b", Region: "nyc3", Size: "s-1vcpu-1gb", Status: "active", Workspace: "ws-y"},
			}
			d := Desired{Fleet: f, Tenants: map[string]*schema.Tenant{}, Hashes: map[string]string{}}
			for _, id := range []string{"ws-new", "ws-old", "ws-x", "ws-y", "ws-sleep"} {
				d.Tenants[id] = tenant(t, f, caseTenant{ID: id, State: "running", Region: "nyc3"})
				d.Hashes[id] = "h"
			}
			st := map[string]Status{
				"ws-old":   {Lifecycle: string(lifecycle.ActiveHealthy), Account: "acct-a", DropletID: 1, Generation: 1, TenantHash: "h"},
				"ws-x":     {Lifecycle: string(lifecycle.ActiveHealthy), Account: "acct-b", DropletID: 2, Generation: 1, TenantHash: "h"},
				"ws-y":     {Lifecycle: string(lifecycle.ActiveHealthy), Account: "acct-b", DropletID: 3, Generation: 1, TenantHash: "h"},
				"ws-sleep": {Lifecycle: string(lifecycle.Hibernated), Account: "acct-a", Generation: 1, SnapshotID: "9", WakeRequested: true, TenantHash: "h"},
			}
			snaps := []Snapshot{{ID: "9", Name: "genesis-ws-sleep-1-snap", Account: "acct-a", Region: "nyc3", Workspace: "ws-sleep", Created: now.Add(-time.Hour)}}
			p := Compute(d, Observed{Droplets: drops, Snapshots: snaps, Status: st}, now, Options{})
			var create, wake *Action
			for i, a := range p.Actions {
				switch {
				case a.Kind == Create && a.Workspace == "ws-new":
					create = &p.Actions[i]
				case a.Kind == Wake && a.Workspace == "ws-sleep":
					wake = &p.Actions[i]
				case a.Kind.Destructive():
					t.Errorf("a destructive action: %v", a)
				}
			}
			if create == nil || create.Account != c.createIn {
				t.Errorf("create: %+v, want in %s", create, c.createIn)
			}
			if create != nil && c.status != schema.AccountActive && len(create.Alternates) != 0 {
				t.Errorf("create alternates %v include the %s account", create.Alternates, c.status)
			}
			if (wake != nil) != c.wakes || (wake != nil && wake.Account != "acct-a") {
				t.Errorf("wake: %+v, want %v in acct-a", wake, c.wakes)
			}
		})
	}
}
