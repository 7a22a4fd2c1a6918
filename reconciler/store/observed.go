package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// Observation is the leader's last observation as stored in the observation
// table (migration 0012): every replica serves it as GET /v1/observed.
type Observation struct {
	// JSON is plan.Observed as JSON (an object).
	JSON []byte
	// Digest is the SHA-256 of JSON.
	Digest [32]byte
	At     time.Time
	// Leader is the observing replica's id; Epoch its lease epoch (0 when
	// unknown).
	Leader   string
	Epoch    int64
	Complete bool
	Droplets int
}

// replicaID is the form of a replica id (the observation table's check).
var replicaID = regexp.MustCompile(`^[A-Za-z0-9._:/@-]{1,128}$`)

// CheckReplicaID refuses a replica id the observation table would not take.
func CheckReplicaID(id string) error {
	if !replicaID.MatchString(id) {
		return fmt.Errorf("replica id %q: want 1-128 of A-Z a-z 0-9 . _ : / @ -", id)
	}
	return nil
}

// TouchObservation moves the stored observation's time and leader to at,
// leader and epoch when its digest is digest, without rewriting the
// observation itself. It reports false when no row has that digest (none
// stored, or another one): then SaveObservation is needed.
func (s *Store) TouchObservation(ctx context.Context, digest [32]byte, at time.Time, leader string, epoch int64) (bool, error) {
	tag, err := s.pool.Exec(ctx, `UPDATE observation SET observed_at = $2, leader = $3, leader_epoch = $4, written_at = now()
		WHERE singleton AND digest = $1`, digest[:], at, leader, nullIfZero64(epoch))
	if err != nil {
		return false, fmt.Errorf("touch observation: %w", err)
	}
	return tag.RowsAffected() == 1, nil
}

// SaveObservation stores o as the last observation (one row, upserted) and
// announces it on EventChannel in the same transaction.
func (s *Store) SaveObservation(ctx context.Context, o Observation) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO observation (singleton, observed, digest, observed_at, leader, leader_epoch, complete, droplets)
			VALUES (true, $1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (singleton) DO UPDATE SET observed = EXCLUDED.observed, digest = EXCLUDED.digest, observed_at = EXCLUDED.observed_at,
				leader = EXCLUDED.leader, leader_epoch = EXCLUDED.leader_epoch, complete = EXCLUDED.complete, droplets = EXCLUDED.droplets,
				written_at = now()`,
			string(o.JSON), o.Digest[:], o.At, o.Leader, nullIfZero64(o.Epoch), o.Complete, o.Droplets)
		if err != nil {
			return err
		}
		return publish(ctx, tx, Event{Kind: EventObserved})
	})
	if err != nil {
		return fmt.Errorf("save observation: %w", err)
	}
	return nil
}

// LoadObservation reads the stored observation; false when there is none.
func (s *Store) LoadObservation(ctx context.Context) (Observation, bool, error) {
	var o Observation
	var digest []byte
	var epoch *int64
	var body string
	err := s.pool.QueryRow(ctx, `SELECT observed, digest, observed_at, leader, leader_epoch, complete, droplets FROM observation WHERE singleton`).
		Scan(&body, &digest, &o.At, &o.Leader, &epoch, &o.Complete, &o.Droplets)
	if errors.Is(err, pgx.ErrNoRows) {
		return o, false, nil
	}
	if err != nil {
		return o, false, fmt.Errorf("load observation: %w", err)
	}
	o.JSON = []byte(body)
	copy(o.Digest[:], digest)
	if epoch != nil {
		o.Epoch = *epoch
	}
	return o, true, nil
}

func nullIfZero64(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}
