package plan

import (
	"fmt"
	"testing"
	"time"

	"genesis.dev/fleet/schema"
)

// converged builds a fleet of n running tenants, each with its droplet and
// status recorded: the state a large fleet spends its life in.
func converged(b *testing.B, n int) (Desired, Observed) {
	f := testFleet(b)
	for i := range f.Spec.Accounts {
		f.Spec.Accounts[i].MaxDroplets = n
	}
	proto := tenant(b, f, caseTenant{ID: "ws-proto", State: "running", Region: "nyc3", Hash: "h"})
	d := Desired{Commit: "c", Fleet: f, Tenants: make(map[string]*schema.Tenant, n), Hashes: make(map[string]string, n)}
	o := Observed{Status: make(map[string]Status, n), Droplets: make([]Droplet, 0, n)}
	for i := range n {
		id := fmt.Sprintf("ws-%06d", i)
		t := *proto
		t.Metadata.ID = id
		d.Tenants[id] = &t
		d.Hashes[id] = "h"
		o.Droplets = append(o.Droplets, Droplet{ID: i + 1, Name: DropletName(id, 1), Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Workspace: id})
		o.Status[id] = Status{DropletID: i + 1, Generation: 1, TenantHash: "h", Account: "acct-a"}
	}
	return d, o
}

// BenchmarkComputeConverged plans a converged fleet: the cost of a pass in
// steady state, and of the plan after a one-tenant commit (Compute plans the
// whole fleet from the in-memory index; only the changed file was parsed).
func BenchmarkComputeConverged(b *testing.B) {
	for _, n := range []int{15_000, 100_000} {
		b.Run(fmt.Sprintf("tenants=%d", n), func(b *testing.B) {
			d, o := converged(b, n)
			// One tenant changed in git: its manifest is re-rendered.
			d.Hashes["ws-000042"] = "h2"
			now := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
			b.ResetTimer()
			for b.Loop() {
				p := Compute(d, o, now, Options{})
				if len(p.Actions) != 1 {
					b.Fatalf("plan = %v", p.Actions)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/plan")
		})
	}
}

// BenchmarkComputeIncremental plans only the tenant a commit changed, in a
// fleet of 100,000: what the reconciler does right after a one-tenant commit.
func BenchmarkComputeIncremental(b *testing.B) {
	d, o := converged(b, 100_000)
	d.Hashes["ws-000042"] = "h2"
	now := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	b.ResetTimer()
	for b.Loop() {
		p := Compute(d, o, now, Options{Scope: []string{"ws-000042"}})
		if len(p.Actions) != 1 {
			b.Fatalf("plan = %v", p.Actions)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/plan")
}
