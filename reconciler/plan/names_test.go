package plan

import (
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// TestPlanName: the stable name follows the recorded droplet, a
// hibernated tenant's points at the activator, only state: absent removes
// it, and nothing is planned for it while the tenant has another action
// or no opinion (pending, no activator, no spec.dns).
func TestPlanName(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	withDNS := func(activator string) *schema.Fleet {
		f := testFleet(t)
		f.Spec.DNS = &schema.DNS{Zone: "t.genesis.test", Account: f.Spec.Accounts[0].Name, TTL: schema.Duration(time.Minute), Activator: activator}
		return f
	}
	running := caseTenant{ID: "ws-a", State: "running", Region: "nyc3"}
	drop := Droplet{ID: 7, Name: "genesis-ws-a-1", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Status: "active", Workspace: "ws-a"}
	up := Status{Lifecycle: string(lifecycle.ActiveHealthy), Account: "acct-a", DropletID: 7, Generation: 1, IP: "127.1.0.9", TenantHash: "h"}
	asleep := Status{Lifecycle: string(lifecycle.Hibernated), Account: "acct-a", Generation: 1, SnapshotID: "55", HibernatedByPolicy: true, TenantHash: "h"}
	for _, c := range []struct {
		name     string
		fleet    *schema.Fleet
		tenant   caseTenant
		droplets []Droplet
		status   Status
		inFlight bool
		want     string // "-" no action
	}{
		{"no spec.dns", testFleet(t), running, []Droplet{drop}, up, false, "-"},
		{"no record yet", withDNS("203.0.113.10"), running, []Droplet{drop}, up, false, "127.1.0.9"},
		{"record says the old droplet", withDNS(""), running, []Droplet{drop}, withTarget(up, "127.1.0.4"), false, "127.1.0.9"},
		{"record is right", withDNS(""), running, []Droplet{drop}, withTarget(up, "127.1.0.9"), false, "-"},
		{"in flight", withDNS(""), running, []Droplet{drop}, up, true, "-"},
		{"ip unknown yet", withDNS(""), running, []Droplet{drop}, withIP(up, ""), false, "-"},
		{"hibernated: activator", withDNS("203.0.113.10"), running, nil, withTarget(asleep, "127.1.0.9"), false, "203.0.113.10"},
		{"hibernated, no activator: left", withDNS(""), running, nil, withTarget(asleep, "127.1.0.9"), false, "-"},
		{"absent and gone: removed", withDNS("203.0.113.10"), caseTenant{ID: "ws-a", State: "absent", Region: "nyc3"}, nil,
			Status{Lifecycle: "DESTROYED", NameTarget: "127.1.0.9", TenantHash: "h"}, false, ""},
		{"absent, droplet still there: the destroy first", withDNS(""), caseTenant{ID: "ws-a", State: "absent", Region: "nyc3"}, []Droplet{drop},
			withTarget(up, "127.1.0.9"), false, "destroy"},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := Desired{Fleet: c.fleet, Tenants: map[string]*schema.Tenant{"ws-a": tenant(t, c.fleet, c.tenant)}, Hashes: map[string]string{"ws-a": "h"}}
			o := Observed{Droplets: c.droplets, Status: map[string]Status{"ws-a": c.status}, InFlight: map[string]string{}}
			if c.inFlight {
				o.InFlight["ws-a"] = "wake"
			}
			p := Compute(d, o, now, Options{})
			var names []Action
			for _, a := range p.Actions {
				if a.Kind == PointName {
					names = append(names, a)
				}
			}
			switch {
			case c.want == "destroy":
				if len(names) != 0 || len(p.Actions) != 1 || p.Actions[0].Kind != Destroy {
					t.Errorf("want only the destroy, got %v", p.Actions)
				}
			case c.want == "-":
				if len(names) != 0 {
					t.Errorf("want no point_name, got %+v", names)
				}
			default:
				if len(names) != 1 || names[0].Target != c.want || names[0].Account != c.fleet.Spec.DNS.Account || names[0].Reason == "" {
					t.Fatalf("want one point_name to %q, got %+v (plan %+v)", c.want, names, p.Actions)
				}
				// Recording what it wrote ends the repair.
				o.Status["ws-a"] = withTarget(c.status, c.want)
				if p := Compute(d, o, now, Options{}); !p.Empty() {
					t.Errorf("after the write, plan %v", p.Actions)
				}
			}
		})
	}
}

func withTarget(s Status, target string) Status { s.NameTarget = target; return s }
func withIP(s Status, ip string) Status         { s.IP = ip; return s }

// TestReservedIPPlan: a reserved-IP tier's hibernation costs the reserved
// IP's price (billed while no droplet holds it), its wake saves it, its
// name says the reserved IP, and state: absent releases it once the
// droplets are gone — with or without spec.dns.
func TestReservedIPPlan(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	f := testFleet(t)
	f.Spec.Tiers = map[schema.Tier]schema.TierPolicy{schema.TierEnterprise: {ReservedIP: true}}
	price := f.Spec.Pricing.ReservedIPMonthUSD
	if price <= 0 {
		t.Fatalf("reserved IP price %v", price)
	}
	drop := Droplet{ID: 7, Name: "genesis-ws-a-1", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Status: "active", Workspace: "ws-a"}
	up := Status{Lifecycle: string(lifecycle.ActiveHealthy), Account: "acct-a", DropletID: 7, Generation: 1, IP: "127.1.0.9", ReservedIP: "127.2.0.1", TenantHash: "h"}
	plan := func(state string, ds []Droplet, st Status, snaps []Snapshot) Plan {
		tn := tenant(t, f, caseTenant{ID: "ws-a", State: state, Region: "nyc3", Tier: "enterprise"})
		d := Desired{Fleet: f, Tenants: map[string]*schema.Tenant{"ws-a": tn}, Hashes: map[string]string{"ws-a": "h"}}
		return Compute(d, Observed{Droplets: ds, Snapshots: snaps, Status: map[string]Status{"ws-a": st}}, now, Options{AllowMassChange: true})
	}
	p := plan("hibernated", []Droplet{drop}, up, nil)
	if len(p.Actions) != 1 || p.Actions[0].Kind != Hibernate || p.Actions[0].CostDelta != -f.MonthlyUSD("s-1vcpu-1gb")+price {
		t.Errorf("hibernate: %+v", p.Actions)
	}
	asleep := Status{Lifecycle: string(lifecycle.Hibernated), Account: "acct-a", Generation: 1, SnapshotID: "55", ReservedIP: "127.2.0.1", TenantHash: "h"}
	snap := Snapshot{ID: "55", Name: "genesis-ws-a-1-snap", Account: "acct-a", Region: "nyc3", Workspace: "ws-a", Created: now.Add(-time.Hour)}
	p = plan("running", nil, asleep, []Snapshot{snap})
	if len(p.Actions) != 1 || p.Actions[0].Kind != Wake || p.Actions[0].CostDelta != f.MonthlyUSD("s-1vcpu-1gb")-price {
		t.Errorf("wake: %+v", p.Actions)
	}
	// With spec.dns, the name says the reserved IP.
	f.Spec.DNS = &schema.DNS{Zone: "t.genesis.test", Account: "acct-a", TTL: schema.Duration(time.Minute)}
	p = plan("running", []Droplet{drop}, up, nil)
	if len(p.Actions) != 1 || p.Actions[0].Kind != PointName || p.Actions[0].Target != "127.2.0.1" {
		t.Errorf("name of a reserved-IP tenant: %+v", p.Actions)
	}
	// Absent, droplets gone: one point_name to "" releases it.
	for _, dns := range []*schema.DNS{f.Spec.DNS, nil} {
		f.Spec.DNS = dns
		gone := Status{Lifecycle: "DESTROYED", Account: "acct-a", ReservedIP: "127.2.0.1", TenantHash: "h"}
		p = plan("absent", nil, gone, nil)
		if len(p.Actions) != 1 || p.Actions[0].Kind != PointName || p.Actions[0].Target != "" || p.Actions[0].CostDelta != -price {
			t.Errorf("absent (dns %v): %+v", dns != nil, p.Actions)
		}
		gone.ReservedIP = ""
		if p = plan("absent", nil, gone, nil); !p.Empty() {
			t.Errorf("absent, released (dns %v): %+v", dns != nil, p.Actions)
		}
	}
}
