package console

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// BenchmarkOverview100k: the overview at 100,000 tenants, rendered by the
// console (session check, filter parsing, the page's four statements,
// html/template) against the same statements' raw time through the store
// (query and scan only), for the first page, a page deep in the keyset, a
// state filter, a tier filter (33,000 tenants; first page and deep), a
// search that matches ten tenants by domain only, and one that matches
// every tenant's domain. Rows go straight into fleet_status with
// generate_series; tiers and domains as the leader's pass records them
// (SetTenantFacts), whose cost on a full pass that changes nothing is
// facts/unchanged.
func BenchmarkOverview100k(b *testing.B) {
	const n = 100_000
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, pgtest.New(b), log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.Close)
	fleet := testkit.Fleet()
	if err := st.SyncAccounts(ctx, fleet); err != nil {
		b.Fatal(err)
	}
	acct := fleet.Spec.Accounts[0].Name
	if _, err := st.Pool().Exec(ctx, `INSERT INTO fleet_status (workspace, droplet_id, account, region, size, state, desired_state, health, n8n_version,
		manifest_version_issued, manifest_version_applied, last_heartbeat_at)
		SELECT 'ws-' || lpad(i::text, 6, '0'), 100000 + i, $2, (ARRAY['nyc3','sfo3','ams3'])[1 + i % 3], 's-1vcpu-1gb',
			(ARRAY['ACTIVE_HEALTHY','ACTIVE_HEALTHY','ACTIVE_HEALTHY','ACTIVE_DEGRADED','REBOOTING'])[1 + i % 5], 'running',
			(ARRAY['healthy','healthy','healthy','degraded','critical'])[1 + i % 5], (ARRAY['1.2.3','1.3.0'])[1 + i % 2], 2, 2, now()
		FROM generate_series(0, $1 - 1) i`, n, acct); err != nil {
		b.Fatal(err)
	}
	if _, err := st.Pool().Exec(ctx, `ANALYZE fleet_status`); err != nil {
		b.Fatal(err)
	}
	snap := tenants.Snapshot{Commit: "0123456789abcdef0123456789abcdef01234567", Fleet: fleet, Tenants: make(map[string]tenants.TenantState, n)}
	tiers := schema.Tiers()
	for i := range n {
		id := fmt.Sprintf("ws-%06d", i)
		snap.Tenants[id] = tenants.TenantState{ID: id, Status: tenants.StatusValid, Tenant: &schema.Tenant{
			Metadata: schema.TenantMeta{ID: id, Tier: tiers[i%3]}, Spec: schema.TenantSpec{State: schema.StateRunning,
				Domains: []string{fmt.Sprintf("t%06d.example.com", i)}}}}
	}
	facts := make(map[string]store.TenantFacts, n)
	for id, ts := range snap.Tenants {
		facts[id] = store.FactsOf(ts.Tenant)
	}
	if err := st.SetTenantFacts(ctx, facts, true); err != nil {
		b.Fatal(err)
	}
	// Recording the tiers rewrote every row once: vacuum, as autovacuum
	// would, so the statements scan the table a running fleet has.
	for _, q := range []string{`VACUUM ANALYZE fleet_status`, `VACUUM ANALYZE tenant_domains`} {
		if _, err := st.Pool().Exec(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("facts/unchanged", func(b *testing.B) {
		for b.Loop() {
			if err := st.SetTenantFacts(ctx, facts, true); err != nil {
				b.Fatal(err)
			}
		}
	})
	con, err := New(Config{Store: st, API: http.NotFoundHandler(), Key: DeriveKey([]byte("bench")), Logger: log,
		Desired: func() (tenants.Snapshot, bool) { return snap, true }})
	if err != nil {
		b.Fatal(err)
	}
	cookie, err := con.keys.seal(sessionCookie, session{Expires: time.Now().Add(time.Hour).Unix(), ID: randomID()})
	if err != nil {
		b.Fatal(err)
	}
	h := con.Handler()
	parts := map[string]func() error{
		"tenants": func() error {
			_, err := st.ConsoleTenants(ctx, store.ConsoleFilter{Wave: -1, Limit: PageSize})
			return err
		},
		"total":  func() error { _, err := st.ConsoleTotal(ctx, store.ConsoleFilter{Wave: -1}); return err },
		"counts": func() error { _, err := st.ConsoleCounts(ctx); return err },
		"values": func() error { _, err := st.ConsoleFilterValues(ctx); return err },
	}
	for name, f := range parts {
		b.Run("part/"+name, func(b *testing.B) {
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	for _, tc := range []struct{ name, query string }{
		{"first", ""},
		{"deep", "after=ws-090000"},
		{"state", "state=REBOOTING&after=ws-050000"},
		{"tier", "tier=pro"},
		{"tier-deep", "tier=pro&after=ws-090000"},
		{"search", "q=t09999"},
		{"search-wide", "q=example"},
	} {
		q, _ := url.ParseQuery(tc.query)
		f, err := ParseFilter(q)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("render/"+tc.name, func(b *testing.B) {
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, "/console/?"+tc.query, nil)
				req.AddCookie(&http.Cookie{Name: sessionCookie, Value: cookie})
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
				}
			}
		})
		b.Run("raw/"+tc.name, func(b *testing.B) {
			sf := f.store()
			for b.Loop() {
				if _, err := st.ConsoleTenants(ctx, sf); err != nil {
					b.Fatal(err)
				}
				if _, err := st.ConsoleTotal(ctx, sf); err != nil {
					b.Fatal(err)
				}
				if _, err := st.ConsoleCounts(ctx); err != nil {
					b.Fatal(err)
				}
				if _, err := st.ConsoleFilterValues(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
