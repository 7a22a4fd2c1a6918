package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// The agents channel (agentsChannel) carries "m <droplet> <version>" (a
// manifest committed: StoreManifests), "a <droplet>" (an enrollment or a
// spare's move: cached credentials of the droplet are dropped), and, from
// the agents table's trigger (migration 0011), "k <droplet> <hex sha256>"
// (a credential became valid) and "r <droplet> <hex sha256>" (one was
// revoked, replaced or deleted).

// Agent is an enrolled droplet's agent, found by its credential.
type Agent struct {
	Droplet   int64
	Workspace string
	// LastHeartbeatSeq is the highest heartbeat sequence number written.
	LastHeartbeatSeq int64
	// Pending: the credential is the agent's next one (a secret rotation
	// re-enrolled it and it was not used yet; PromoteCredential).
	Pending bool
}

// AgentByCredential finds the agent whose valid (not revoked) credential
// has the SHA-256 credHash (false: none): its credential, or the next one
// a secret rotation re-enrolled (Pending).
func (s *Store) AgentByCredential(ctx context.Context, credHash [32]byte) (Agent, bool, error) {
	var a Agent
	err := s.pool.QueryRow(ctx, `SELECT droplet_id, workspace, last_heartbeat_seq, false FROM agents WHERE credential_hash = $1 AND revoked_at IS NULL
		UNION ALL SELECT droplet_id, workspace, last_heartbeat_seq, true FROM agents WHERE next_credential_hash = $1 AND revoked_at IS NULL
		LIMIT 1`, credHash[:]).
		Scan(&a.Droplet, &a.Workspace, &a.LastHeartbeatSeq, &a.Pending)
	if errors.Is(err, pgx.ErrNoRows) {
		return Agent{}, false, nil
	}
	if err != nil {
		return Agent{}, false, err
	}
	return a, true, nil
}

// CredentialPrefixes returns the first 8 bytes (big-endian) of the SHA-256
// of every valid agent credential (next ones of secret rotations too).
func (s *Store) CredentialPrefixes(ctx context.Context) ([]uint64, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) + count(next_credential_hash) FROM agents WHERE revoked_at IS NULL`).Scan(&n); err != nil {
		return nil, fmt.Errorf("count valid credentials: %w", err)
	}
	keys := make([]uint64, 0, n)
	rows, err := s.pool.Query(ctx, `SELECT substring(credential_hash FROM 1 FOR 8) FROM agents WHERE revoked_at IS NULL
		UNION ALL SELECT substring(next_credential_hash FROM 1 FOR 8) FROM agents WHERE revoked_at IS NULL AND next_credential_hash IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("load valid credentials: %w", err)
	}
	var prefix []byte
	_, err = pgx.ForEachRow(rows, []any{&prefix}, func() error {
		if len(prefix) != 8 {
			return fmt.Errorf("credential hash prefix of %d bytes", len(prefix))
		}
		keys = append(keys, binary.BigEndian.Uint64(prefix))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load valid credentials: %w", err)
	}
	return keys, nil
}

// ListenAgents follows the agents channel on a dedicated connection (not
// the pool's) until ctx ends or the connection fails, and returns why.
// Once LISTEN is in place it calls ready (an error ends the session), then
// handle with each payload (see the agents channel above for what they say); handle
// runs on ListenAgents' goroutine.
func (s *Store) ListenAgents(ctx context.Context, ready func() error, handle func(payload string)) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+agentsChannel); err != nil {
		return err
	}
	if err := ready(); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		handle(n.Payload)
	}
}
