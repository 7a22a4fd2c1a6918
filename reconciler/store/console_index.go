package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/schema"
)

// What git declares of each tenant that the fleet console filters and
// searches by (migrations/0025_console_index.sql): the tier, a column of
// fleet_status, and the tracking domains, rows of tenant_domains. The
// leader writes them as its pass records the desired state; every replica
// reads them in the overview's SQL.

// TenantFacts is what the console needs of a tenant's declaration. The
// zero value is "not declared": no tier, no domains.
type TenantFacts struct {
	Tier    string
	Domains []string
}

// FactsOf is t's facts (zero for nil), domains lower case, sorted and
// without repeats.
func FactsOf(t *schema.Tenant) TenantFacts {
	if t == nil {
		return TenantFacts{}
	}
	f := TenantFacts{Tier: string(t.Metadata.Tier)}
	for _, d := range t.Spec.Domains {
		if d = strings.ToLower(strings.TrimSpace(d)); d != "" {
			f.Domains = append(f.Domains, d)
		}
	}
	slices.Sort(f.Domains)
	f.Domains = slices.Compact(f.Domains)
	return f
}

// factsBatch is how many changed tenants one of SetTenantFacts's
// transactions writes: each holds the row locks of the status rows it
// changes (which heartbeats of those tenants wait for) only that long.
const factsBatch = 5000

// SetTenantFacts records facts by workspace: each tenant's tier (on its
// fleet_status row, which SetDesired made) and its domains. With all,
// facts is every declared tenant and each tenant not in it loses its tier
// and domains (its file was removed from git); otherwise only the tenants
// in facts are touched, and a zero TenantFacts clears one.
//
// What is recorded is read first and only the differences are written, in
// batches: a full pass at 100,000 tenants that changes nothing reads two
// narrow columns and writes no row.
func (s *Store) SetTenantFacts(ctx context.Context, facts map[string]TenantFacts, all bool) error {
	ids := make([]string, 0, len(facts))
	for id := range facts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	where, args := "", []any{}
	if !all {
		where, args = " AND workspace = ANY($1::text[])", []any{ids}
	}
	// What is recorded.
	haveTier := map[string]string{}
	rows, err := s.pool.Query(ctx, `SELECT workspace, tier FROM fleet_status WHERE tier IS NOT NULL`+where, args...)
	if err != nil {
		return fmt.Errorf("record tenant facts: read tiers: %w", err)
	}
	var ws, v string
	if _, err := pgx.ForEachRow(rows, []any{&ws, &v}, func() error { haveTier[ws] = v; return nil }); err != nil {
		return fmt.Errorf("record tenant facts: read tiers: %w", err)
	}
	haveDomains := map[string][]string{}
	rows, err = s.pool.Query(ctx, `SELECT workspace, domain FROM tenant_domains WHERE TRUE`+where+` ORDER BY workspace, domain`, args...)
	if err != nil {
		return fmt.Errorf("record tenant facts: read domains: %w", err)
	}
	if _, err := pgx.ForEachRow(rows, []any{&ws, &v}, func() error { haveDomains[ws] = append(haveDomains[ws], v); return nil }); err != nil {
		return fmt.Errorf("record tenant facts: read domains: %w", err)
	}
	// What differs: tenants whose tier changes, domain rows to delete
	// and to insert.
	var tierWS, tierTo, delWS, delDom, addWS, addDom []string
	want := func(id string) TenantFacts {
		f := FactsOf(nil)
		if g, ok := facts[id]; ok {
			f.Tier = g.Tier
			for _, d := range g.Domains {
				if d = strings.ToLower(strings.TrimSpace(d)); d != "" {
					f.Domains = append(f.Domains, d)
				}
			}
			slices.Sort(f.Domains)
			f.Domains = slices.Compact(f.Domains)
		}
		return f
	}
	check := func(id string) {
		f := want(id)
		if haveTier[id] != f.Tier {
			tierWS, tierTo = append(tierWS, id), append(tierTo, f.Tier)
		}
		have := haveDomains[id]
		for _, d := range have {
			if _, found := slices.BinarySearch(f.Domains, d); !found {
				delWS, delDom = append(delWS, id), append(delDom, d)
			}
		}
		for _, d := range f.Domains {
			if _, found := slices.BinarySearch(have, d); !found {
				addWS, addDom = append(addWS, id), append(addDom, d)
			}
		}
	}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		seen[id] = true
		check(id)
	}
	if all { // recorded, no longer declared
		for id := range haveTier {
			if !seen[id] {
				seen[id] = true
				check(id)
			}
		}
		for id := range haveDomains {
			if !seen[id] {
				seen[id] = true
				check(id)
			}
		}
	}
	for lo := 0; lo < max(len(tierWS), len(delWS), len(addWS)); lo += factsBatch {
		part := func(a []string) []string { return a[min(lo, len(a)):min(lo+factsBatch, len(a))] }
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if w := part(tierWS); len(w) > 0 {
				// Locked in workspace order ("Row-lock order" in store.go).
				if _, err := tx.Exec(ctx, `WITH n AS (SELECT * FROM unnest($1::text[], $2::text[]) AS n(w, tier)),
					lk AS (SELECT f.workspace FROM fleet_status f JOIN n ON f.workspace = n.w ORDER BY f.workspace FOR NO KEY UPDATE OF f)
					UPDATE fleet_status f SET tier = nullif(n.tier, '') FROM n JOIN lk ON lk.workspace = n.w WHERE f.workspace = n.w`,
					w, part(tierTo)); err != nil {
					return fmt.Errorf("tiers: %w", err)
				}
			}
			if w := part(delWS); len(w) > 0 {
				if _, err := tx.Exec(ctx, `DELETE FROM tenant_domains t USING unnest($1::text[], $2::text[]) AS n(w, d)
					WHERE t.workspace = n.w AND t.domain = n.d`, w, part(delDom)); err != nil {
					return fmt.Errorf("stale domains: %w", err)
				}
			}
			if w := part(addWS); len(w) > 0 {
				if _, err := tx.Exec(ctx, `INSERT INTO tenant_domains (workspace, domain)
					SELECT w, d FROM unnest($1::text[], $2::text[]) AS n(w, d) ON CONFLICT DO NOTHING`, w, part(addDom)); err != nil {
					return fmt.Errorf("domains: %w", err)
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("record tenant facts: %w", err)
		}
	}
	return nil
}

// TenantDomains is workspace's recorded domains, sorted.
func (s *Store) TenantDomains(ctx context.Context, workspace string) ([]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT domain FROM tenant_domains WHERE workspace = $1 ORDER BY domain`, workspace)
	if err != nil {
		return nil, fmt.Errorf("tenant domains: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// AccountFigure is one account's figures as the leader last published
// them (account_figures).
type AccountFigure struct {
	Account string
	// RateRemaining is DigitalOcean's RateLimit-Remaining as the leader
	// last saw it; Headroom the capacity left as the leader computed it.
	// Nil: the leader had no such figure.
	RateRemaining, Headroom *int
	// Replica is the leader that published them, ObservedAt when.
	Replica    string
	ObservedAt time.Time
}

// PublishAccountFigures records figures (each with its own ObservedAt),
// replacing what an account had.
func (s *Store) PublishAccountFigures(ctx context.Context, figures []AccountFigure) error {
	if len(figures) == 0 {
		return nil
	}
	batch := &pgx.Batch{}
	for _, f := range figures {
		batch.Queue(`INSERT INTO account_figures (account, rate_remaining, headroom, replica, observed_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT (account) DO UPDATE SET rate_remaining = $2, headroom = $3, replica = $4, observed_at = $5
			WHERE account_figures.observed_at <= $5`, f.Account, f.RateRemaining, f.Headroom, f.Replica, f.ObservedAt)
	}
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("publish account figures: %w", err)
	}
	return nil
}

// AccountFigures is every account's published figures, by account.
func (s *Store) AccountFigures(ctx context.Context) (map[string]AccountFigure, error) {
	rows, err := s.pool.Query(ctx, `SELECT account, rate_remaining, headroom, replica, observed_at FROM account_figures`)
	if err != nil {
		return nil, fmt.Errorf("account figures: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[AccountFigure])
	if err != nil {
		return nil, fmt.Errorf("account figures: %w", err)
	}
	out := make(map[string]AccountFigure, len(list))
	for _, f := range list {
		out[f.Account] = f
	}
	return out, nil
}

// Lifecycles is the lifecycle state of each of workspaces that has a
// status row.
func (s *Store) Lifecycles(ctx context.Context, workspaces []string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT workspace, state FROM fleet_status WHERE workspace = ANY($1::text[])`, workspaces)
	if err != nil {
		return nil, fmt.Errorf("lifecycles: %w", err)
	}
	out := make(map[string]string, len(workspaces))
	var ws, state string
	_, err = pgx.ForEachRow(rows, []any{&ws, &state}, func() error {
		out[ws] = state
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lifecycles: %w", err)
	}
	return out, nil
}
