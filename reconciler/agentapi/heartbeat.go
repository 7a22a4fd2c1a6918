package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/watchdog"
	"genesis.dev/fleet/schema"
)

// MaxClockSkew is how far past the server's clock an agent's reported times
// may lie: a heartbeat's last_activity and sent_at later than now +
// MaxClockSkew are stored as now + MaxClockSkew. Otherwise a droplet could
// report activity in 2099 and never be hibernated for idleness. (A time in
// the past cannot lower the stored last activity: it is kept with
// GREATEST.)
const MaxClockSkew = 5 * time.Minute

// clamp returns t, or limit when t is later.
func clamp(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}

// heartbeat is one accepted heartbeat, ready for the batch statement.
type heartbeat struct {
	droplet      int64
	workspace    string
	seq          int64
	at           time.Time
	body         []byte
	applied      int64
	activity     *time.Time
	agentVersion string
	ok           bool
}

// decodeHeartbeat reads and checks a heartbeat body (outside input: fuzzed).
func decodeHeartbeat(body []byte) (schema.Heartbeat, error) {
	var hb schema.Heartbeat
	if err := schema.DecodeStrict(body, &hb); err != nil {
		return hb, fmt.Errorf("malformed heartbeat: %w", err)
	}
	switch {
	case hb.Seq <= 0:
		return hb, errors.New("seq must be positive")
	case hb.AppliedVersion < 0:
		return hb, errors.New("applied_version must not be negative")
	case len(hb.Components) > 32:
		return hb, errors.New("too many components")
	case len(hb.AgentVersion) > 100 || len(hb.N8NVersion) > 100:
		return hb, errors.New("version strings are too long")
	}
	if _, err := parseDroplet(hb.Droplet); err != nil {
		return hb, err
	}
	return hb, nil
}

func (s *Service) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	ref, err := s.authenticate(r)
	if err != nil {
		s.log.Error("authenticate failed", "err", err)
		httpError(w, http.StatusInternalServerError, "authentication unavailable")
		return
	}
	if ref == nil {
		s.m.heartbeats.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="genesis"`)
		httpError(w, http.StatusUnauthorized, "bad credential")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, schema.MaxHeartbeatSize))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			s.m.heartbeats.WithLabelValues("too_large").Inc()
			httpError(w, http.StatusRequestEntityTooLarge, "heartbeat too large")
			return
		}
		s.m.heartbeats.WithLabelValues("bad_request").Inc()
		httpError(w, http.StatusBadRequest, "read body")
		return
	}
	hb, err := decodeHeartbeat(body)
	if err != nil {
		s.m.heartbeats.WithLabelValues("bad_request").Inc()
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if hb.Workspace != ref.workspace || hb.Droplet != ref.dropletS {
		s.m.heartbeats.WithLabelValues("forbidden").Inc()
		s.log.Warn("heartbeat for another droplet refused", "tenant", ref.workspace, "droplet", ref.droplet,
			"claimed_tenant", hb.Workspace, "claimed_droplet", hb.Droplet)
		httpError(w, http.StatusForbidden, "the heartbeat names another workspace or droplet")
		return
	}
	now := s.cfg.Now()
	limit := now.Add(MaxClockSkew).UTC()
	hb.LastActivity = clamp(hb.LastActivity, limit)
	hb.SentAt = clamp(hb.SentAt, limit)
	// ok: the agent reports no problem (components, verification, apply,
	// memory and disk pressure; package watchdog judges).
	item := heartbeat{droplet: ref.droplet, workspace: ref.workspace, seq: hb.Seq, at: now, applied: hb.AppliedVersion,
		agentVersion: hb.AgentVersion, ok: len(watchdog.Problems(hb)) == 0}
	if !hb.LastActivity.IsZero() {
		t := hb.LastActivity
		item.activity = &t
	}
	// Stored normalized (re-encoded from the checked struct).
	if item.body, err = json.Marshal(hb); err != nil {
		httpError(w, http.StatusBadRequest, "heartbeat does not encode")
		return
	}
	ref.mu.Lock()
	if hb.Seq <= ref.lastSeq {
		ref.mu.Unlock()
		s.m.heartbeats.WithLabelValues("replay").Inc()
		w.WriteHeader(http.StatusAccepted)
		return
	}
	select {
	case s.queueFor(ref.droplet) <- item:
		ref.lastSeq = hb.Seq
		ref.mu.Unlock()
	default:
		ref.mu.Unlock()
		s.m.heartbeats.WithLabelValues("queue_full").Inc()
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusServiceUnavailable, "heartbeat queue full")
		return
	}
	s.m.heartbeats.WithLabelValues("queued").Inc()
	w.WriteHeader(http.StatusAccepted)
}

// queueFor is the queue of droplet's heartbeats.
func (s *Service) queueFor(droplet int64) chan heartbeat {
	return s.queues[uint64(droplet)%uint64(len(s.queues))]
}

// batcher writes the heartbeats queued on q every BatchInterval or
// BatchSize, until ctx ends; then it writes what is left.
func (s *Service) batcher(ctx context.Context, q chan heartbeat) error {
	batch := make([]heartbeat, 0, s.cfg.BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func(fctx context.Context) {
		if len(batch) == 0 {
			return
		}
		if err := s.writeBatch(fctx, batch); err != nil {
			s.m.heartbeats.WithLabelValues("dropped").Add(float64(len(batch)))
			s.log.Error("heartbeat batch lost", "heartbeats", len(batch), "err", err)
		} else {
			s.m.heartbeats.WithLabelValues("written").Add(float64(len(batch)))
		}
		batch = batch[:0]
	}
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			for {
				select {
				case hb := <-q:
					batch = append(batch, hb)
					if len(batch) >= s.cfg.BatchSize {
						s.drainFlush(flush)
					}
					continue
				default:
				}
				break
			}
			s.drainFlush(flush)
			return nil
		case hb := <-q:
			if len(batch) == 0 {
				timer.Reset(s.cfg.BatchInterval)
			}
			batch = append(batch, hb)
			if len(batch) >= s.cfg.BatchSize {
				timer.Stop()
				flush(ctx)
			}
		case <-timer.C:
			flush(ctx)
		}
	}
}

// drainFlush flushes with a short context of its own (the service is
// stopping).
func (s *Service) drainFlush(flush func(context.Context)) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	flush(ctx)
}

// batchSQL writes a batch of heartbeats in one statement. A heartbeat whose
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
// The new state is computed in the UPDATE itself, from the row it locks:
// when a concurrent Finish records the droplet between this statement's
// snapshot and its update, Postgres re-evaluates the SET and WHERE on the
// committed row, so the heartbeat moves on from what Finish wrote instead
// of writing back a state computed from the row before it.
var batchSQL = strings.NewReplacer("{{state}}", strings.ReplaceAll(heartbeatCase(), "hb.", "nx."),
	"{{awaiting}}", lifecycle.SQLList(lifecycle.AwaitingDroplet())).Replace(`WITH hb AS (
	SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::timestamptz[], $5::jsonb[], $6::bigint[],
		$7::timestamptz[], $8::text[], $9::boolean[])
		AS t(droplet_id, workspace, seq, at, body, applied, activity, agent_version, ok)
), ag AS (
	UPDATE agents a SET last_heartbeat_seq = hb.seq FROM hb
	WHERE a.droplet_id = hb.droplet_id AND a.workspace = hb.workspace AND a.last_heartbeat_seq < hb.seq AND a.revoked_at IS NULL
	RETURNING a.droplet_id
), nx AS (
	SELECT hb.*, f.manifest_version_applied AS old_applied
	FROM hb JOIN ag ON ag.droplet_id = hb.droplet_id
	JOIN fleet_status f ON f.workspace = hb.workspace
	WHERE f.droplet_id = hb.droplet_id OR (f.droplet_id IS NULL AND f.state IN ({{awaiting}}))
), upd AS (
UPDATE fleet_status f SET
	last_heartbeat_at = nx.at,
	heartbeat = nx.body,
	manifest_version_applied = nx.applied,
	last_activity_at = GREATEST(f.last_activity_at, nx.activity),
	agent_version = nx.agent_version,
	health = CASE WHEN f.droplet_id IS DISTINCT FROM nx.droplet_id THEN f.health WHEN nx.ok THEN 'healthy' ELSE 'degraded' END,
	state = {{state}},
	state_since = CASE WHEN {{state}} <> f.state THEN now() ELSE f.state_since END,
	updated_at = now()
FROM nx WHERE f.workspace = nx.workspace
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

// writeBatch writes heartbeats in one statement, keeping the highest seq
// of each droplet.
func (s *Service) writeBatch(ctx context.Context, batch []heartbeat) error {
	idx := make(map[int64]int, len(batch))
	keep := make([]heartbeat, 0, len(batch))
	for _, hb := range batch {
		if i, ok := idx[hb.droplet]; ok {
			if hb.seq > keep[i].seq {
				keep[i] = hb
			}
			continue
		}
		idx[hb.droplet] = len(keep)
		keep = append(keep, hb)
	}
	n := len(keep)
	var (
		droplets = make([]int64, n)
		wss      = make([]string, n)
		seqs     = make([]int64, n)
		ats      = make([]time.Time, n)
		bodies   = make([]string, n)
		applied  = make([]int64, n)
		activity = make([]*time.Time, n)
		versions = make([]string, n)
		oks      = make([]bool, n)
	)
	for i, hb := range keep {
		droplets[i], wss[i], seqs[i], ats[i], bodies[i] = hb.droplet, hb.workspace, hb.seq, hb.at, string(hb.body)
		applied[i], activity[i], versions[i], oks[i] = hb.applied, hb.activity, hb.agentVersion, hb.ok
	}
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		var converged []convergence
		if converged, err = s.execBatch(ctx, droplets, wss, seqs, ats, bodies, applied, activity, versions, oks); err == nil {
			s.m.batchSize.Observe(float64(len(batch)))
			for _, c := range converged {
				if c.seconds >= 0 {
					s.m.convergence.Observe(c.seconds)
				}
				s.log.Info("manifest applied", "tenant", c.workspace, "droplet", c.droplet, "version", c.version,
					"correlation_id", c.correlation, "convergence_seconds", c.seconds)
			}
			return nil
		}
	}
	return fmt.Errorf("write %d heartbeats: %w", n, err)
}

// convergence is a droplet whose heartbeat reported a newer applied
// manifest: seconds from the manifest's commit (or the agent's enrollment,
// when later) to the heartbeat, and the change's correlation id.
type convergence struct {
	workspace   string
	droplet     int64
	version     int64
	seconds     float64
	correlation string
}

// execBatch runs batchSQL and returns the droplets that applied a newer
// manifest.
func (s *Service) execBatch(ctx context.Context, args ...any) ([]convergence, error) {
	rows, err := s.pool.Query(ctx, batchSQL, args...)
	if err != nil {
		return nil, err
	}
	var out []convergence
	for rows.Next() {
		var c convergence
		var secs *float64
		if err := rows.Scan(&c.workspace, &c.droplet, &c.version, &secs, &c.correlation); err != nil {
			rows.Close()
			return nil, err
		}
		c.seconds = -1
		if secs != nil {
			c.seconds = *secs
		}
		out = append(out, c)
	}
	return out, rows.Err()
}
