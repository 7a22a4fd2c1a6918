package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// Heartbeat is one accepted agent heartbeat, ready for the batch statement.
type Heartbeat struct {
	Droplet   int64
	Workspace string
	Seq       int64
	At        time.Time
	// Body is the heartbeat as stored in fleet_status.heartbeat (JSON).
	Body         []byte
	Applied      int64
	Activity     *time.Time
	AgentVersion string
	// OK: the agent reports no problem (package watchdog judges).
	OK bool
}

// HeartbeatBatch is heartbeats as the batch statement takes them: one per
// droplet (the highest seq of each), in columns.
type HeartbeatBatch struct {
	droplets []int64
	wss      []string
	seqs     []int64
	ats      []time.Time
	bodies   []string
	applied  []int64
	activity []*time.Time
	versions []string
	oks      []bool
}

// NewHeartbeatBatch makes the batch of hbs, keeping the highest seq of
// each droplet.
func NewHeartbeatBatch(hbs []Heartbeat) *HeartbeatBatch {
	idx := make(map[int64]int, len(hbs))
	keep := make([]Heartbeat, 0, len(hbs))
	for _, hb := range hbs {
		if i, ok := idx[hb.Droplet]; ok {
			if hb.Seq > keep[i].Seq {
				keep[i] = hb
			}
			continue
		}
		idx[hb.Droplet] = len(keep)
		keep = append(keep, hb)
	}
	n := len(keep)
	b := &HeartbeatBatch{
		droplets: make([]int64, n),
		wss:      make([]string, n),
		seqs:     make([]int64, n),
		ats:      make([]time.Time, n),
		bodies:   make([]string, n),
		applied:  make([]int64, n),
		activity: make([]*time.Time, n),
		versions: make([]string, n),
		oks:      make([]bool, n),
	}
	for i, hb := range keep {
		b.droplets[i], b.wss[i], b.seqs[i], b.ats[i], b.bodies[i] = hb.Droplet, hb.Workspace, hb.Seq, hb.At, string(hb.Body)
		b.applied[i], b.activity[i], b.versions[i], b.oks[i] = hb.Applied, hb.Activity, hb.AgentVersion, hb.OK
	}
	return b
}

// Len is how many heartbeats the batch writes (one per droplet).
func (b *HeartbeatBatch) Len() int { return len(b.droplets) }

// heartbeatSQL writes a batch of heartbeats in one statement. A heartbeat whose
// seq does not exceed agents.last_heartbeat_seq is dropped (replicas racing
// on one droplet), and so is one of a revoked agent (queued before the
// revocation reached this replica). fleet_status is updated for the droplet
// it records, or, when it records none, only while the workspace is being
// created or woken (lifecycle.AwaitingDroplet: the new droplet may enroll
// before the action records it): a HIBERNATED, DESTROYED or PENDING row is
// never touched by an agent. The lifecycle moves only for the recorded
// droplet, by lifecycle.HeartbeatRules (rendered into the statement by
// heartbeatCase): an ok heartbeat of an agent running its latest manifest
// makes a running state ACTIVE_HEALTHY, one reporting problems makes
// ACTIVE_HEALTHY, ACTIVE_CRITICAL or REBOOTING ACTIVE_DEGRADED, a
// pre-ACTIVE droplet whose agent applied a manifest is DEPLOYING, one that
// applied none CONFIGURING. FAILED stays until a person retries it.
//
// The agents rows are locked in droplet order, then the fleet_status rows
// in workspace order ("Row-lock order" in store.go), as the sweep's
// manifests lock them: the two never deadlock.
//
// The new state is computed in the UPDATE itself, from the row it locks:
// when a concurrent Finish records the droplet between this statement's
// snapshot and its update, Postgres re-evaluates the SET and WHERE on the
// committed row, so the heartbeat moves on from what Finish wrote instead
// of writing back a state computed from the row before it.
var heartbeatSQL = strings.NewReplacer("{{state}}", strings.ReplaceAll(heartbeatCase(), "hb.", "nx."),
	"{{awaiting}}", lifecycle.SQLList(lifecycle.AwaitingDroplet())).Replace(`WITH hb AS (
	SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::timestamptz[], $5::jsonb[], $6::bigint[],
		$7::timestamptz[], $8::text[], $9::boolean[])
		AS t(droplet_id, workspace, seq, at, body, applied, activity, agent_version, ok)
), al AS (
	SELECT a.droplet_id FROM agents a JOIN hb ON a.droplet_id = hb.droplet_id
	WHERE a.workspace = hb.workspace AND a.last_heartbeat_seq < hb.seq AND a.revoked_at IS NULL
	ORDER BY a.droplet_id FOR NO KEY UPDATE OF a
), ag AS (
	UPDATE agents a SET last_heartbeat_seq = hb.seq FROM hb JOIN al ON al.droplet_id = hb.droplet_id
	WHERE a.droplet_id = hb.droplet_id AND a.workspace = hb.workspace AND a.last_heartbeat_seq < hb.seq AND a.revoked_at IS NULL
	RETURNING a.droplet_id
), nx AS (
	SELECT hb.*, f.manifest_version_applied AS old_applied
	FROM hb JOIN ag ON ag.droplet_id = hb.droplet_id
	JOIN fleet_status f ON f.workspace = hb.workspace
	WHERE f.droplet_id = hb.droplet_id OR (f.droplet_id IS NULL AND f.state IN ({{awaiting}}))
), lk AS (
	SELECT f.workspace FROM fleet_status f WHERE f.workspace IN (SELECT workspace FROM nx)
	ORDER BY f.workspace FOR NO KEY UPDATE OF f
), upd AS (
UPDATE fleet_status f SET
	last_heartbeat_at = nx.at,
	heartbeat = nx.body,
	manifest_version_applied = nx.applied,
	last_activity_at = GREATEST(f.last_activity_at, nx.activity),
	agent_version = nx.agent_version,
	n8n_version = CASE WHEN f.droplet_id IS DISTINCT FROM nx.droplet_id THEN f.n8n_version
		ELSE coalesce(nullif(nx.body->>'n8n_version', ''), f.n8n_version) END,
	health = CASE WHEN f.droplet_id IS DISTINCT FROM nx.droplet_id THEN f.health WHEN nx.ok THEN 'healthy' ELSE 'degraded' END,
	state = {{state}},
	state_since = CASE WHEN {{state}} <> f.state THEN now() ELSE f.state_since END,
	updated_at = now()
FROM nx JOIN lk ON lk.workspace = nx.workspace WHERE f.workspace = nx.workspace
	AND (f.droplet_id = nx.droplet_id OR (f.droplet_id IS NULL AND f.state IN ({{awaiting}})))
RETURNING nx.droplet_id, nx.workspace, nx.applied, nx.old_applied, nx.at
)
SELECT upd.workspace, upd.droplet_id, upd.applied,
	extract(epoch FROM upd.at - GREATEST(m.commit_at, a.enrolled_at))::float8, coalesce(m.correlation, '')
FROM upd
JOIN manifests m ON m.droplet_id = upd.droplet_id AND m.version = upd.applied
JOIN agents a ON a.droplet_id = upd.droplet_id
WHERE upd.applied > upd.old_applied`)

// heartbeatCase renders lifecycle.HeartbeatRules as the CASE that
// computes a heartbeat's new state: the table is the one in package
// lifecycle, first match wins, and a heartbeat of a droplet the workspace
// does not record (an old or a new one) moves nothing.
func heartbeatCase() string {
	var b strings.Builder
	b.WriteString("CASE\n\t\tWHEN f.droplet_id IS DISTINCT FROM hb.droplet_id THEN f.state\n")
	for _, r := range lifecycle.HeartbeatRules() {
		fmt.Fprintf(&b, "\t\tWHEN f.state IN (%s)%s THEN '%s'\n", lifecycle.SQLList(r.From), condSQL(r.When), r.To)
	}
	b.WriteString("\t\tELSE f.state\n\t\tEND")
	return b.String()
}

// condSQL is c as a condition on hb (the heartbeat) and f (its row).
func condSQL(c lifecycle.Cond) string {
	switch c {
	case lifecycle.OKCurrent:
		return " AND hb.ok AND f.manifest_version_issued > 0 AND hb.applied >= f.manifest_version_issued"
	case lifecycle.Problems:
		return " AND NOT hb.ok"
	case lifecycle.AppliedAny:
		return " AND hb.applied > 0"
	case lifecycle.Always:
		return ""
	}
	// A condition added to the lifecycle table without SQL: fail at
	// start, never render a rule that always matches.
	panic(fmt.Sprintf("heartbeat condition %d has no SQL", c))
}

// Convergence is a droplet whose heartbeat reported a newer applied
// manifest: seconds from the manifest's commit (or the agent's enrollment,
// when later) to the heartbeat (-1: unknown), and the change's correlation
// id.
type Convergence struct {
	Workspace   string
	Droplet     int64
	Version     int64
	Seconds     float64
	Correlation string
}

// WriteHeartbeats runs the batch statement once and returns the droplets
// that applied a newer manifest.
func (s *Store) WriteHeartbeats(ctx context.Context, b *HeartbeatBatch) ([]Convergence, error) {
	rows, err := s.pool.Query(ctx, heartbeatSQL, b.droplets, b.wss, b.seqs, b.ats, b.bodies, b.applied, b.activity, b.versions, b.oks)
	if err != nil {
		return nil, err
	}
	var out []Convergence
	for rows.Next() {
		var c Convergence
		var secs *float64
		if err := rows.Scan(&c.Workspace, &c.Droplet, &c.Version, &secs, &c.Correlation); err != nil {
			rows.Close()
			return nil, err
		}
		c.Seconds = -1
		if secs != nil {
			c.Seconds = *secs
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// RawHeartbeats are heartbeat rows in columns, one per workspace, for
// RawHeartbeatUpsert.
type RawHeartbeats struct {
	Workspaces    []string
	Droplets      []int64
	At            []time.Time
	Bodies        []string // JSON
	Applied       []int64
	AgentVersions []string
	OK            []bool
}

// rawUpsertSQL is RawHeartbeatUpsert's statement: one INSERT ... ON
// CONFLICT per batch.
const rawUpsertSQL = `INSERT INTO fleet_status (workspace, droplet_id, state, desired_state, last_heartbeat_at, heartbeat, manifest_version_applied, agent_version, health, updated_at)
SELECT w, d, '` + string(lifecycle.ActiveHealthy) + `', 'running', at, body, applied, v, CASE WHEN ok THEN 'healthy' ELSE 'degraded' END, now()
FROM unnest($1::text[], $2::bigint[], $3::timestamptz[], $4::jsonb[], $5::bigint[], $6::text[], $7::boolean[]) AS t(w, d, at, body, applied, v, ok)
ON CONFLICT (workspace) DO UPDATE SET last_heartbeat_at = EXCLUDED.last_heartbeat_at, heartbeat = EXCLUDED.heartbeat,
	manifest_version_applied = EXCLUDED.manifest_version_applied, agent_version = EXCLUDED.agent_version, health = EXCLUDED.health, updated_at = now()`

// RawHeartbeatUpsert is a benchmark baseline, not a way to record
// heartbeats: it writes r straight into fleet_status in one statement,
// without the agents table, the replay check or the lifecycle (rows it
// inserts are ACTIVE_HEALTHY). genesis-load measures the heartbeat path
// against it. Each workspace must appear once in r.
func (s *Store) RawHeartbeatUpsert(ctx context.Context, r RawHeartbeats) error {
	_, err := s.pool.Exec(ctx, rawUpsertSQL, r.Workspaces, r.Droplets, r.At, r.Bodies, r.Applied, r.AgentVersions, r.OK)
	return err
}

// AppliedVersions maps the droplet of every workspace whose id matches the
// LIKE pattern like to the manifest version its agent last reported
// applied (as fleet_status records it).
func (s *Store) AppliedVersions(ctx context.Context, like string) (map[int64]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT droplet_id, manifest_version_applied FROM fleet_status WHERE workspace LIKE $1`, like)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]int64{}
	for rows.Next() {
		var d, v int64
		if err := rows.Scan(&d, &v); err != nil {
			return nil, err
		}
		out[d] = v
	}
	return out, rows.Err()
}
