package reconciler

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/schema"
)

// TestPassRecordsTenantFacts: the pass records what the fleet console
// filters and searches by — each declared tenant's tier and domains — on
// its first (full) pass, and a later commit's (scoped) pass updates a
// changed tenant and clears a tenant whose file was removed (its droplet
// stays, as an orphan; it just has no tier or domain to be found by).
func TestPassRecordsTenantFacts(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	a := tenant("ws-a", "running", "nyc3")
	a.Spec.Domains = []string{"track.a.example.com", "links.a.example.com"}
	b := tenant("ws-b", "running", "nyc3")
	b.Metadata.Tier = schema.TierStarter
	h.state.WriteTenant(a)
	h.state.WriteTenant(b)
	h.state.Commit("onboard ws-a, ws-b")
	h.converge(ctx)
	facts := func() (map[string]string, map[string][]string) {
		t.Helper()
		tiers := map[string]string{}
		domains := map[string][]string{}
		for _, ws := range []string{"ws-a", "ws-b"} {
			var tier string
			if err := h.store.Pool().QueryRow(ctx, `SELECT coalesce(tier, '-') FROM fleet_status WHERE workspace = $1`, ws).Scan(&tier); err != nil {
				t.Fatal(err)
			}
			tiers[ws] = tier
			ds, err := h.store.TenantDomains(ctx, ws)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) > 0 {
				domains[ws] = ds
			}
		}
		return tiers, domains
	}
	tiers, domains := facts()
	if d := cmp.Diff(map[string]string{"ws-a": "pro", "ws-b": "starter"}, tiers); d != "" {
		t.Errorf("tiers after the first pass (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string][]string{"ws-a": {"links.a.example.com", "track.a.example.com"}}, domains); d != "" {
		t.Errorf("domains after the first pass (-want +got):\n%s", d)
	}

	b.Metadata.Tier, b.Spec.Domains = schema.TierEnterprise, []string{"go.b.example.com"}
	h.state.WriteTenant(b)
	h.state.Git("rm", "-q", "tenants/ws-a.yaml")
	h.state.Commit("ws-b to enterprise; remove ws-a's file")
	h.converge(ctx)
	tiers, domains = facts()
	if d := cmp.Diff(map[string]string{"ws-a": "-", "ws-b": "enterprise"}, tiers); d != "" {
		t.Errorf("tiers after the second commit (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string][]string{"ws-b": {"go.b.example.com"}}, domains); d != "" {
		t.Errorf("domains after the second commit (-want +got):\n%s", d)
	}
}
