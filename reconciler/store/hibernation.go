package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// Hibernation's records: the idle warning, the wake fast path and
// PREPARE_HIBERNATE (the agent's confirmation that n8n stopped before the
// snapshot).

// ErrUnknownTenant means fleet_status has no row for the workspace.
var ErrUnknownTenant = errors.New("unknown tenant")

// ErrNotHibernated means a wake was asked of a tenant that is not
// hibernated.
var ErrNotHibernated = errors.New("tenant is not hibernated")

// RecordIdleWarning records that workspace was warned at `at` that idleness
// will hibernate it, with an audit entry, unless a warning at least as new
// as its last activity is recorded already (another pass sent it). It
// reports whether this call recorded it (and so should send it).
func (s *Store) RecordIdleWarning(ctx context.Context, workspace string, at time.Time, detail map[string]any) (bool, error) {
	recorded := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE fleet_status SET idle_warned_at = $2, updated_at = now()
			WHERE workspace = $1 AND (idle_warned_at IS NULL OR idle_warned_at < coalesce(last_activity_at, 'epoch'))`, workspace, at)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		recorded = true
		return audit(ctx, tx, "reconciler", "hibernate.idle_warning", workspace, 0, detail, "")
	})
	if err != nil {
		return false, fmt.Errorf("record idle warning of %s: %w", workspace, err)
	}
	return recorded, nil
}

// RequestWake sets wake_requested on a hibernated workspace and clears its
// work-queue retry state (a wake is new input), with an audit
// entry naming actor, and announces it on EventChannel in the same
// transaction. ErrUnknownTenant or ErrNotHibernated otherwise.
func (s *Store) RequestWake(ctx context.Context, workspace, actor string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var state string
		var requested bool
		err := tx.QueryRow(ctx, `SELECT state, wake_requested FROM fleet_status WHERE workspace = $1 FOR UPDATE`, workspace).Scan(&state, &requested)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrUnknownTenant
		}
		if err != nil {
			return fmt.Errorf("wake %s: %w", workspace, err)
		}
		if lifecycle.State(state) != lifecycle.Hibernated {
			return fmt.Errorf("%w (lifecycle %s)", ErrNotHibernated, state)
		}
		// A wake is new input, as a changed tenant file is: a backoff or
		// a terminal hold of an earlier try ends with it, in this
		// transaction, so the leader's pass on the notification below
		// cannot read the hold the wake clears.
		if _, err := tx.Exec(ctx, `DELETE FROM tenant_retries WHERE workspace = $1`, workspace); err != nil {
			return fmt.Errorf("wake %s: clear retry state: %w", workspace, err)
		}
		// The leader acts on the notification (at commit), whichever
		// replica took the call; a repeated wake kicks it again.
		if err := publish(ctx, tx, Event{Kind: EventWake, Workspace: workspace}); err != nil {
			return err
		}
		if requested {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE fleet_status SET wake_requested = true, updated_at = now() WHERE workspace = $1`, workspace); err != nil {
			return fmt.Errorf("wake %s: %w", workspace, err)
		}
		return audit(ctx, tx, actor, "wake.requested", workspace, 0, map[string]any{"via": "api"}, "")
	})
}

// OperationStep is the journal step of operation id ("" when none yet).
func (s *Store) OperationStep(ctx context.Context, id int64) (string, error) {
	var step string
	err := s.pool.QueryRow(ctx, `SELECT coalesce(step, '') FROM operations WHERE id = $1`, id).Scan(&step)
	if err != nil {
		return "", fmt.Errorf("read step of operation %d: %w", id, err)
	}
	return step, nil
}

// AgentEnrolled reports whether an agent enrolled for droplet (only then
// can anyone confirm that n8n stopped).
func (s *Store) AgentEnrolled(ctx context.Context, droplet int) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM agents WHERE droplet_id = $1)`, droplet).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("look up agent of droplet %d: %w", droplet, err)
	}
	return ok, nil
}

// N8NStopped reports whether the stored heartbeat of workspace's droplet
// confirms that n8n is stopped: it says n8n_stopped and the agent applied
// the newest manifest issued (the one saying state: hibernated).
func (s *Store) N8NStopped(ctx context.Context, workspace string, droplet int) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT droplet_id = $2 AND coalesce((heartbeat->>'n8n_stopped')::boolean, false)
			AND manifest_version_issued > 0 AND manifest_version_applied >= manifest_version_issued
		FROM fleet_status WHERE workspace = $1`, workspace, droplet).Scan(&ok)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read heartbeat of %s: %w", workspace, err)
	}
	return ok, nil
}

// RecordPrepare journals the end of a hibernation's prepare step (step)
// and records in fleet_status and the audit log whether the agent
// confirmed n8n stopped before the snapshot.
func (s *Store) RecordPrepare(ctx context.Context, opID int64, workspace, step string, confirmed bool, detail map[string]any) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE operations SET step = $2, updated_at = now() WHERE id = $1`, opID, step); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE fleet_status SET hibernate_confirmed = $2, updated_at = now() WHERE workspace = $1`, workspace, confirmed); err != nil {
			return err
		}
		action := "hibernate.prepared"
		if !confirmed {
			action = "hibernate.unconfirmed"
		}
		return audit(ctx, tx, "reconciler", action, workspace, opID, detail, "")
	})
}
