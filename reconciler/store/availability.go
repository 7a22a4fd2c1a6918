package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The availability prober's tables (migrations/0021_availability.sql,
// package reconciler/availability): shard leases and replica membership,
// and a minute bitmap of probes per tenant and UTC day.

// AvailabilityShards is how many shards the fleet's tenants are divided
// into for probing (the rows of availability_shards).
const AvailabilityShards = 64

// MinutesPerDay is the length of a day's bitmaps in availability_days.
const MinutesPerDay = 24 * 60

// AvailabilityKeepDays is how many days of availability_days
// PruneAvailability keeps before the current one: 30 days of history and
// today.
const AvailabilityKeepDays = 30

// shardLease is one row of availability_shards.
type shardLease struct {
	Shard   int
	Holder  string
	Expires time.Time
}

// assignShards decides which shards replica me holds after this round: a
// fair share of ceil(shards / live) — its unexpired leases first (lowest
// shards kept when it holds more than its share, the rest released for
// newcomers), then free or expired shards up to its share. live counts the
// replicas seen within the lease's time to live, me included. Pure.
func assignShards(leases []shardLease, me string, live int, now time.Time) []int {
	if live < 1 {
		live = 1
	}
	share := (len(leases) + live - 1) / live
	var mine, free []int
	for _, l := range leases {
		switch {
		case l.Holder == me && l.Expires.After(now):
			mine = append(mine, l.Shard)
		case l.Holder == "" || !l.Expires.After(now):
			free = append(free, l.Shard)
		}
	}
	if len(mine) > share {
		mine = mine[:share]
	}
	for _, s := range free {
		if len(mine) >= share {
			break
		}
		mine = append(mine, s)
	}
	slices.Sort(mine)
	return mine
}

// LeaseAvailabilityShards records replica as live at now and, in one
// transaction that locks every shard row (replicas take turns), renews,
// releases and claims shards so that it holds its fair share
// (assignShards); leases last ttl. It returns the shards replica holds
// until now+ttl. A replica whose round stops for longer than ttl loses
// its shards to the others.
func (s *Store) LeaseAvailabilityShards(ctx context.Context, replica string, now time.Time, ttl time.Duration) ([]int, error) {
	var held []int
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO availability_replicas (replica, seen_at) VALUES ($1, $2)
			ON CONFLICT (replica) DO UPDATE SET seen_at = GREATEST(availability_replicas.seen_at, $2)`, replica, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM availability_replicas WHERE seen_at < $1`, now.Add(-10*ttl)); err != nil {
			return err
		}
		var live int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM availability_replicas WHERE seen_at > $1`, now.Add(-ttl)).Scan(&live); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT shard, coalesce(holder, ''), expires_at FROM availability_shards ORDER BY shard FOR UPDATE`)
		if err != nil {
			return err
		}
		leases, err := pgx.CollectRows(rows, pgx.RowToStructByPos[shardLease])
		if err != nil {
			return err
		}
		held = assignShards(leases, replica, live, now)
		_, err = tx.Exec(ctx, `UPDATE availability_shards SET
				holder = CASE WHEN shard = ANY($1::smallint[]) THEN $2 END,
				expires_at = CASE WHEN shard = ANY($1::smallint[]) THEN $3::timestamptz ELSE 'epoch'::timestamptz END
			WHERE shard = ANY($1::smallint[]) OR holder = $2`, held, replica, now.Add(ttl))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lease availability shards for %s: %w", replica, err)
	}
	return held, nil
}

// ReleaseAvailabilityShards gives replica's shards back and forgets it (a
// clean shutdown: the others take its shards at their next round instead
// of after the leases expire).
func (s *Store) ReleaseAvailabilityShards(ctx context.Context, replica string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE availability_shards SET holder = NULL, expires_at = 'epoch' WHERE holder = $1`, replica); err != nil {
			return fmt.Errorf("release availability shards of %s: %w", replica, err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM availability_replicas WHERE replica = $1`, replica); err != nil {
			return fmt.Errorf("release availability shards of %s: %w", replica, err)
		}
		return nil
	})
}

// ShardHolders is availability_shards' live leases at now: shard → replica.
func (s *Store) ShardHolders(ctx context.Context, now time.Time) (map[int]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT shard, holder FROM availability_shards WHERE holder IS NOT NULL AND expires_at > $1`, now)
	if err != nil {
		return nil, fmt.Errorf("read availability shards: %w", err)
	}
	out := map[int]string{}
	var shard int
	var holder string
	_, err = pgx.ForEachRow(rows, []any{&shard, &holder}, func() error { out[shard] = holder; return nil })
	if err != nil {
		return nil, fmt.Errorf("read availability shards: %w", err)
	}
	return out, nil
}

// Probe is one probe's outcome, as RecordProbes stores it.
type Probe struct {
	Workspace string
	Tier      string
	// Shard is the workspace's shard: the probe is stored only while the
	// recording replica still holds it.
	Shard int
	Up    bool
}

// recordProbesSQL sets each probe's minute in its tenant's row of the day
// (creating it): probed gains the bit; up gains it when the probe
// succeeded and the minute was not probed yet, and loses it when the
// probe failed (a minute is up only if all its probes were). Probes of
// shards the replica ($5) no longer holds at $6 are dropped: another
// replica may have taken them, and a tenant is counted once a minute.
const recordProbesSQL = `WITH x AS (
	SELECT t.workspace, t.tier, t.up FROM unnest($1::text[], $2::text[], $3::smallint[], $4::boolean[]) AS t(workspace, tier, shard, up)
	WHERE t.shard IN (SELECT shard FROM availability_shards WHERE holder = $5 AND expires_at > $6)
), z AS (SELECT repeat('0', 1440)::bit(1440) AS zero)
INSERT INTO availability_days AS d (workspace, day, tier, probed, up, total, ok)
SELECT x.workspace, $7::date, x.tier, set_bit(z.zero, $8, 1), set_bit(z.zero, $8, x.up::int), 1, x.up::int FROM x, z
ON CONFLICT (workspace, day) DO UPDATE SET
	tier = EXCLUDED.tier,
	probed = d.probed | EXCLUDED.probed,
	up = {{up}},
	total = bit_count(d.probed | EXCLUDED.probed),
	ok = bit_count({{up}})`

// upAfter is the new up bitmap: AND into a minute probed already, OR into
// a new one.
const upAfter = `CASE WHEN bit_count(d.probed & EXCLUDED.probed) > 0 THEN d.up & ~(EXCLUDED.probed & ~EXCLUDED.up) ELSE d.up | EXCLUDED.up END`

// RecordProbes stores one round of replica's probes, all made at the
// minute of at (UTC), in one statement. A workspace listed twice keeps its
// last probe. It returns how many were stored: probes of shards replica
// does not hold at now (its clock when it writes) are not.
func (s *Store) RecordProbes(ctx context.Context, replica string, at, now time.Time, probes []Probe) (int, error) {
	idx := make(map[string]int, len(probes))
	var wss, tiers []string
	var shards []int16
	var ups []bool
	for _, p := range probes {
		if i, ok := idx[p.Workspace]; ok {
			tiers[i], shards[i], ups[i] = p.Tier, int16(p.Shard), p.Up
			continue
		}
		idx[p.Workspace] = len(wss)
		wss, tiers, shards, ups = append(wss, p.Workspace), append(tiers, p.Tier), append(shards, int16(p.Shard)), append(ups, p.Up)
	}
	if len(wss) == 0 {
		return 0, nil
	}
	at = at.UTC()
	day, minute := dayOf(at), minuteOf(at)
	tag, err := s.pool.Exec(ctx, strings.ReplaceAll(recordProbesSQL, "{{up}}", upAfter), wss, tiers, shards, ups, replica, now, day, minute)
	if err != nil {
		return 0, fmt.Errorf("record %d probes: %w", len(wss), err)
	}
	return int(tag.RowsAffected()), nil
}

// PruneAvailability deletes the days before now's that are more than
// AvailabilityKeepDays old. Any replica may run it; it is idempotent.
func (s *Store) PruneAvailability(ctx context.Context, now time.Time) (int64, error) {
	keep := dayOf(now.UTC()).AddDate(0, 0, -AvailabilityKeepDays)
	tag, err := s.pool.Exec(ctx, `DELETE FROM availability_days WHERE day < $1`, keep)
	if err != nil {
		return 0, fmt.Errorf("prune availability: %w", err)
	}
	return tag.RowsAffected(), nil
}

func dayOf(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
}

func minuteOf(t time.Time) int { return t.Hour()*60 + t.Minute() }

// AvailabilityWindows are the windows the availability reads report, in
// this order: the last hour, day, week and 30 days.
var AvailabilityWindows = []time.Duration{time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 30 * 24 * time.Hour}

// Counts are the probed and up minutes of one window.
type Counts struct {
	Probes, Up int64
}

// Ratio is Up/Probes, and false when nothing was probed.
func (c Counts) Ratio() (float64, bool) {
	if c.Probes == 0 {
		return 0, false
	}
	return float64(c.Up) / float64(c.Probes), true
}

// AvailabilityRow is a tenant's or a tier's counts in each of
// AvailabilityWindows.
type AvailabilityRow struct {
	// Workspace is the tenant ("" in a tier's row).
	Workspace string
	// Tier is the tier (a tenant's: at its newest probe).
	Tier string
	// Tenants is how many tenants a tier's row counts (1 for a tenant).
	Tenants int
	Windows []Counts
}

// windowStart is where a window of length w ending with now's minute
// (inclusive) starts: its first day and that day's first minute.
func windowStart(now time.Time, w time.Duration) (time.Time, int) {
	start := now.UTC().Truncate(time.Minute).Add(-w + time.Minute)
	return dayOf(start), minuteOf(start)
}

// windowSums renders the SELECT list that sums probed and up minutes over
// each window (parameters from $first: day and minute of each start).
// Whole days read total and ok; only a window's first day counts bits.
func windowSums(windows []time.Duration, now time.Time, first int) (string, []any) {
	var cols []string
	var args []any
	for i, w := range windows {
		day, minute := windowStart(now, w)
		d, m := first+2*i, first+2*i+1
		args = append(args, day, minute)
		for _, pair := range [][2]string{{"total", "probed"}, {"ok", "up"}} {
			cols = append(cols, fmt.Sprintf(`coalesce(sum(CASE WHEN day > $%d THEN %s WHEN day = $%d THEN bit_count(substring(%s FROM $%d + 1)) ELSE 0 END), 0)::bigint`,
				d, pair[0], d, pair[1], m))
		}
	}
	return strings.Join(cols, ", "), args
}

// scanWindows reads n windows' counts after the leading dest.
func scanWindows(row pgx.Row, n int, dest ...any) ([]Counts, error) {
	c := make([]Counts, n)
	for i := range c {
		dest = append(dest, &c[i].Probes, &c[i].Up)
	}
	return c, row.Scan(dest...)
}

// oldest is the first day any window reads.
func oldest(windows []time.Duration, now time.Time) time.Time {
	d, _ := windowStart(now, slices.Max(windows))
	return d
}

// AvailabilityByTier sums every tenant's probes by tier over
// AvailabilityWindows ending at now (tiers that had no probe in 30 days are
// absent), ordered by tier.
func (s *Store) AvailabilityByTier(ctx context.Context, now time.Time) ([]AvailabilityRow, error) {
	ws := AvailabilityWindows
	sums, args := windowSums(ws, now, 2)
	rows, err := s.pool.Query(ctx, `SELECT tier, count(DISTINCT workspace), `+sums+`
		FROM availability_days WHERE day >= $1 GROUP BY tier ORDER BY tier`, append([]any{oldest(ws, now)}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("availability by tier: %w", err)
	}
	defer rows.Close()
	var out []AvailabilityRow
	for rows.Next() {
		var r AvailabilityRow
		if r.Windows, err = scanWindows(rows, len(ws), &r.Tier, &r.Tenants); err != nil {
			return nil, fmt.Errorf("availability by tier: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("availability by tier: %w", err)
	}
	return out, nil
}

// tenantWindowsSQL sums each tenant's windows (its tier: the newest day's).
const tenantWindowsSQL = `SELECT workspace, (array_agg(tier ORDER BY day DESC))[1], {{sums}}
	FROM availability_days WHERE day >= $1 {{where}} GROUP BY workspace`

// AvailabilityWorst is the n tenants with the lowest ratio over the last
// window of windows (the longest; ties: the lower workspace id), among
// those probed in it, with their counts in each window.
func (s *Store) AvailabilityWorst(ctx context.Context, now time.Time, windows []time.Duration, n int) ([]AvailabilityRow, error) {
	if n <= 0 || len(windows) == 0 {
		return nil, nil
	}
	sums, args := windowSums(windows, now, 3)
	q := strings.NewReplacer("{{sums}}", sums, "{{where}}", "").Replace(tenantWindowsSQL)
	// The last window's columns are the last two of each row.
	q = fmt.Sprintf(`SELECT * FROM (%s) t(%s) WHERE p%d > 0 ORDER BY u%d::float8 / p%d, workspace LIMIT $2`,
		q, windowColumns(len(windows)), len(windows)-1, len(windows)-1, len(windows)-1)
	rows, err := s.pool.Query(ctx, q, append([]any{oldest(windows, now), n}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("worst availability: %w", err)
	}
	defer rows.Close()
	var out []AvailabilityRow
	for rows.Next() {
		r := AvailabilityRow{Tenants: 1}
		if r.Windows, err = scanWindows(rows, len(windows), &r.Workspace, &r.Tier); err != nil {
			return nil, fmt.Errorf("worst availability: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("worst availability: %w", err)
	}
	return out, nil
}

// windowColumns names tenantWindowsSQL's columns: workspace, tier, then
// p0, u0, p1, u1 …
func windowColumns(n int) string {
	cols := []string{"workspace", "tier"}
	for i := range n {
		cols = append(cols, fmt.Sprintf("p%d", i), fmt.Sprintf("u%d", i))
	}
	return strings.Join(cols, ", ")
}

// TenantAvailability is workspace's counts over AvailabilityWindows ending
// at now; ok is false when it has no probe in 30 days.
func (s *Store) TenantAvailability(ctx context.Context, workspace string, now time.Time) (AvailabilityRow, bool, error) {
	ws := AvailabilityWindows
	sums, args := windowSums(ws, now, 3)
	q := strings.NewReplacer("{{sums}}", sums, "{{where}}", "AND workspace = $2").Replace(tenantWindowsSQL)
	r := AvailabilityRow{Tenants: 1}
	var err error
	r.Windows, err = scanWindows(s.pool.QueryRow(ctx, q, append([]any{oldest(ws, now), workspace}, args...)...), len(ws), &r.Workspace, &r.Tier)
	if err == pgx.ErrNoRows {
		return AvailabilityRow{}, false, nil
	}
	if err != nil {
		return AvailabilityRow{}, false, fmt.Errorf("availability of %s: %w", workspace, err)
	}
	return r, true, nil
}

// Burning is a tenant or a tier spending its error budget at Burn times
// the rate that spends it exactly over the objective's period.
type Burning struct {
	// Workspace is the tenant ("" for a whole tier).
	Workspace string
	Tier      string
	Counts    Counts
	// Burn is (1 - up/probes) / (1 - objective).
	Burn float64
}

// AvailabilityBurning lists the tiers and tenants whose burn rate over the
// window ending at now is at least threshold against objective (e.g.
// 0.995), among those with at least minProbes probes in it: tiers first
// (by tier), then tenants (fastest burn first, then workspace). With the
// SRE workbook's fast-burn pair, a tenant burning 14.4 over 1h and over
// 5m is paging-worthy: call it once per window and intersect. window is
// at most 31 days.
func (s *Store) AvailabilityBurning(ctx context.Context, now time.Time, window time.Duration, objective, threshold float64, minProbes int64) ([]Burning, error) {
	if objective <= 0 || objective >= 1 {
		return nil, fmt.Errorf("availability burning: objective %v is not in (0, 1)", objective)
	}
	if window < time.Minute || window > (AvailabilityKeepDays+1)*24*time.Hour {
		return nil, fmt.Errorf("availability burning: window %v is not within 1m and %dd", window, AvailabilityKeepDays+1)
	}
	windows := []time.Duration{window}
	sums, args := windowSums(windows, now, 2)
	tenantQ := strings.NewReplacer("{{sums}}", sums, "{{where}}", "").Replace(tenantWindowsSQL)
	rows, err := s.pool.Query(ctx, `WITH t(workspace, tier, p0, u0) AS (`+tenantQ+`)
		SELECT '', tier, sum(p0)::bigint, sum(u0)::bigint FROM t GROUP BY tier
		UNION ALL SELECT workspace, tier, p0, u0 FROM t`, append([]any{oldest(windows, now)}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("availability burning: %w", err)
	}
	defer rows.Close()
	var out []Burning
	for rows.Next() {
		var b Burning
		if err := rows.Scan(&b.Workspace, &b.Tier, &b.Counts.Probes, &b.Counts.Up); err != nil {
			return nil, fmt.Errorf("availability burning: %w", err)
		}
		if b.Counts.Probes < minProbes || b.Counts.Probes == 0 {
			continue
		}
		b.Burn = (1 - float64(b.Counts.Up)/float64(b.Counts.Probes)) / (1 - objective)
		if b.Burn >= threshold {
			out = append(out, b)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("availability burning: %w", err)
	}
	slices.SortStableFunc(out, func(a, b Burning) int {
		switch {
		case (a.Workspace == "") != (b.Workspace == ""):
			if a.Workspace == "" {
				return -1
			}
			return 1
		case a.Workspace == "":
			return strings.Compare(a.Tier, b.Tier)
		case a.Burn != b.Burn:
			if a.Burn > b.Burn {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Workspace, b.Workspace)
	})
	return out, nil
}
