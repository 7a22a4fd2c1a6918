package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The fleet console's reads (reconciler/console). The overview pages
// through fleet_status by workspace id (keyset: a page costs the same at
// the first tenant and the 100,000th), with every filter in SQL; what only
// git knows (tier, domains) the leader keeps in Postgres
// (console_index.go), so a tier is an indexed column and a domain search a
// trigram-indexed LIKE.

// LifecycleChannel is the Postgres notification channel on which a trigger
// (migrations/0024_console.sql) announces every change of a tenant's
// lifecycle state; the payload is the workspace id.
const LifecycleChannel = "genesis_lifecycle"

// ListenLifecycle follows LifecycleChannel as Listen follows EventChannel:
// ready once LISTEN is in place, then handle with each workspace id, until
// ctx ends (nil) or the connection fails (an error wrapping
// ErrListenerLost).
func (s *Store) ListenLifecycle(ctx context.Context, ready func(), handle func(workspace string)) error {
	return s.listen(ctx, LifecycleChannel, ready, handle)
}

// MaxConsolePage bounds ConsoleFilter.Limit.
const MaxConsolePage = 200

// ConsoleFilter selects the overview's tenants. Empty fields match all.
type ConsoleFilter struct {
	State, Health, Region, Account, Version string
	// Tier is a tier as git declares it (fleet_status.tier, which the
	// leader records: SetTenantFacts).
	Tier string
	// Wave is a wave index of the newest rollout (-1: any).
	Wave int
	// Query matches, case-insensitively, a workspace id containing it or a
	// tenant with a declared domain containing it (tenant_domains).
	Query string
	// After pages forward (ids > After); Before backward (ids < Before).
	After, Before string
	// Limit is the page size (1..MaxConsolePage; 0: 50).
	Limit int
}

// ConsoleTenant is one row of the overview.
type ConsoleTenant struct {
	Workspace, Lifecycle, Health, Desired string
	Region, Account, Size, N8NVersion     string
	// Tier is as git declares it ("": not declared).
	Tier                            string
	ManifestIssued, ManifestApplied int64
	LastHeartbeat, StateSince       time.Time
}

// ConsolePage is one page of the overview: its rows, whether there are
// rows before and after it, and how many tenants match in all.
type ConsolePage struct {
	Tenants       []ConsoleTenant
	Total         int
	HasPrev, More bool
}

// where is f's WHERE clause (without the keyset) and its arguments.
func (f ConsoleFilter) where() (string, []any) {
	var conds []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.State != "" {
		conds = append(conds, "state = "+arg(f.State))
	}
	if f.Health != "" {
		conds = append(conds, "health = "+arg(f.Health))
	}
	if f.Region != "" {
		conds = append(conds, "region = "+arg(f.Region))
	}
	if f.Account != "" {
		conds = append(conds, "account = "+arg(f.Account))
	}
	if f.Version != "" {
		conds = append(conds, "n8n_version = "+arg(f.Version))
	}
	if f.Wave >= 0 {
		conds = append(conds, `EXISTS (SELECT 1 FROM rollout_members m WHERE m.workspace = f.workspace AND m.wave = `+arg(f.Wave)+`
			AND m.rollout_id = (SELECT id FROM rollouts ORDER BY seq DESC LIMIT 1))`)
	}
	if f.Tier != "" {
		conds = append(conds, "tier = "+arg(f.Tier))
	}
	if f.Query != "" {
		// One set of the matching ids, joined to the page: the ids' side
		// scans the ids (as it always did), the domains' side is answered
		// by tenant_domains' trigram index. (An OR of the two in the
		// outer WHERE made the planner walk the primary key testing every
		// row.)
		p := arg("%" + escapeLike(strings.ToLower(f.Query)) + "%")
		conds = append(conds, "workspace IN (SELECT s.workspace FROM fleet_status s WHERE s.workspace LIKE "+p+
			" UNION SELECT d.workspace FROM tenant_domains d WHERE d.domain LIKE "+p+")")
	}
	if len(conds) == 0 {
		return "TRUE", args
	}
	return strings.Join(conds, " AND "), args
}

// escapeLike quotes LIKE's wildcards (the default escape is backslash).
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// ConsoleTenants is one page of the tenants f selects, by workspace id.
func (s *Store) ConsoleTenants(ctx context.Context, f ConsoleFilter) (ConsolePage, error) {
	if f.Limit <= 0 {
		f.Limit = 50
	}
	if f.Limit > MaxConsolePage {
		return ConsolePage{}, fmt.Errorf("limit %d: at most %d", f.Limit, MaxConsolePage)
	}
	where, args := f.where()
	order, back := "ASC", false
	switch {
	case f.Before != "":
		args = append(args, f.Before)
		where += " AND workspace < $" + strconv.Itoa(len(args))
		order, back = "DESC", true
	case f.After != "":
		args = append(args, f.After)
		where += " AND workspace > $" + strconv.Itoa(len(args))
	}
	args = append(args, f.Limit+1)
	rows, err := s.pool.Query(ctx, `SELECT workspace, state, health, desired_state, coalesce(region, ''), coalesce(account, ''),
		coalesce(size, ''), coalesce(n8n_version, ''), coalesce(tier, ''), manifest_version_issued, manifest_version_applied,
		coalesce(last_heartbeat_at, 'epoch'), state_since
		FROM fleet_status f WHERE `+where+` ORDER BY workspace `+order+` LIMIT $`+strconv.Itoa(len(args)), args...)
	if err != nil {
		return ConsolePage{}, fmt.Errorf("console tenants: %w", err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ConsoleTenant, error) {
		var t ConsoleTenant
		err := r.Scan(&t.Workspace, &t.Lifecycle, &t.Health, &t.Desired, &t.Region, &t.Account, &t.Size, &t.N8NVersion, &t.Tier,
			&t.ManifestIssued, &t.ManifestApplied, &t.LastHeartbeat, &t.StateSince)
		if t.LastHeartbeat.Equal(time.Unix(0, 0)) {
			t.LastHeartbeat = time.Time{}
		}
		return t, err
	})
	if err != nil {
		return ConsolePage{}, fmt.Errorf("console tenants: %w", err)
	}
	var p ConsolePage
	extra := len(ts) > f.Limit
	if extra {
		ts = ts[:f.Limit]
	}
	if back {
		for i, j := 0, len(ts)-1; i < j; i, j = i+1, j-1 {
			ts[i], ts[j] = ts[j], ts[i]
		}
		p.HasPrev, p.More = extra, true
	} else {
		p.HasPrev, p.More = f.After != "", extra
	}
	p.Tenants = ts
	return p, nil
}

// ConsoleTotal counts the tenants f selects (its keyset and limit aside).
func (s *Store) ConsoleTotal(ctx context.Context, f ConsoleFilter) (int, error) {
	where, args := f.where()
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM fleet_status f WHERE `+where, args...).Scan(&n); err != nil {
		return 0, fmt.Errorf("console total: %w", err)
	}
	return n, nil
}

// StateCount is how many tenants are in a lifecycle state with a health.
type StateCount struct {
	Lifecycle, Health string
	Tenants           int
}

// ConsoleCounts counts every tenant by lifecycle state and health.
func (s *Store) ConsoleCounts(ctx context.Context) ([]StateCount, error) {
	rows, err := s.pool.Query(ctx, `SELECT state, health, count(*) FROM fleet_status GROUP BY 1, 2 ORDER BY 1, 2`)
	if err != nil {
		return nil, fmt.Errorf("console counts: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (StateCount, error) {
		var c StateCount
		return c, r.Scan(&c.Lifecycle, &c.Health, &c.Tenants)
	})
}

// ConsoleValues are the distinct values the overview's filters offer.
type ConsoleValues struct {
	Regions, Accounts, Versions []string
	// Waves names the newest rollout's waves by index.
	Waves []string
}

// ConsoleFilterValues reads the filters' choices: regions and n8n versions
// in use (by their indexes: a skip scan of distinct values), accounts, and
// the newest rollout's waves.
func (s *Store) ConsoleFilterValues(ctx context.Context) (ConsoleValues, error) {
	var v ConsoleValues
	distinct := func(col string) ([]string, error) {
		// A recursive walk of the index: one probe per distinct value,
		// not a scan of every row.
		rows, err := s.pool.Query(ctx, `WITH RECURSIVE d(v) AS (
			(SELECT `+col+` FROM fleet_status WHERE `+col+` IS NOT NULL ORDER BY 1 LIMIT 1)
			UNION ALL
			SELECT (SELECT `+col+` FROM fleet_status WHERE `+col+` > d.v ORDER BY 1 LIMIT 1) FROM d WHERE d.v IS NOT NULL)
			SELECT v FROM d WHERE v IS NOT NULL LIMIT 500`)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
	var err error
	if v.Regions, err = distinct("region"); err != nil {
		return v, fmt.Errorf("console regions: %w", err)
	}
	if v.Versions, err = distinct("n8n_version"); err != nil {
		return v, fmt.Errorf("console versions: %w", err)
	}
	rows, err := s.pool.Query(ctx, `SELECT name FROM do_accounts ORDER BY name`)
	if err != nil {
		return v, fmt.Errorf("console accounts: %w", err)
	}
	if v.Accounts, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return v, fmt.Errorf("console accounts: %w", err)
	}
	rows, err = s.pool.Query(ctx, `SELECT coalesce(w->>'name', '') FROM
		(SELECT waves FROM rollouts ORDER BY seq DESC LIMIT 1) r, jsonb_array_elements(r.waves) WITH ORDINALITY AS e(w, i) ORDER BY i`)
	if err != nil {
		return v, fmt.Errorf("console waves: %w", err)
	}
	if v.Waves, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return v, fmt.Errorf("console waves: %w", err)
	}
	return v, nil
}

// FleetRowOf is workspace's status row (ErrUnknownTenant: none).
func (s *Store) FleetRowOf(ctx context.Context, workspace string) (FleetRow, error) {
	rows, err := s.fleetRows(ctx, "WHERE workspace = $1", workspace)
	if err != nil {
		return FleetRow{}, err
	}
	if len(rows) == 0 {
		return FleetRow{}, ErrUnknownTenant
	}
	return rows[0], nil
}

// Lifecycle is workspace's lifecycle state (ErrUnknownTenant: no row).
func (s *Store) Lifecycle(ctx context.Context, workspace string) (string, error) {
	var state string
	err := s.pool.QueryRow(ctx, `SELECT state FROM fleet_status WHERE workspace = $1`, workspace).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrUnknownTenant
	}
	return state, err
}

// HistoryEntry is one line of a tenant's history: a journaled operation
// or an audit_log entry.
type HistoryEntry struct {
	At time.Time
	// Source is "operation" or "audit".
	Source string
	// What is the operation's kind and state, or the audited action.
	What string
	// Actor is the audit entry's actor ("" for operations).
	Actor string
	// Detail is the operation's error or the audit entry's detail (JSON).
	Detail string
	Commit string
}

// TenantHistory is workspace's newest operations and audit entries (at
// most limit of each), newest first.
func (s *Store) TenantHistory(ctx context.Context, workspace string, limit int) ([]HistoryEntry, error) {
	rows, err := s.pool.Query(ctx, `SELECT at, src, what, actor, detail, commit FROM (
		(SELECT created_at AS at, 'operation' AS src, kind || ' ' || state AS what, '' AS actor, coalesce(error, '') AS detail,
			coalesce(commit, '') AS commit FROM operations WHERE workspace = $1 ORDER BY id DESC LIMIT $2)
		UNION ALL
		(SELECT at, 'audit', action, actor, CASE WHEN detail = '{}' THEN '' ELSE detail::text END, coalesce(commit, '')
			FROM audit_log WHERE workspace = $1 ORDER BY at DESC LIMIT $2)) h ORDER BY at DESC`, workspace, limit)
	if err != nil {
		return nil, fmt.Errorf("tenant history: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[HistoryEntry])
}

// IssuedManifest is one manifest issued to a tenant's droplet.
type IssuedManifest struct {
	DropletID, Version  int64
	IssuedAt, ExpiresAt time.Time
	Commit, Correlation string
}

// TenantManifests is the newest manifests issued to workspace's droplets
// (at most limit), newest first.
func (s *Store) TenantManifests(ctx context.Context, workspace string, limit int) ([]IssuedManifest, error) {
	rows, err := s.pool.Query(ctx, `SELECT droplet_id, version, issued_at, expires_at, commit, coalesce(correlation, '')
		FROM manifests WHERE droplet_id IN (SELECT droplet_id FROM agents WHERE workspace = $1) AND workspace = $1
		ORDER BY issued_at DESC, version DESC LIMIT $2`, workspace, limit)
	if err != nil {
		return nil, fmt.Errorf("tenant manifests: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowToStructByPos[IssuedManifest])
}

// TenantBackups is workspace's newest backups in any state (at most
// limit), newest first.
func (s *Store) TenantBackups(ctx context.Context, workspace string, limit int) ([]Backup, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+backupCols+` FROM backups WHERE workspace = $1 ORDER BY started_at DESC, id LIMIT $2`, workspace, limit)
	return scanBackups(rows, err)
}

// AccountUse is one account as the console shows it: do_accounts' row and
// how many tenants hold a droplet in it.
type AccountUse struct {
	Name, Status, LastError string
	Regions                 []string
	MaxDroplets, Droplets   int
}

// AccountUses lists do_accounts with their droplet counts, by name.
func (s *Store) AccountUses(ctx context.Context) ([]AccountUse, error) {
	rows, err := s.pool.Query(ctx, `SELECT a.name, a.status, coalesce(a.last_error, ''), a.regions, a.max_droplets,
		(SELECT count(*) FROM fleet_status f WHERE f.account = a.name AND f.droplet_id IS NOT NULL)
		FROM do_accounts a ORDER BY a.name`)
	if err != nil {
		return nil, fmt.Errorf("account uses: %w", err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (AccountUse, error) {
		var a AccountUse
		return a, r.Scan(&a.Name, &a.Status, &a.LastError, &a.Regions, &a.MaxDroplets, &a.Droplets)
	})
}
