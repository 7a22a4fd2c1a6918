package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// LatestManifest reads droplet's newest manifest: its version and signed
// envelope (0 and nil: none).
func (s *Store) LatestManifest(ctx context.Context, droplet int64) (int64, []byte, error) {
	var version int64
	var env []byte
	err := s.pool.QueryRow(ctx, `SELECT version, envelope FROM manifests WHERE droplet_id = $1 ORDER BY version DESC LIMIT 1`, droplet).
		Scan(&version, &env)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	return version, env, nil
}

// ManifestEnvelope reads the signed envelope of droplet's manifest version.
func (s *Store) ManifestEnvelope(ctx context.Context, droplet, version int64) ([]byte, error) {
	var env []byte
	err := s.pool.QueryRow(ctx, `SELECT envelope FROM manifests WHERE droplet_id = $1 AND version = $2`, droplet, version).Scan(&env)
	return env, err
}

// ManifestRef names one stored manifest.
type ManifestRef struct{ Droplet, Version int64 }

// ManifestEnvelopes reads the envelopes of refs in one statement, by
// droplet; a manifest that does not exist is left out.
func (s *Store) ManifestEnvelopes(ctx context.Context, refs []ManifestRef) (map[int64][]byte, error) {
	droplets, versions := make([]int64, len(refs)), make([]int64, len(refs))
	for k, r := range refs {
		droplets[k], versions[k] = r.Droplet, r.Version
	}
	rows, err := s.pool.Query(ctx, `SELECT m.droplet_id, m.envelope FROM unnest($1::bigint[], $2::bigint[]) AS r(droplet_id, version)
		JOIN manifests m ON m.droplet_id = r.droplet_id AND m.version = r.version`, droplets, versions)
	if err != nil {
		return nil, fmt.Errorf("read %d manifests: %w", len(refs), err)
	}
	out := make(map[int64][]byte, len(refs))
	for rows.Next() {
		var d int64
		var env []byte
		if err := rows.Scan(&d, &env); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read %d manifests: %w", len(refs), err)
		}
		out[d] = env
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read %d manifests: %w", len(refs), err)
	}
	return out, nil
}

// Manifest is a signed manifest to store.
type Manifest struct {
	Droplet   int64
	Version   int64
	Workspace string
	Envelope  []byte
	// Digest is the envelope's SHA-256.
	Digest            []byte
	IssuedAt, Expires time.Time
	Commit            string
	// InputsHash and CredsHash identify what the manifest and its
	// credentials were made from.
	InputsHash, CredsHash []byte
	// CommitAt and Correlation are the commit's time and the change's
	// correlation id (nil: unknown).
	CommitAt    *time.Time
	Correlation *string
	// FleetInputs is the digest of the fleet-wide inputs it was rendered
	// from (rollout.Inputs).
	FleetInputs string
}

// storeManifestsSQL stores a batch of manifests in one statement. A
// manifest is stored only if its droplet's issued version is still the
// one before it (checked under the agent row's lock, taken in droplet
// order); the rest are left out. The manifests trigger checks every
// version again. Each stored manifest raises fleet_status's issued version
// (the rows locked in workspace order, after the agents: "Row-lock order"
// in store.go) and is announced on the agents channel ("m <droplet>
// <version>").
const storeManifestsSQL = `WITH i AS (
	SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[], $5::bytea[], $6::timestamptz[], $7::timestamptz[],
		$8::text[], $9::bytea[], $10::timestamptz[], $11::text[], $12::bytea[], $13::text[])
	AS i(droplet_id, version, workspace, envelope, digest, issued_at, expires_at, commit, inputs_hash, commit_at, correlation, creds_hash, fleet_inputs)
), ok AS (
	SELECT a.droplet_id FROM agents a JOIN i ON a.droplet_id = i.droplet_id AND a.workspace = i.workspace::workspace_id
	WHERE a.manifest_version = i.version - 1
	ORDER BY a.droplet_id FOR NO KEY UPDATE OF a
), ins AS (
	INSERT INTO manifests (droplet_id, version, workspace, envelope, digest, issued_at, expires_at, commit, inputs_hash, commit_at, correlation, creds_hash, fleet_inputs)
	SELECT i.droplet_id, i.version, i.workspace, i.envelope, i.digest, i.issued_at, i.expires_at, i.commit, i.inputs_hash, i.commit_at, i.correlation, i.creds_hash, nullif(i.fleet_inputs, '')
	FROM i JOIN ok USING (droplet_id)
	RETURNING droplet_id, workspace, version
), lk AS (
	SELECT f.workspace FROM fleet_status f WHERE f.workspace IN (SELECT workspace FROM ins)
	ORDER BY f.workspace FOR NO KEY UPDATE OF f
), fs AS (
	UPDATE fleet_status f SET manifest_version_issued = GREATEST(f.manifest_version_issued, ins.version), updated_at = now()
	FROM ins JOIN lk ON lk.workspace = ins.workspace WHERE f.workspace = ins.workspace
)
SELECT droplet_id, pg_notify('` + agentsChannel + `', 'm ' || droplet_id || ' ' || version) FROM ins`

// StoreManifests stores ms in one statement and reports which were stored
// (a manifest is left out when its droplet was issued another version
// since it was prepared).
func (s *Store) StoreManifests(ctx context.Context, ms []Manifest) ([]bool, error) {
	n := len(ms)
	var (
		droplets, versions = make([]int64, n), make([]int64, n)
		workspaces         = make([]string, n)
		envs, digests      = make([][]byte, n), make([][]byte, n)
		issued, expires    = make([]time.Time, n), make([]time.Time, n)
		commits            = make([]string, n)
		inputs, creds      = make([][]byte, n), make([][]byte, n)
		commitAt           = make([]*time.Time, n)
		correlation        = make([]*string, n)
		fleetInputs        = make([]string, n)
	)
	for k, m := range ms {
		droplets[k], versions[k], workspaces[k] = m.Droplet, m.Version, m.Workspace
		envs[k], digests[k] = m.Envelope, m.Digest
		issued[k], expires[k] = m.IssuedAt, m.Expires
		commits[k] = m.Commit
		inputs[k], creds[k] = m.InputsHash, m.CredsHash
		commitAt[k], correlation[k] = m.CommitAt, m.Correlation
		fleetInputs[k] = m.FleetInputs
	}
	rows, err := s.pool.Query(ctx, storeManifestsSQL, droplets, versions, workspaces, envs, digests, issued, expires, commits, inputs, commitAt, correlation, creds, fleetInputs)
	if err != nil {
		return nil, fmt.Errorf("store %d manifests: %w", n, err)
	}
	got := map[int64]bool{}
	for rows.Next() {
		var d int64
		var notified any
		if err := rows.Scan(&d, &notified); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store %d manifests: %w", n, err)
		}
		got[d] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store %d manifests: %w", n, err)
	}
	out := make([]bool, n)
	for k, m := range ms {
		out[k] = got[m.Droplet]
	}
	return out, nil
}

// Target is a droplet to render a manifest for: the newest enrolled agent
// of a workspace, with what its last manifest was made from.
type Target struct {
	Droplet   int64
	Workspace string
	Recipient string
	IP        string // "" until fleet_status records this droplet's address
	State     string // fleet_status lifecycle
	HWM       int64  // agents.manifest_version: the highest version issued
	Version   int64  // of its newest manifest (0: none)
	Expires   time.Time
	Inputs    []byte
	Creds     []byte // creds_hash of its newest manifest (nil: unknown)
	// BackupAsked is when an operator asked for a backup now (zero: no
	// request, or a good backup started since).
	BackupAsked time.Time
	// Restore is the backup this droplet is asked to restore ("" none):
	// a backup_restores row not finished, for the droplet fleet_status
	// records.
	Restore string
	// Rollout is where the newest rollout has the workspace (zero: there
	// is no rollout).
	Rollout RolloutPos
	// RotateGeneration and RotateToken are the droplet's running secret
	// rotation (0 and "": none): its generation and its token sealed to
	// the droplet.
	RotateGeneration int64
	RotateToken      string
}

// RolloutPos is a workspace's place in the newest rollout.
type RolloutPos struct {
	ID, State        string
	Baseline, Target string // input digests
	// Member: the workspace is in the rollout; Released: its wave released
	// it; From: the inputs it had before ("" the baseline).
	Member, Released bool
	From             string
}

// targetsSQL lists the newest agent of each workspace (a droplet woken
// from a snapshot enrolls again, so the newest enrollment is the live
// droplet) with its newest manifest.
const targetsSQL = `SELECT DISTINCT ON (a.workspace) a.droplet_id, a.workspace, a.age_recipient,
	CASE WHEN f.droplet_id = a.droplet_id THEN coalesce(host(f.ip), '') ELSE '' END, f.state, a.manifest_version,
	coalesce(m.version, 0), coalesce(m.expires_at, 'epoch'), m.inputs_hash, m.creds_hash, coalesce(r.backup_id, ''),
	CASE WHEN NOT EXISTS (SELECT 1 FROM backups b WHERE b.workspace = a.workspace AND b.state = 'good'
		AND b.started_at >= f.backup_requested_at) THEN f.backup_requested_at END,
	coalesce(ro.id, ''), coalesce(ro.state, ''), coalesce(ro.baseline, ''), coalesce(ro.target, ''),
	rm.workspace IS NOT NULL, rm.released_at IS NOT NULL, coalesce(rm.from_inputs, ''),
	coalesce(sr.generation, 0), coalesce(sr.token_sealed, '')
FROM agents a JOIN fleet_status f ON f.workspace = a.workspace
LEFT JOIN secret_rotations sr ON sr.droplet_id = a.droplet_id AND sr.state = 'running' AND sr.step <> 'promoted' 
LEFT JOIN LATERAL (SELECT id, state, baseline, target FROM rollouts ORDER BY seq DESC LIMIT 1) ro ON true
LEFT JOIN rollout_members rm ON rm.rollout_id = ro.id AND rm.workspace = a.workspace
LEFT JOIN backup_restores r ON r.workspace = a.workspace AND r.finished_at IS NULL
	AND r.droplet_name = CASE WHEN f.droplet_id = a.droplet_id THEN f.droplet_name END
LEFT JOIN LATERAL (SELECT version, expires_at, inputs_hash, creds_hash FROM manifests
	WHERE droplet_id = a.droplet_id ORDER BY version DESC LIMIT 1) m ON true`

// targets runs targetsSQL with the condition where (on agents a and
// fleet_status f).
func (s *Store) targets(ctx context.Context, where string, args ...any) ([]Target, error) {
	return s.targetsQuery(ctx, targetsSQL+" WHERE "+where+" ORDER BY a.workspace, a.enrolled_at DESC", args...)
}

func (s *Store) targetsQuery(ctx context.Context, query string, args ...any) ([]Target, error) {
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Target
	for rows.Next() {
		var t Target
		var asked *time.Time
		if err := rows.Scan(&t.Droplet, &t.Workspace, &t.Recipient, &t.IP, &t.State, &t.HWM, &t.Version, &t.Expires, &t.Inputs, &t.Creds, &t.Restore, &asked,
			&t.Rollout.ID, &t.Rollout.State, &t.Rollout.Baseline, &t.Rollout.Target, &t.Rollout.Member, &t.Rollout.Released, &t.Rollout.From,
			&t.RotateGeneration, &t.RotateToken); err != nil {
			return nil, err
		}
		if asked != nil {
			t.BackupAsked = asked.UTC()
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// first is ts's first target (false: none).
func first(ts []Target, err error) (Target, bool, error) {
	if err != nil || len(ts) == 0 {
		return Target{}, false, err
	}
	return ts[0], true, nil
}

// LiveTarget is workspace's live droplet, its newest enrolled agent
// (false: no agent enrolled).
func (s *Store) LiveTarget(ctx context.Context, workspace string) (Target, bool, error) {
	return first(s.targets(ctx, `a.workspace = $1`, workspace))
}

// LiveTargetOf is the live droplet of droplet's workspace (false: droplet
// never enrolled).
func (s *Store) LiveTargetOf(ctx context.Context, droplet int64) (Target, bool, error) {
	return first(s.targets(ctx, `a.workspace = (SELECT workspace FROM agents WHERE droplet_id = $1)`, droplet))
}

// SweepTargets lists the live droplet of every workspace whose state
// takes manifests (not lifecycle.NoManifest).
func (s *Store) SweepTargets(ctx context.Context) ([]Target, error) {
	return s.targets(ctx, `f.state NOT IN (`+lifecycle.SQLList(lifecycle.NoManifest())+`)`)
}

// SweepTargetsAfter is one page of SweepTargets: at most limit workspaces
// sorted after the workspace after ("": from the first). A sweep walks the
// fleet page by page so it never holds every target at once.
func (s *Store) SweepTargetsAfter(ctx context.Context, after string, limit int) ([]Target, error) {
	return s.targetsQuery(ctx, targetsSQL+` WHERE f.state NOT IN (`+lifecycle.SQLList(lifecycle.NoManifest())+`) AND a.workspace > $1`+
		` ORDER BY a.workspace, a.enrolled_at DESC LIMIT $2`, after, limit)
}
