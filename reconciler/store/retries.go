package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/reconciler/plan"
)

// Holds reads the work queue's retry state (tenant_retries) by workspace.
func (s *Store) Holds(ctx context.Context) (map[string]plan.Hold, error) {
	rows, err := s.pool.Query(ctx, `SELECT workspace, attempts, last_error_kind, last_error, action,
		coalesce(retry_after, 'epoch'), coalesce(tenant_hash, '') FROM tenant_retries`)
	if err != nil {
		return nil, fmt.Errorf("load retry state: %w", err)
	}
	defer rows.Close()
	out := map[string]plan.Hold{}
	epoch := time.Unix(0, 0)
	for rows.Next() {
		var ws, action string
		var h plan.Hold
		if err := rows.Scan(&ws, &h.Attempts, &h.Kind, &h.Error, &action, &h.Until, &h.Hash); err != nil {
			return nil, fmt.Errorf("load retry state: %w", err)
		}
		if h.Until.Equal(epoch) {
			h.Until = time.Time{}
		}
		h.Action = plan.Kind(action)
		out[ws] = h
	}
	return out, rows.Err()
}

// Failure is one failed action of a workspace, as the work queue records it.
type Failure struct {
	Kind   string // a plan.Hold kind
	Action plan.Kind
	Error  string
	// Hash is the tenant file's hash the action ran with ("" unknown).
	Hash   string
	Commit string
}

// RecordFailure counts a failure of workspace ws in tenant_retries and
// returns the hold it now has. until computes the hold's end from the
// number of failures in a row (this one included); it is not called for a
// terminal failure, which waits for new input.
func (s *Store) RecordFailure(ctx context.Context, ws string, f Failure, until func(attempts int) time.Time) (plan.Hold, error) {
	h := plan.Hold{Kind: f.Kind, Action: f.Action, Error: f.Error, Hash: f.Hash}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `SELECT attempts FROM tenant_retries WHERE workspace = $1 FOR UPDATE`, ws).Scan(&h.Attempts)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		h.Attempts++
		var after any
		if f.Kind != plan.HoldTerminal {
			h.Until = until(h.Attempts)
			after = h.Until
		}
		_, err = tx.Exec(ctx, `INSERT INTO tenant_retries (workspace, attempts, last_error_kind, last_error, action, retry_after, tenant_hash, commit)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
			ON CONFLICT (workspace) DO UPDATE SET attempts = $2, last_error_kind = $3, last_error = $4, action = $5,
				retry_after = $6, tenant_hash = $7, commit = $8, updated_at = now()`,
			ws, h.Attempts, f.Kind, f.Error, string(f.Action), after, nullIfEmpty(f.Hash), nullIfEmpty(f.Commit))
		return err
	})
	if err != nil {
		return plan.Hold{}, fmt.Errorf("record failure of %s: %w", ws, err)
	}
	return h, nil
}

// Forget deletes workspace ws's retry state (its action succeeded, or
// there is nothing left to do for it); it reports whether there was any.
func (s *Store) Forget(ctx context.Context, ws string) (bool, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM tenant_retries WHERE workspace = $1`, ws)
	if err != nil {
		return false, fmt.Errorf("forget retry state of %s: %w", ws, err)
	}
	return tag.RowsAffected() > 0, nil
}
