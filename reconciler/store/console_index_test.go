package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/schema"
)

// factsState is every status row's tier ("-" for none) and every
// tenant's recorded domains.
func factsState(t *testing.T, s *Store) (map[string]string, map[string][]string) {
	t.Helper()
	ctx := t.Context()
	tiers := map[string]string{}
	rows, err := s.pool.Query(ctx, `SELECT workspace, coalesce(tier, '-') FROM fleet_status`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ws, tier string
		if err := rows.Scan(&ws, &tier); err != nil {
			t.Fatal(err)
		}
		tiers[ws] = tier
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	domains := map[string][]string{}
	rows, err = s.pool.Query(ctx, `SELECT workspace, domain FROM tenant_domains ORDER BY workspace, domain`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var ws, d string
		if err := rows.Scan(&ws, &d); err != nil {
			t.Fatal(err)
		}
		domains[ws] = append(domains[ws], d)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return tiers, domains
}

// rowVersions is each fleet_status and tenant_domains row's physical
// version (a rewrite changes it).
func rowVersions(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), `SELECT 'f ' || workspace || ' ' || xmin::text || ctid::text FROM fleet_status
		UNION ALL SELECT 'd ' || workspace || ' ' || domain || ' ' || xmin::text || ctid::text FROM tenant_domains ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		var v string
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// TestSetTenantFacts: a full write records every declared tenant's tier
// and domains (lower case, without repeats) and nothing of a tenant git
// does not declare; written again unchanged it rewrites no row; a scoped
// write touches only its tenants (a zero TenantFacts clears one); a full
// write clears the tenants it no longer names. The overview's filter and
// search find by them.
func TestSetTenantFacts(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	if err := s.SetDesired(ctx, map[string]schema.State{"ws-a": "running", "ws-b": "running", "ws-c": "hibernated"}, "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO fleet_status (workspace, desired_state) VALUES ('ws-orphan', 'running')`); err != nil {
		t.Fatal(err)
	}
	a := &schema.Tenant{Metadata: schema.TenantMeta{ID: "ws-a", Tier: schema.TierPro},
		Spec: schema.TenantSpec{Domains: []string{"Track.A.example", "track.a.example", "b.example"}}}
	b := &schema.Tenant{Metadata: schema.TenantMeta{ID: "ws-b", Tier: schema.TierStarter}}
	c := &schema.Tenant{Metadata: schema.TenantMeta{ID: "ws-c", Tier: schema.TierEnterprise}, Spec: schema.TenantSpec{Domains: []string{"c.example"}}}
	full := map[string]TenantFacts{"ws-a": FactsOf(a), "ws-b": FactsOf(b), "ws-c": FactsOf(c)}
	if err := s.SetTenantFacts(ctx, full, true); err != nil {
		t.Fatal(err)
	}
	tiers, domains := factsState(t, s)
	if d := cmp.Diff(map[string]string{"ws-a": "pro", "ws-b": "starter", "ws-c": "enterprise", "ws-orphan": "-"}, tiers); d != "" {
		t.Errorf("tiers after a full write (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string][]string{"ws-a": {"b.example", "track.a.example"}, "ws-c": {"c.example"}}, domains); d != "" {
		t.Errorf("domains after a full write (-want +got):\n%s", d)
	}
	before := rowVersions(t, s)
	if err := s.SetTenantFacts(ctx, full, true); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(before, rowVersions(t, s)); d != "" {
		t.Errorf("an unchanged full write rewrote rows (-before +after):\n%s", d)
	}

	// What the overview finds by them.
	for _, tc := range []struct {
		f    ConsoleFilter
		want []string
	}{
		{ConsoleFilter{Wave: -1, Tier: "pro"}, []string{"ws-a"}},
		{ConsoleFilter{Wave: -1, Tier: "enterprise", State: "PENDING"}, []string{"ws-c"}},
		{ConsoleFilter{Wave: -1, Query: "TRACK.a"}, []string{"ws-a"}},
		{ConsoleFilter{Wave: -1, Query: ".example"}, []string{"ws-a", "ws-c"}},
		{ConsoleFilter{Wave: -1, Query: "orph"}, []string{"ws-orphan"}},
		{ConsoleFilter{Wave: -1, Query: "ws-"}, []string{"ws-a", "ws-b", "ws-c", "ws-orphan"}},
		{ConsoleFilter{Wave: -1, Query: "%"}, nil},
		{ConsoleFilter{Wave: -1, Query: "_"}, nil},
	} {
		p, err := s.ConsoleTenants(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range p.Tenants {
			got = append(got, r.Workspace)
		}
		n, err := s.ConsoleTotal(ctx, tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tc.want) || n != len(tc.want) {
			t.Errorf("%+v: %v (total %d), want %v", tc.f, got, n, tc.want)
		}
	}
	p, err := s.ConsoleTenants(ctx, ConsoleFilter{Wave: -1, Query: "ws-a"})
	if err != nil || len(p.Tenants) != 1 || p.Tenants[0].Tier != "pro" {
		t.Errorf("ws-a's overview row: %+v %v, want tier pro", p.Tenants, err)
	}

	// Scoped: ws-a changes, ws-c left git; ws-b is not touched.
	a.Metadata.Tier, a.Spec.Domains = schema.TierStarter, []string{"a.example"}
	if err := s.SetTenantFacts(ctx, map[string]TenantFacts{"ws-a": FactsOf(a), "ws-c": {}}, false); err != nil {
		t.Fatal(err)
	}
	tiers, domains = factsState(t, s)
	if d := cmp.Diff(map[string]string{"ws-a": "starter", "ws-b": "starter", "ws-c": "-", "ws-orphan": "-"}, tiers); d != "" {
		t.Errorf("tiers after a scoped write (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string][]string{"ws-a": {"a.example"}}, domains); d != "" {
		t.Errorf("domains after a scoped write (-want +got):\n%s", d)
	}

	// Full, without ws-b (its file removed) and ws-c back.
	if err := s.SetTenantFacts(ctx, map[string]TenantFacts{"ws-a": FactsOf(a), "ws-c": FactsOf(c)}, true); err != nil {
		t.Fatal(err)
	}
	tiers, domains = factsState(t, s)
	if d := cmp.Diff(map[string]string{"ws-a": "starter", "ws-b": "-", "ws-c": "enterprise", "ws-orphan": "-"}, tiers); d != "" {
		t.Errorf("tiers after a full write without ws-b (-want +got):\n%s", d)
	}
	if d := cmp.Diff(map[string][]string{"ws-a": {"a.example"}, "ws-c": {"c.example"}}, domains); d != "" {
		t.Errorf("domains after a full write without ws-b (-want +got):\n%s", d)
	}
	if got, err := s.TenantDomains(ctx, "ws-c"); err != nil || !slices.Equal(got, []string{"c.example"}) {
		t.Errorf("TenantDomains(ws-c) = %v, %v", got, err)
	}
}

// TestSetTenantFactsBatches: more tenants than one batch, all recorded.
func TestSetTenantFactsBatches(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	const n = factsBatch*2 + 7
	if _, err := s.pool.Exec(ctx, `INSERT INTO fleet_status (workspace, desired_state)
		SELECT 'ws-' || lpad(i::text, 6, '0'), 'running' FROM generate_series(0, $1 - 1) i`, n); err != nil {
		t.Fatal(err)
	}
	facts := map[string]TenantFacts{}
	for i := range n {
		facts[fmt.Sprintf("ws-%06d", i)] = TenantFacts{Tier: string(schema.Tiers()[i%3]), Domains: []string{fmt.Sprintf("t%d.example", i)}}
	}
	if err := s.SetTenantFacts(ctx, facts, true); err != nil {
		t.Fatal(err)
	}
	var tiers, domains int
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM fleet_status WHERE tier IS NOT NULL), (SELECT count(*) FROM tenant_domains)`).Scan(&tiers, &domains); err != nil {
		t.Fatal(err)
	}
	if tiers != n || domains != n {
		t.Errorf("%d tiers and %d domains recorded, want %d of each", tiers, domains, n)
	}
}

// TestAccountFigures: published figures are read back with their
// publisher and time; an older publication does not replace a newer one
// (a former leader's last write arriving late).
func TestAccountFigures(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	rate, head := 4321, 7
	if err := s.PublishAccountFigures(ctx, []AccountFigure{{Account: "acct-a", RateRemaining: &rate, Headroom: &head, Replica: "r1", ObservedAt: now},
		{Account: "acct-b", Replica: "r1", ObservedAt: now}}); err != nil {
		t.Fatal(err)
	}
	old := 1
	if err := s.PublishAccountFigures(ctx, []AccountFigure{{Account: "acct-a", RateRemaining: &old, Replica: "r0", ObservedAt: now.Add(-time.Minute)}}); err != nil {
		t.Fatal(err)
	}
	got, err := s.AccountFigures(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a := got["acct-a"]
	if a.RateRemaining == nil || *a.RateRemaining != 4321 || a.Headroom == nil || *a.Headroom != 7 || a.Replica != "r1" || !a.ObservedAt.Equal(now) {
		t.Errorf("acct-a: %+v", a)
	}
	if b := got["acct-b"]; b.RateRemaining != nil || b.Headroom != nil || b.Replica != "r1" {
		t.Errorf("acct-b: %+v", b)
	}
	if err := s.PublishAccountFigures(ctx, nil); err != nil {
		t.Errorf("publishing nothing: %v", err)
	}
}
