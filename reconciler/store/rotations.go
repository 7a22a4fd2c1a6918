package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// Secret rotations (migration 0022): an operator asks, any replica records
// the request (secret_rotations, audited), the droplet's manifest carries
// its generation and a sealed one-time token, the agent rotates its n8n and
// database secrets, re-enrolls new keys with the token (agents.next_*),
// and its first heartbeat with the new credential promotes it, revokes the
// old one and finishes the rotation.

// ErrRotationRunning means the workspace already has a rotation running.
var ErrRotationRunning = errors.New("a secret rotation is already running")

// ErrRotationBudget means the fleet-wide budget of rotation requests per
// minute is spent.
var ErrRotationBudget = errors.New("the fleet's budget of secret rotations per minute is spent")

// ErrRotationToken means a re-enrollment named no running rotation of its
// droplet (unknown, used for another droplet or generation, finished or
// expired token).
var ErrRotationToken = errors.New("the re-enrollment token is unknown, finished, expired or for another droplet")

// rotationLock is the advisory lock that serializes rotation requests
// across replicas, so the budget is exact.
const rotationLock = 0x67656e5f726f74 // "gen_rot"

// Rotation is a secret rotation as recorded.
type Rotation struct {
	Workspace  string
	Generation int64
	Droplet    int64
	State      string // running, succeeded, failed
	Step       string // requested, reenrolled, promoted
	Error      string
	Created    time.Time
	Expires    time.Time
}

// RotationRequest is what RequestRotation needs.
type RotationRequest struct {
	Workspace, Actor, Reason string
	// PerMinute is the fleet-wide budget of requests per minute.
	PerMinute int
	// TTL is how long the rotation may run before a new request replaces
	// it (its token expires then).
	TTL time.Duration
	// Seal makes the generation's token for droplet's agent: its SHA-256
	// and the token sealed to recipient. It runs inside the transaction.
	Seal func(droplet int64, recipient string, generation int64) (hash [32]byte, sealed string, err error)
}

// RequestRotation records a rotation of workspace's secrets: the next
// generation, for its current droplet's agent, with an audit entry.
// ErrUnknownTenant; ErrNotRunning (no running droplet with an enrolled
// agent); ErrRotationRunning (one runs: wrapped with its generation);
// ErrRotationBudget. A running rotation past its expiry, or for a droplet
// that is no longer the workspace's, is failed first (its next credential,
// if any, dropped: the old one never stopped working).
func (s *Store) RequestRotation(ctx context.Context, req RotationRequest) (Rotation, error) {
	var out Rotation
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(rotationLock)); err != nil {
			return err
		}
		var state string
		var droplet *int64
		err := tx.QueryRow(ctx, `SELECT state, droplet_id FROM fleet_status WHERE workspace = $1 FOR UPDATE`, req.Workspace).Scan(&state, &droplet)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrUnknownTenant
		}
		if err != nil {
			return err
		}
		if droplet == nil || !lifecycle.State(state).In(lifecycle.Watched()) {
			return fmt.Errorf("%w (lifecycle %s)", ErrNotRunning, state)
		}
		var recipient string
		err = tx.QueryRow(ctx, `SELECT age_recipient FROM agents WHERE droplet_id = $1 AND workspace = $2 AND revoked_at IS NULL`, *droplet, req.Workspace).Scan(&recipient)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w (droplet %d has no enrolled agent)", ErrNotRunning, *droplet)
		}
		if err != nil {
			return err
		}
		if err := failStale(ctx, tx, req.Workspace, *droplet); err != nil {
			return err
		}
		var running int64
		err = tx.QueryRow(ctx, `SELECT generation FROM secret_rotations WHERE workspace = $1 AND state = 'running'`, req.Workspace).Scan(&running)
		if err == nil {
			return fmt.Errorf("%w (generation %d)", ErrRotationRunning, running)
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var recent int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM secret_rotations WHERE created_at > now() - interval '1 minute'`).Scan(&recent); err != nil {
			return err
		}
		if recent >= req.PerMinute {
			return fmt.Errorf("%w (%d in the last minute, budget %d)", ErrRotationBudget, recent, req.PerMinute)
		}
		var gen int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(generation), 0) + 1 FROM secret_rotations WHERE workspace = $1`, req.Workspace).Scan(&gen); err != nil {
			return err
		}
		h, sealed, err := req.Seal(*droplet, recipient, gen)
		if err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `INSERT INTO secret_rotations (workspace, generation, droplet_id, token_hash, token_sealed, actor, reason, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
			RETURNING workspace, generation, droplet_id, state, step, created_at, expires_at`,
			req.Workspace, gen, *droplet, h[:], sealed, req.Actor, req.Reason, req.TTL.Seconds()).
			Scan(&out.Workspace, &out.Generation, &out.Droplet, &out.State, &out.Step, &out.Created, &out.Expires)
		if err != nil {
			return err
		}
		return audit(ctx, tx, req.Actor, "operator.rotate_secrets.requested", req.Workspace, 0,
			map[string]any{"reason": req.Reason, "generation": gen, "droplet_id": *droplet}, "")
	})
	if err != nil {
		return Rotation{}, fmt.Errorf("request secret rotation of %s: %w", req.Workspace, err)
	}
	return out, nil
}

// failStale fails workspace's running rotation when it expired or its
// droplet is no longer current; tx holds the workspace's row.
func failStale(ctx context.Context, tx pgx.Tx, workspace string, current int64) error {
	var gen, droplet int64
	var expired bool
	err := tx.QueryRow(ctx, `SELECT generation, droplet_id, expires_at <= now() FROM secret_rotations WHERE workspace = $1 AND state = 'running' FOR UPDATE`, workspace).
		Scan(&gen, &droplet, &expired)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	why := ""
	switch {
	case droplet != current:
		why = "the droplet was replaced"
	case expired:
		why = "expired before the agent finished"
	default:
		return nil
	}
	return finishRotation(ctx, tx, workspace, gen, droplet, "failed", why)
}

// finishRotation ends a running rotation as state (failed: its next
// credential is dropped, so only the old one works), with an audit entry.
func finishRotation(ctx context.Context, tx pgx.Tx, workspace string, gen, droplet int64, state, why string) error {
	if _, err := tx.Exec(ctx, `UPDATE secret_rotations SET state = $3, error = coalesce(nullif($4, ''), error), finished_at = now(), updated_at = now()
		WHERE workspace = $1 AND generation = $2 AND state = 'running'`, workspace, gen, state, why); err != nil {
		return err
	}
	if state == "failed" {
		if _, err := tx.Exec(ctx, `UPDATE agents SET next_credential_hash = NULL, next_age_recipient = NULL, next_ed25519_public_key = NULL
			WHERE droplet_id = $1 AND next_credential_hash IS NOT NULL`, droplet); err != nil {
			return err
		}
	}
	detail := map[string]any{"generation": gen, "droplet_id": droplet}
	if why != "" {
		detail["error"] = why
	}
	return audit(ctx, tx, "reconciler", "operator.rotate_secrets."+state, workspace, 0, detail, "")
}

// RotationOf is workspace's newest rotation (false: none was asked for).
func (s *Store) RotationOf(ctx context.Context, workspace string) (Rotation, bool, error) {
	var r Rotation
	var e *string
	err := s.pool.QueryRow(ctx, `SELECT workspace, generation, droplet_id, state, step, error, created_at, expires_at
		FROM secret_rotations WHERE workspace = $1 ORDER BY generation DESC LIMIT 1`, workspace).
		Scan(&r.Workspace, &r.Generation, &r.Droplet, &r.State, &r.Step, &e, &r.Created, &r.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return Rotation{}, false, nil
	}
	if err != nil {
		return Rotation{}, false, err
	}
	if e != nil {
		r.Error = *e
	}
	return r, true, nil
}

// Reenrollment is an agent's claim of a rotation's token for its new keys.
type Reenrollment struct {
	Droplet    int64
	Workspace  string
	TokenHash  [32]byte
	Generation int64
	// AgeRecipient and SigningKey are the new keys (canonical recipient,
	// raw ed25519 public key); CredentialHash the SHA-256 of their
	// credential.
	AgeRecipient   string
	SigningKey     []byte
	CredentialHash [32]byte
}

// Reenroll records e's new keys and credential as its agent's next ones,
// if e's token is its droplet's running rotation of that generation and
// unexpired (ErrRotationToken otherwise). Repeating it with the same keys
// changes nothing; other keys replace the next ones (the agent lost them
// before it used them). The current credential keeps working.
func (s *Store) Reenroll(ctx context.Context, e Reenrollment) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var step string
		err := tx.QueryRow(ctx, `SELECT step FROM secret_rotations
			WHERE token_hash = $1 AND state = 'running' AND droplet_id = $2 AND workspace = $3 AND generation = $4 AND expires_at > now() FOR UPDATE`,
			e.TokenHash[:], e.Droplet, e.Workspace, e.Generation).Scan(&step)
		if errors.Is(err, pgx.ErrNoRows) || step == "promoted" {
			return ErrRotationToken
		}
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `UPDATE agents SET next_credential_hash = $3, next_age_recipient = $4, next_ed25519_public_key = $5
			WHERE droplet_id = $1 AND workspace = $2 AND revoked_at IS NULL AND credential_hash <> $3`,
			e.Droplet, e.Workspace, e.CredentialHash[:], e.AgeRecipient, e.SigningKey)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrRotationToken
		}
		if step == "reenrolled" {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE secret_rotations SET step = 'reenrolled', updated_at = now() WHERE token_hash = $1`, e.TokenHash[:]); err != nil {
			return err
		}
		return audit(ctx, tx, "agent", "agent.reenrolled", e.Workspace, 0, map[string]any{"generation": e.Generation, "droplet_id": e.Droplet}, "")
	})
}

// Promotion is what PromoteCredential did.
type Promotion struct {
	// Promoted: the next credential is now the agent's (false: it was
	// not the next one any more, e.g. promoted by a concurrent request).
	Promoted bool
	// Succeeded is the generation the promotion finished (0: none).
	Succeeded int64
}

// PromoteCredential makes droplet's next credential (SHA-256 credHash, just
// used by its agent) its credential, with the next keys: the old
// credential is revoked in the same update (announced "r"), the cached
// credentials of the droplet are dropped on every replica ("a"), and the
// running rotation is marked promoted, and succeeded when done (the
// generation the agent reports done) reaches it. Audited.
func (s *Store) PromoteCredential(ctx context.Context, droplet int64, credHash [32]byte, done int64) (Promotion, error) {
	var p Promotion
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var ws string
		err := tx.QueryRow(ctx, `UPDATE agents SET credential_hash = next_credential_hash, age_recipient = next_age_recipient,
			ed25519_public_key = next_ed25519_public_key, next_credential_hash = NULL, next_age_recipient = NULL, next_ed25519_public_key = NULL
			WHERE droplet_id = $1 AND next_credential_hash = $2 AND revoked_at IS NULL RETURNING workspace`, droplet, credHash[:]).Scan(&ws)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		p.Promoted = true
		var gen int64
		err = tx.QueryRow(ctx, `UPDATE secret_rotations SET step = 'promoted', updated_at = now()
			WHERE droplet_id = $1 AND state = 'running' RETURNING generation`, droplet).Scan(&gen)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if err := audit(ctx, tx, "reconciler", "agent.credential.revoked", ws, 0,
			map[string]any{"droplet_id": droplet, "reason": "rotated: the agent used its new credential", "generation": gen}, ""); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, agentsChannel, "a "+strconv.FormatInt(droplet, 10)); err != nil {
			return err
		}
		if gen > 0 && done >= gen {
			p.Succeeded = gen
			return finishRotation(ctx, tx, ws, gen, droplet, "succeeded", "")
		}
		return nil
	})
	if err != nil {
		return Promotion{}, fmt.Errorf("promote the new credential of droplet %d: %w", droplet, err)
	}
	return p, nil
}

// ReportRotation takes a heartbeat's rotation report for droplet: a
// promoted rotation the agent reports done succeeds; the error of a
// running one is recorded (the agent retries). It returns the generation
// it finished (0: none).
func (s *Store) ReportRotation(ctx context.Context, droplet int64, done, working int64, errText string) (int64, error) {
	var finished int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var ws, step string
		var gen int64
		err := tx.QueryRow(ctx, `SELECT workspace, generation, step FROM secret_rotations WHERE droplet_id = $1 AND state = 'running' FOR UPDATE`, droplet).
			Scan(&ws, &gen, &step)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if done >= gen && step == "promoted" {
			finished = gen
			return finishRotation(ctx, tx, ws, gen, droplet, "succeeded", "")
		}
		if working == gen && errText != "" {
			_, err = tx.Exec(ctx, `UPDATE secret_rotations SET error = $2, updated_at = now() WHERE droplet_id = $1 AND state = 'running' AND error IS DISTINCT FROM $2`, droplet, errText)
		}
		return err
	})
	return finished, err
}
