package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNoRollout means no rollout has that id.
var ErrNoRollout = errors.New("no such rollout")

// ErrRolloutMoved means the rollout's state or wave changed since it was
// read (a person paused it, another replica moved it): read it again.
var ErrRolloutMoved = errors.New("rollout changed since it was read")

// Rollout is one row of rollouts (migrations/0017_rollouts.sql).
type Rollout struct {
	ID          string `json:"id"`
	Seq         int64  `json:"seq"`
	Commit      string `json:"commit,omitempty"`
	Correlation string `json:"correlation_id,omitempty"`
	// Baseline and Target are input digests (rollout_inputs).
	Baseline string        `json:"baseline"`
	Target   string        `json:"target"`
	Waves    []RolloutWave `json:"waves"`
	Policy   RolloutPolicy `json:"policy"`
	State    string        `json:"state"`
	Wave     int           `json:"wave"`
	// WaveStartedAt is when the current wave started; BakingSince when
	// all its members had applied (nil: not yet).
	WaveStartedAt  *time.Time `json:"wave_started_at,omitempty"`
	BakingSince    *time.Time `json:"baking_since,omitempty"`
	AckedFailures  int        `json:"acked_failures"`
	Reason         string     `json:"reason,omitempty"`
	SupersededBy   string     `json:"superseded_by,omitempty"`
	LastProgressAt time.Time  `json:"last_progress_at"`
	CreatedAt      time.Time  `json:"created_at"`
	UpdatedAt      time.Time  `json:"updated_at"`
	FinishedAt     *time.Time `json:"finished_at,omitempty"`
}

// RolloutWave is one resolved wave as stored.
type RolloutWave struct {
	Name           string  `json:"name"`
	Size           int     `json:"size"`
	BakeSeconds    float64 `json:"bake_seconds"`
	MaxUnavailable int     `json:"max_unavailable"`
	FailureBudget  int     `json:"failure_budget"`
}

// RolloutPolicy is the part of spec.rollout a rollout keeps from the
// commit that started it (a later edit of the policy is a later rollout's).
type RolloutPolicy struct {
	OnFailure               string          `json:"on_failure"`
	ProgressDeadlineSeconds float64         `json:"progress_deadline_seconds"`
	Windows                 json.RawMessage `json:"maintenance_windows,omitempty"`
}

// RolloutMember is a tenant's place in a new rollout.
type RolloutMember struct {
	Workspace string
	Wave      int
	From      string // "" the baseline
	// Unaffected: the change does not alter this tenant's manifest; it is
	// released and settled (skipped) from the start.
	Unaffected bool
}

// MemberStatus is one member of a wave with what its droplet reports.
type MemberStatus struct {
	Workspace string
	Released  *time.Time
	Applied   *time.Time
	Failed    *time.Time
	Skipped   bool
	Reason    string
	// State and Health are fleet_status's ("" no row).
	State, Health string
	// AppliedTarget: the manifest the droplet reports applied was
	// rendered from the rollout's target.
	AppliedTarget bool
	// Rejected is the agent's reason when it gave up on a manifest of the
	// target ("" none).
	Rejected string
}

// RolloutUpdate is what one executor step writes: the members it moved
// and the rollout's new state. The write happens only while the rollout
// is still in ExpectState at ExpectWave.
type RolloutUpdate struct {
	// Now stamps the members and the rollout (the executor's clock).
	Now         time.Time
	ExpectState string
	ExpectWave  int

	Release []string
	Applied []string
	Skipped []string
	Failed  map[string]string // workspace: reason

	State         string
	Wave          int
	WaveStartedAt *time.Time
	BakingSince   *time.Time
	AckedFailures int
	Reason        string
	Progress      bool // something moved: last_progress_at = now
	Finished      bool
}

const rolloutCols = `id, seq, coalesce(commit, ''), coalesce(correlation, ''), baseline, target, waves, policy, state, wave,
	wave_started_at, baking_since, acked_failures, reason, coalesce(superseded_by, ''), last_progress_at, created_at, updated_at, finished_at`

func scanRollout(row pgx.Row) (Rollout, error) {
	var r Rollout
	var waves, policy []byte
	err := row.Scan(&r.ID, &r.Seq, &r.Commit, &r.Correlation, &r.Baseline, &r.Target, &waves, &policy, &r.State, &r.Wave,
		&r.WaveStartedAt, &r.BakingSince, &r.AckedFailures, &r.Reason, &r.SupersededBy, &r.LastProgressAt, &r.CreatedAt, &r.UpdatedAt, &r.FinishedAt)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(waves, &r.Waves); err != nil {
		return r, fmt.Errorf("rollout %s waves: %w", r.ID, err)
	}
	if err := json.Unmarshal(policy, &r.Policy); err != nil {
		return r, fmt.Errorf("rollout %s policy: %w", r.ID, err)
	}
	return r, nil
}

// PutRolloutInputs keeps body under digest (once: the content of a digest
// never changes).
func (s *Store) PutRolloutInputs(ctx context.Context, digest string, body []byte) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO rollout_inputs (digest, body) VALUES ($1, $2) ON CONFLICT (digest) DO NOTHING`, digest, body)
	return err
}

// RolloutInputs reads the inputs stored under digest.
func (s *Store) RolloutInputs(ctx context.Context, digest string) ([]byte, error) {
	var body []byte
	err := s.pool.QueryRow(ctx, `SELECT body FROM rollout_inputs WHERE digest = $1`, digest).Scan(&body)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("rollout inputs %s: not stored", digest)
	}
	return body, err
}

// LatestRollout is the newest rollout (false: there is none).
func (s *Store) LatestRollout(ctx context.Context) (Rollout, bool, error) {
	r, err := scanRollout(s.pool.QueryRow(ctx, `SELECT `+rolloutCols+` FROM rollouts ORDER BY seq DESC LIMIT 1`))
	if errors.Is(err, pgx.ErrNoRows) {
		return Rollout{}, false, nil
	}
	return r, err == nil, err
}

// RolloutByID reads one rollout (ErrNoRollout: none has that id).
func (s *Store) RolloutByID(ctx context.Context, id string) (Rollout, error) {
	r, err := scanRollout(s.pool.QueryRow(ctx, `SELECT `+rolloutCols+` FROM rollouts WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Rollout{}, ErrNoRollout
	}
	return r, err
}

// ListRollouts lists the newest rollouts first, at most limit.
func (s *Store) ListRollouts(ctx context.Context, limit int) ([]Rollout, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+rolloutCols+` FROM rollouts ORDER BY seq DESC LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Rollout
	for rows.Next() {
		r, err := scanRollout(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// RolloutMemberPos is a member as the next rollout needs it.
type RolloutMemberPos struct {
	Workspace string
	Released  bool
	From      string
}

// RolloutMembers lists a rollout's members.
func (s *Store) RolloutMembers(ctx context.Context, id string) ([]RolloutMemberPos, error) {
	rows, err := s.pool.Query(ctx, `SELECT workspace, released_at IS NOT NULL, coalesce(from_inputs, '') FROM rollout_members WHERE rollout_id = $1`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RolloutMemberPos
	for rows.Next() {
		var m RolloutMemberPos
		if err := rows.Scan(&m.Workspace, &m.Released, &m.From); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// CreateRollout stores r (state, waves, policy as given) with its members
// and marks every older rollout that is not yet superseded as superseded
// by it (an open one also ends: state superseded). It is a leader's write:
// under ctx's epoch, in one transaction, so a crash leaves either the old
// rollout current or the new one.
func (s *Store) CreateRollout(ctx context.Context, r Rollout, members []RolloutMember) error {
	waves, err := json.Marshal(r.Waves)
	if err != nil {
		return err
	}
	policy, err := json.Marshal(r.Policy)
	if err != nil {
		return err
	}
	wss, waveIdx, froms := make([]string, len(members)), make([]int32, len(members)), make([]string, len(members))
	settled := make([]bool, len(members))
	for i, m := range members {
		wss[i], waveIdx[i], froms[i], settled[i] = m.Workspace, int32(m.Wave), m.From, m.Unaffected
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkEpoch(ctx, tx); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO rollouts (id, commit, correlation, baseline, target, waves, policy, state, wave, wave_started_at, reason, finished_at)
			VALUES ($1, nullif($2, ''), nullif($3, ''), $4, $5, $6, $7, $8, 0, $9, $10, $11)`,
			r.ID, r.Commit, r.Correlation, r.Baseline, r.Target, waves, policy, r.State, r.WaveStartedAt, r.Reason, r.FinishedAt); err != nil {
			return fmt.Errorf("insert rollout %s: %w", r.ID, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE rollouts SET superseded_by = $1, updated_at = now(),
			state = CASE WHEN state IN ('running', 'paused') THEN 'superseded' ELSE state END,
			finished_at = coalesce(finished_at, now())
			WHERE superseded_by IS NULL AND id <> $1`, r.ID); err != nil {
			return err
		}
		if len(members) > 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO rollout_members (rollout_id, workspace, wave, from_inputs, released_at, applied_at, skipped, reason)
				SELECT $1, m.ws, m.wave, nullif(m.from_inputs, ''),
					CASE WHEN m.settled THEN $6::timestamptz END, CASE WHEN m.settled THEN $6::timestamptz END,
					m.settled, CASE WHEN m.settled THEN 'not affected by the change' ELSE '' END
				FROM unnest($2::text[], $3::int[], $4::text[], $5::boolean[]) AS m(ws, wave, from_inputs, settled)`,
				r.ID, wss, waveIdx, froms, settled, r.CreatedAt); err != nil {
				return fmt.Errorf("insert rollout %s members: %w", r.ID, err)
			}
		}
		return nil
	})
}

// waveStatusSQL reads the members of one wave with their droplets'
// lifecycle and health, whether the manifest each reports applied was
// rendered from the target, and an agent's rejection of such a manifest.
const waveStatusSQL = `SELECT rm.workspace, rm.released_at, rm.applied_at, rm.failed_at, rm.skipped, rm.reason,
	coalesce(f.state, ''), coalesce(f.health, ''), coalesce(am.fleet_inputs = r.target, false), coalesce(rj.reason, '')
FROM rollout_members rm JOIN rollouts r ON r.id = rm.rollout_id
LEFT JOIN fleet_status f ON f.workspace = rm.workspace
LEFT JOIN manifests am ON am.droplet_id = f.droplet_id AND am.version = f.manifest_version_applied
LEFT JOIN LATERAL (
	SELECT (e->>'part') || ' ' || coalesce(e->>'target', '') || ': ' || coalesce(e->>'reason', '') AS reason
	FROM jsonb_array_elements(CASE WHEN jsonb_typeof(f.heartbeat->'rejected') = 'array' THEN f.heartbeat->'rejected' ELSE '[]'::jsonb END) e
	JOIN manifests m2 ON m2.droplet_id = f.droplet_id
		AND m2.version = CASE WHEN (e->>'version') ~ '^[0-9]{1,18}$' THEN (e->>'version')::bigint END
	WHERE m2.fleet_inputs = r.target
	LIMIT 1) rj ON true
WHERE rm.rollout_id = $1 AND rm.wave = $2
ORDER BY rm.workspace`

// WaveStatus reads the members of wave of rollout id.
func (s *Store) WaveStatus(ctx context.Context, id string, wave int) ([]MemberStatus, error) {
	rows, err := s.pool.Query(ctx, waveStatusSQL, id, wave)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []MemberStatus
	for rows.Next() {
		var m MemberStatus
		if err := rows.Scan(&m.Workspace, &m.Released, &m.Applied, &m.Failed, &m.Skipped, &m.Reason,
			&m.State, &m.Health, &m.AppliedTarget, &m.Rejected); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// AdvanceRollout writes one executor step: in one transaction under ctx's
// epoch, only while the rollout is still in u.ExpectState at u.ExpectWave
// (else ErrRolloutMoved, nothing written). Members are only ever moved
// forward (released, then applied, skipped or failed), never back.
func (s *Store) AdvanceRollout(ctx context.Context, id string, u RolloutUpdate) error {
	failedWS, failedWhy := make([]string, 0, len(u.Failed)), make([]string, 0, len(u.Failed))
	for ws, why := range u.Failed {
		failedWS, failedWhy = append(failedWS, ws), append(failedWhy, why)
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkEpoch(ctx, tx); err != nil {
			return err
		}
		var state string
		var wave int
		err := tx.QueryRow(ctx, `SELECT state, wave FROM rollouts WHERE id = $1 FOR UPDATE`, id).Scan(&state, &wave)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNoRollout
		}
		if err != nil {
			return err
		}
		if state != u.ExpectState || wave != u.ExpectWave {
			return fmt.Errorf("%w: %s at wave %d, expected %s at wave %d", ErrRolloutMoved, state, wave, u.ExpectState, u.ExpectWave)
		}
		if len(u.Release) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE rollout_members SET released_at = $3
				WHERE rollout_id = $1 AND workspace = ANY($2) AND released_at IS NULL`, id, u.Release, u.Now); err != nil {
				return err
			}
		}
		if len(u.Applied) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE rollout_members SET applied_at = $3
				WHERE rollout_id = $1 AND workspace = ANY($2) AND applied_at IS NULL AND failed_at IS NULL`, id, u.Applied, u.Now); err != nil {
				return err
			}
		}
		if len(u.Skipped) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE rollout_members SET applied_at = $3, skipped = true, reason = 'not running'
				WHERE rollout_id = $1 AND workspace = ANY($2) AND applied_at IS NULL AND failed_at IS NULL`, id, u.Skipped, u.Now); err != nil {
				return err
			}
		}
		if len(failedWS) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE rollout_members m SET failed_at = $4, reason = left(f.why, 1000)
				FROM unnest($2::text[], $3::text[]) AS f(ws, why)
				WHERE m.rollout_id = $1 AND m.workspace = f.ws AND m.failed_at IS NULL`, id, failedWS, failedWhy, u.Now); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `UPDATE rollouts SET state = $2, wave = $3, wave_started_at = $4, baking_since = $5,
			acked_failures = $6, reason = $7, updated_at = now(),
			last_progress_at = CASE WHEN $8 THEN $10 ELSE last_progress_at END,
			finished_at = CASE WHEN $9 THEN $10 ELSE finished_at END
			WHERE id = $1`, id, u.State, u.Wave, u.WaveStartedAt, u.BakingSince, u.AckedFailures, u.Reason, u.Progress, u.Finished, u.Now)
		return err
	})
}

// SetRolloutState is a person's pause, resume or abort: it moves rollout
// id from one of from to state with reason, and on a resume accepts the
// current wave's failures so far (acked_failures). Not fenced: any replica
// serves the API; the leader's next step reads the new state (its own
// write in between fails with ErrRolloutMoved).
func (s *Store) SetRolloutState(ctx context.Context, id string, from []string, state, reason string) (Rollout, error) {
	r, err := scanRollout(s.pool.QueryRow(ctx, `UPDATE rollouts r SET state = $3, reason = $4, updated_at = now(),
		last_progress_at = now(),
		acked_failures = CASE WHEN $3 = 'running' THEN (SELECT count(*) FROM rollout_members m
			WHERE m.rollout_id = r.id AND m.wave = r.wave AND m.failed_at IS NOT NULL) ELSE r.acked_failures END,
		finished_at = CASE WHEN $3 IN ('running', 'paused') THEN NULL ELSE now() END
		WHERE id = $1 AND state = ANY($2)
		RETURNING `+rolloutCols, id, from, state, reason))
	if errors.Is(err, pgx.ErrNoRows) {
		cur, gerr := s.RolloutByID(ctx, id)
		if gerr != nil {
			return Rollout{}, gerr
		}
		return cur, fmt.Errorf("%w: rollout %s is %s", ErrRolloutMoved, id, cur.State)
	}
	return r, err
}

// WaveCount is one wave's members by how far they got.
type WaveCount struct {
	Wave     int `json:"wave"`
	Members  int `json:"members"`
	Released int `json:"released"`
	Applied  int `json:"applied"`
	Skipped  int `json:"skipped"`
	Failed   int `json:"failed"`
}

// MemberFailure is a failed member.
type MemberFailure struct {
	Workspace string    `json:"workspace"`
	Wave      int       `json:"wave"`
	Reason    string    `json:"reason"`
	At        time.Time `json:"at"`
}

// RolloutProgress counts each wave's members and lists up to limit failed
// ones, oldest failure first.
func (s *Store) RolloutProgress(ctx context.Context, id string, limit int) ([]WaveCount, []MemberFailure, error) {
	rows, err := s.pool.Query(ctx, `SELECT wave, count(*), count(released_at), count(applied_at) FILTER (WHERE NOT skipped),
		count(*) FILTER (WHERE skipped), count(failed_at)
		FROM rollout_members WHERE rollout_id = $1 GROUP BY wave ORDER BY wave`, id)
	if err != nil {
		return nil, nil, err
	}
	var counts []WaveCount
	for rows.Next() {
		var c WaveCount
		if err := rows.Scan(&c.Wave, &c.Members, &c.Released, &c.Applied, &c.Skipped, &c.Failed); err != nil {
			rows.Close()
			return nil, nil, err
		}
		counts = append(counts, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, err
	}
	rows, err = s.pool.Query(ctx, `SELECT workspace, wave, reason, failed_at FROM rollout_members
		WHERE rollout_id = $1 AND failed_at IS NOT NULL ORDER BY failed_at, workspace LIMIT $2`, id, limit)
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var failed []MemberFailure
	for rows.Next() {
		var f MemberFailure
		if err := rows.Scan(&f.Workspace, &f.Wave, &f.Reason, &f.At); err != nil {
			return nil, nil, err
		}
		failed = append(failed, f)
	}
	return counts, failed, rows.Err()
}
