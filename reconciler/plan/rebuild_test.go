package plan

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/schema"
)

func TestRebuildAction(t *testing.T) {
	f := testFleet(t)
	d := Desired{Fleet: f, Tenants: map[string]*schema.Tenant{
		"ws-a": tenant(t, f, caseTenant{ID: "ws-a", State: "running", Region: "nyc3"}),
	}}
	dead := Droplet{ID: 7, Name: "genesis-ws-a-2", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Workspace: "ws-a"}
	other := func(id int, acct string) Droplet {
		return Droplet{ID: id, Name: "x", Account: acct, Region: "nyc3", Size: "s-1vcpu-1gb", Workspace: "ws-other"}
	}
	snap := func(id, name string, day int) Snapshot {
		return Snapshot{ID: id, Name: name, Account: "acct-b", Region: "nyc3", Workspace: "ws-a", Created: time.Date(2026, 1, day, 0, 0, 0, 0, time.UTC)}
	}
	status := map[string]Status{"ws-a": {Lifecycle: "REBOOTING", Account: "acct-a", DropletID: 7, Generation: 2}}
	base := Action{Kind: Rebuild, Workspace: "ws-a", Region: "nyc3", Size: "s-1vcpu-1gb", Image: "ubuntu-22-04-x64", Tier: "pro",
		Droplet: "genesis-ws-a-3", Gen: 3, APICalls: 3, CostDelta: f.MonthlyUSD("s-1vcpu-1gb")}
	with := func(edit func(*Action)) Action {
		a := base
		edit(&a)
		return a
	}
	cases := []struct {
		name    string
		o       Observed
		want    Action
		wantErr string
	}{
		{"fresh, least-loaded account", Observed{Droplets: []Droplet{dead}, Status: status}, with(func(a *Action) {
			a.Account, a.Reason = "acct-b", "watchdog: rebuild fresh (no snapshot)"
			a.Alternates = []string{"acct-a"}
		}), ""},
		{"from the latest snapshot, a generation past every name", Observed{Droplets: []Droplet{dead},
			Snapshots: []Snapshot{snap("901", "genesis-ws-a-1-snap", 1), snap("905", "genesis-ws-a-4-snap", 3), snap("903", "genesis-ws-a-3-snap", 2)}, Status: status},
			with(func(a *Action) {
				a.Account, a.Snapshot, a.Reason = "acct-b", "905", "watchdog: rebuild from snapshot genesis-ws-a-4-snap"
				a.Gen, a.Droplet = 5, "genesis-ws-a-5"
			}), ""},
		{"snapshot's account full", Observed{Droplets: []Droplet{dead, other(8, "acct-b"), other(9, "acct-b")},
			Snapshots: []Snapshot{snap("905", "genesis-ws-a-1-snap", 3)}, Status: status}, Action{}, "account acct-b, which holds snapshot genesis-ws-a-1-snap, has no room"},
		{"region full", Observed{Droplets: []Droplet{dead, other(8, "acct-b"), other(9, "acct-b"), other(10, "acct-a"), other(11, "acct-a"), other(12, "acct-a")}, Status: status},
			Action{}, "no account serving nyc3 has room"},
		{"incomplete view", Observed{Droplets: []Droplet{dead}, Status: status, Incomplete: map[string]string{"acct-b": "timeout"}}, Action{}, ErrNotObserved.Error()},
		{"nothing observed yet", Observed{}, Action{}, ErrNotObserved.Error()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := RebuildAction(d, c.o, "ws-a")
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				if c.wantErr == ErrNotObserved.Error() && !errors.Is(err, ErrNotObserved) {
					t.Errorf("err = %v, want ErrNotObserved", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c.want, got); diff != "" {
				t.Errorf("action (-want +got):\n%s", diff)
			}
		})
	}
	if _, err := RebuildAction(d, Observed{Status: status}, "ws-gone"); err == nil {
		t.Errorf("rebuild of an undeclared tenant: no error")
	}
}
