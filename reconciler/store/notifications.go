package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// QueuedNotice is one notice in the outbox (notifications) for one target.
type QueuedNotice struct {
	ID       int64
	Kind     string
	Subject  string
	Target   string
	Body     json.RawMessage
	Attempts int
}

// QueueNotice puts a notice of kind about subject (a workspace, an
// account) in the outbox once per target, unless the same notice for the
// same subject and target was queued within damping (flap damping and
// deduplication: a tenant that fails, recovers and fails again within the
// window is one notice; two replicas reporting the same thing are one).
// It returns how many rows it queued.
func (s *Store) QueueNotice(ctx context.Context, kind, subject string, body any, targets []string, damping time.Duration) (int, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return 0, fmt.Errorf("queue %s notice: %w", kind, err)
	}
	queued := 0
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, target := range targets {
			key := kind + "/" + subject + "/" + target
			// One writer per key at a time: the check and the insert
			// below are one decision across replicas.
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, key); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `INSERT INTO notifications (kind, subject, target, dedup_key, body)
				SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (
					SELECT 1 FROM notifications WHERE dedup_key = $4 AND created_at > now() - $6::interval)`,
				kind, subject, target, key, data, fmt.Sprintf("%d milliseconds", damping.Milliseconds()))
			if err != nil {
				return err
			}
			queued += int(tag.RowsAffected())
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("queue %s notice about %s: %w", kind, subject, err)
	}
	return queued, nil
}

// ClaimNotices takes up to limit due notices for delivery: each is leased
// for lease (another sender, or this one after a crash, takes it again
// only once the lease ran out) and returned.
func (s *Store) ClaimNotices(ctx context.Context, limit int, lease time.Duration) ([]QueuedNotice, error) {
	rows, err := s.pool.Query(ctx, `UPDATE notifications SET next_attempt_at = now() + $2::interval
		WHERE id IN (SELECT id FROM notifications WHERE sent_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
			ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
		RETURNING id, kind, subject, target, body, attempts`, limit, fmt.Sprintf("%d milliseconds", lease.Milliseconds()))
	if err != nil {
		return nil, fmt.Errorf("claim notices: %w", err)
	}
	defer rows.Close()
	var out []QueuedNotice
	for rows.Next() {
		var n QueuedNotice
		if err := rows.Scan(&n.ID, &n.Kind, &n.Subject, &n.Target, &n.Body, &n.Attempts); err != nil {
			return nil, fmt.Errorf("claim notices: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// NoticeSent records that notice id was delivered.
func (s *Store) NoticeSent(ctx context.Context, id int64) error {
	_, err := s.pool.Exec(ctx, `UPDATE notifications SET sent_at = now(), attempts = attempts + 1, last_error = NULL WHERE id = $1`, id)
	return err
}

// NoticeFailed records a failed delivery of notice id: it is tried again
// after retry, or given up when giveUp.
func (s *Store) NoticeFailed(ctx context.Context, id int64, msg string, retry time.Duration, giveUp bool) error {
	_, err := s.pool.Exec(ctx, `UPDATE notifications SET attempts = attempts + 1, last_error = $2,
		next_attempt_at = now() + $3::interval, gave_up_at = CASE WHEN $4 THEN now() END WHERE id = $1`,
		id, msg, fmt.Sprintf("%d milliseconds", retry.Milliseconds()), giveUp)
	return err
}
