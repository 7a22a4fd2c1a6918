package store

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// Enrollment: a droplet's user data carries a one-time provisioning token
// (enrollment_tokens holds its SHA-256, the workspace and droplet name it
// is for, and, once the executor recorded the create, the droplet id it is
// bound to). The agent trades it for a credential: the token is consumed
// and the agent recorded (agents) in one transaction, which Tx's methods
// run.

// AddToken stores a provisioning token's hash for the droplet named
// dropletName of workspace, valid from created until expires.
func (s *Store) AddToken(ctx context.Context, tokenHash [32]byte, workspace, dropletName string, created, expires time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO enrollment_tokens (token_hash, workspace, droplet_name, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5)`, tokenHash[:], workspace, dropletName, created, expires)
	return err
}

// PruneTokens deletes the provisioning tokens that expired before t.
func (s *Store) PruneTokens(ctx context.Context, t time.Time) error {
	_, err := s.pool.Exec(ctx, `DELETE FROM enrollment_tokens WHERE expires_at < $1`, t)
	return err
}

// Tx is a transaction of the agent tables: InTx makes one, its methods
// are the statements that must commit together.
type Tx struct{ tx pgx.Tx }

// InTx runs fn in a transaction, committed when fn returns nil and rolled
// back otherwise.
func (s *Store) InTx(ctx context.Context, fn func(*Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return fn(&Tx{tx: tx}) })
}

// Enrollment is an agent's claim to enroll, checked for form.
type Enrollment struct {
	TokenHash   [32]byte
	Workspace   string
	DropletName string
	Droplet     int64
	// AgeRecipient and SigningKey are the agent's keys (the recipient as
	// the agent spelt it, the ed25519 public key raw).
	AgeRecipient string
	SigningKey   []byte
	// CredentialHash is the SHA-256 of the credential the agent gets.
	CredentialHash [32]byte
}

// ConsumeToken marks e's token used by e's droplet at now, if it is
// unused, unexpired, and for e's workspace, droplet name and (bound)
// droplet. false: it is not (Token tells why).
func (t *Tx) ConsumeToken(ctx context.Context, e Enrollment, now time.Time) (bool, error) {
	tag, err := t.tx.Exec(ctx, `UPDATE enrollment_tokens SET used_at = $2, used_by = $3
			WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 AND workspace = $4 AND droplet_name = $5 AND droplet_id = $3`,
		e.TokenHash[:], now, e.Droplet, e.Workspace, e.DropletName)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() > 0, nil
}

// Token is a provisioning token as stored.
type Token struct {
	Workspace   string
	DropletName string
	// Bound is the droplet the token is bound to, UsedBy the one that
	// used it (0: none).
	Bound, UsedBy int64
	Used, Expired bool
}

// Token reads the token with hash h as of now (false: unknown).
func (t *Tx) Token(ctx context.Context, h [32]byte, now time.Time) (Token, bool, error) {
	var tok Token
	err := t.tx.QueryRow(ctx, `SELECT workspace, droplet_name, coalesce(droplet_id, 0), coalesce(used_by, 0), used_at IS NOT NULL, expires_at <= $2
		FROM enrollment_tokens WHERE token_hash = $1`, h[:], now).Scan(&tok.Workspace, &tok.DropletName, &tok.Bound, &tok.UsedBy, &tok.Used, &tok.Expired)
	if errors.Is(err, pgx.ErrNoRows) {
		return Token{}, false, nil
	}
	return tok, err == nil, err
}

// HasCredential reports whether droplet is enrolled for workspace with the
// credential whose hash is credHash, not revoked.
func (t *Tx) HasCredential(ctx context.Context, droplet int64, workspace string, credHash [32]byte) (bool, error) {
	var same bool
	err := t.tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM agents WHERE droplet_id = $1 AND workspace = $2 AND credential_hash = $3 AND revoked_at IS NULL)`,
		droplet, workspace, credHash[:]).Scan(&same)
	return same, err
}

// Refusals of RecordAgent.
var (
	// ErrDropletTaken: the droplet is enrolled for another workspace.
	ErrDropletTaken = errors.New("droplet enrolled for another workspace")
	// ErrDropletRevoked: the droplet's agent was revoked (its droplet
	// destroyed or replaced).
	ErrDropletRevoked = errors.New("droplet revoked")
)

// RecordAgent records e's agent (enrolled at now), or its new keys and
// credential when the droplet enrolled before (its heartbeat sequence
// starts again). Manifest versions continue from the workspace's highest,
// so an agent woken from a snapshot never sees its version go down.
func (t *Tx) RecordAgent(ctx context.Context, e Enrollment, now time.Time) error {
	var ok bool
	err := t.tx.QueryRow(ctx, `INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash, enrolled_at, manifest_version)
			VALUES ($1, $2::text, $3, $4, $5, $6, (SELECT coalesce(max(manifest_version), 0) FROM agents WHERE workspace = $2::text))
			ON CONFLICT (droplet_id) DO UPDATE SET age_recipient = EXCLUDED.age_recipient, ed25519_public_key = EXCLUDED.ed25519_public_key,
				credential_hash = EXCLUDED.credential_hash, enrolled_at = EXCLUDED.enrolled_at, last_heartbeat_seq = 0
			WHERE agents.workspace = EXCLUDED.workspace
			RETURNING true`, e.Droplet, e.Workspace, e.AgeRecipient, e.SigningKey, e.CredentialHash[:], now).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrDropletTaken
	}
	if pe, ok := errors.AsType[*pgconn.PgError](err); ok && pe.ConstraintName == "agents_revoked_check" {
		return ErrDropletRevoked
	}
	return err
}

// MarkEnrolled moves workspace's status to ENROLLED when it records
// droplet and is before enrollment (lifecycle.BeforeEnrollment).
func (t *Tx) MarkEnrolled(ctx context.Context, workspace string, droplet int64) error {
	_, err := t.tx.Exec(ctx, `UPDATE fleet_status SET state = $3, state_since = now(), updated_at = now()
			WHERE workspace = $1 AND droplet_id = $2 AND state = ANY($4)`, workspace, droplet, lifecycle.Enrolled, lifecycle.Strings(lifecycle.BeforeEnrollment()))
	return err
}

// NotifyEnrolled announces droplet's enrollment on the agents channel
// ("a <droplet>") when the transaction commits.
func (t *Tx) NotifyEnrolled(ctx context.Context, droplet string) error {
	_, err := t.tx.Exec(ctx, `SELECT pg_notify($1, $2)`, agentsChannel, "a "+droplet)
	return err
}
