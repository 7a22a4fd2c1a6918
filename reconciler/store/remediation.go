package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/watchdog"
)

// The watchdog's writes are compare-and-set: each names the state and the
// last heartbeat its decision was made on, and does nothing (ErrStale) when
// either changed since, so a heartbeat that arrives while the watchdog
// decides always wins.

// ErrStale means the workspace changed since the watchdog read it.
var ErrStale = errors.New("workspace changed since it was evaluated")

// ErrNotFailed means a retry was asked for a workspace that is not FAILED.
var ErrNotFailed = errors.New("workspace is not FAILED")

// WatchRows reads every workspace as the watchdog judges it (running ones
// for their health, every one for its lifecycle deadline). GitHash and
// InFlight are the caller's to fill.
func (s *Store) WatchRows(ctx context.Context) ([]watchdog.Row, error) {
	rows, err := s.pool.Query(ctx, `SELECT workspace, state, desired_state, coalesce(droplet_id, 0), coalesce(droplet_name, ''), coalesce(account, ''), state_since,
		coalesce(last_heartbeat_at, 'epoch'), coalesce(remediation_step, ''), coalesce(remediation_at, 'epoch'),
		coalesce(replacing_droplet_id, 0), coalesce(failed_hash, ''),
		coalesce(operator_step, ''), coalesce(operator_actor, ''), coalesce(operator_reason, ''), coalesce(operator_requested_at, 'epoch')
		FROM fleet_status`)
	if err != nil {
		return nil, fmt.Errorf("read fleet for the watchdog: %w", err)
	}
	defer rows.Close()
	var out []watchdog.Row
	epoch := time.Unix(0, 0)
	for rows.Next() {
		var r watchdog.Row
		var droplet, replacing int64
		var step, requested string
		if err := rows.Scan(&r.Workspace, &r.Lifecycle, &r.Desired, &droplet, &r.DropletName, &r.Account, &r.StateSince, &r.LastHeartbeat, &step, &r.StepAt,
			&replacing, &r.FailedHash, &requested, &r.RequestedBy, &r.RequestReason, &r.RequestedAt); err != nil {
			return nil, fmt.Errorf("read fleet for the watchdog: %w", err)
		}
		if r.LastHeartbeat.Equal(epoch) {
			r.LastHeartbeat = time.Time{}
		}
		if r.StepAt.Equal(epoch) {
			r.StepAt = time.Time{}
		}
		if r.RequestedAt.Equal(epoch) {
			r.RequestedAt = time.Time{}
		}
		r.DropletID, r.Replacing, r.Step, r.Requested = int(droplet), int(replacing), watchdog.Step(step), watchdog.Step(requested)
		out = append(out, r)
	}
	return out, rows.Err()
}

// guard is the compare-and-set condition on fleet_status ($1 workspace).
const guard = `workspace = $1 AND state = $2 AND last_heartbeat_at IS NOT DISTINCT FROM $3`

func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}

// healthOf is fleet_status.health for a lifecycle state the watchdog sets.
func healthOf(state lifecycle.State) string {
	switch state {
	case watchdog.Healthy:
		return "healthy"
	case watchdog.Degraded:
		return "degraded"
	default:
		return "critical"
	}
}

// ApplyTransition moves a workspace between health states as tr says (and
// resets its ladder when tr.Reset), with an audit entry; ErrStale when it
// changed since it was read.
func (s *Store) ApplyTransition(ctx context.Context, tr watchdog.Transition) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE fleet_status SET state = $4, health = $5, health_reason = $6,
			state_since = CASE WHEN state <> $4 THEN now() ELSE state_since END,
			remediation_step = CASE WHEN $7 THEN NULL ELSE remediation_step END,
			remediation_at = CASE WHEN $7 THEN NULL ELSE remediation_at END, updated_at = now()
			WHERE `+guard, tr.Workspace, tr.From, nullTime(tr.Heartbeat), tr.To, healthOf(tr.To), tr.Reason, tr.Reset)
		if err != nil {
			return fmt.Errorf("watchdog transition of %s: %w", tr.Workspace, err)
		}
		if tag.RowsAffected() == 0 {
			return ErrStale
		}
		return audit(ctx, tx, "watchdog", "watchdog.state", tr.Workspace, 0,
			map[string]any{"from": tr.From, "to": tr.To, "reason": tr.Reason, "ladder_reset": tr.Reset}, "")
	})
}

// BeginRemediation journals a ladder step's action as running and records
// the step on the workspace (state REBOOTING for a reboot or power cycle,
// PROVISIONING for a rebuild), in one transaction, if the workspace is
// still in state from with the heartbeat hb. ErrStale when it changed,
// ErrBusy when it has an operation in flight.
func (s *Store) BeginRemediation(ctx context.Context, a plan.Action, from lifecycle.State, hb, at time.Time, commit string) (int64, error) {
	state := a.Kind.Info().StartState
	var id int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// A step an operator asked for is taken with this one.
		var tag pgconn.CommandTag
		var err error
		if state == "" {
			// No rung (an operator's snapshot): the tenant's state,
			// health and ladder stay as they are.
			tag, err = tx.Exec(ctx, `UPDATE fleet_status SET operator_step = NULL, operator_actor = NULL, operator_reason = NULL,
				operator_requested_at = NULL, updated_at = now() WHERE `+guard, a.Workspace, from, nullTime(hb))
		} else {
			tag, err = tx.Exec(ctx, `UPDATE fleet_status SET state = $4, state_since = now(), health = 'critical', remediation_step = $5,
				remediation_at = $6, operator_step = NULL, operator_actor = NULL, operator_reason = NULL, operator_requested_at = NULL,
				updated_at = now() WHERE `+guard, a.Workspace, from, nullTime(hb), state, string(a.Kind), at)
		}
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrStale
		}
		id, err = insertRunning(ctx, tx, a, commit)
		return err
	})
	if err != nil {
		if errors.Is(err, ErrStale) || errors.Is(err, ErrBusy) {
			return 0, err
		}
		return 0, fmt.Errorf("journal %s: %w", a, err)
	}
	return id, nil
}

// BeginRetire journals the destroy of the droplet a rebuild replaced,
// leaving the workspace's state alone.
func (s *Store) BeginRetire(ctx context.Context, a plan.Action) (int64, error) {
	var id int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		id, err = insertRunning(ctx, tx, a, "")
		return err
	})
	if err != nil && !errors.Is(err, ErrBusy) {
		return 0, fmt.Errorf("journal %s: %w", a, err)
	}
	return id, err
}

func insertRunning(ctx context.Context, tx pgx.Tx, a plan.Action, commit string) (int64, error) {
	action, err := json.Marshal(a)
	if err != nil {
		return 0, err
	}
	var id int64
	err = tx.QueryRow(ctx, `INSERT INTO operations (workspace, kind, state, account, droplet_name, droplet_id, action, commit, started_at, attempts)
		VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, now(), 1) RETURNING id`,
		a.Workspace, opKind(a.Kind), nullIfEmpty(a.Account), nullIfEmpty(a.Droplet), nullIfZero(a.DropletID), action, nullIfEmpty(commit)).Scan(&id)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.ConstraintName == "operations_one_in_flight" {
		return 0, ErrBusy
	}
	return id, err
}

// Retired records that the droplet a rebuild replaced is gone: the
// rebuild is complete and the ladder reset.
func (s *Store) Retired(ctx context.Context, ws string, droplet int) error {
	_, err := s.pool.Exec(ctx, `UPDATE fleet_status SET replacing_droplet_id = NULL, replacing_droplet_name = NULL, replacing_account = NULL,
		replacing_last_seen_at = NULL, remediation_step = NULL, remediation_at = NULL, health_reason = NULL, updated_at = now()
		WHERE workspace = $1 AND replacing_droplet_id = $2`, ws, droplet)
	if err != nil {
		return fmt.Errorf("record retired droplet of %s: %w", ws, err)
	}
	return nil
}

// Replaced is the droplet a rebuild replaced, until it is retired.
type Replaced struct {
	ID      int
	Name    string
	Account string
	// LastSeen is its last heartbeat or n8n activity, whichever is later
	// (zero: never heard of).
	LastSeen time.Time
}

// Replacing is the droplet a rebuild of ws replaces (ID 0 when none).
func (s *Store) Replacing(ctx context.Context, ws string) (Replaced, error) {
	var r Replaced
	var id64 int64
	var seen *time.Time
	err := s.pool.QueryRow(ctx, `SELECT coalesce(replacing_droplet_id, 0), coalesce(replacing_droplet_name, ''), coalesce(replacing_account, ''),
		replacing_last_seen_at FROM fleet_status WHERE workspace = $1`, ws).Scan(&id64, &r.Name, &r.Account, &seen)
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	r.ID = int(id64)
	if seen != nil {
		r.LastSeen = *seen
	}
	return r, err
}

// NewestBackupBy is workspace ws's newest good backup taken by droplet
// (false: none).
func (s *Store) NewestBackupBy(ctx context.Context, ws string, droplet int) (Backup, bool, error) {
	b, err := scanBackup(s.pool.QueryRow(ctx, `SELECT `+backupCols+` FROM backups
		WHERE workspace = $1 AND droplet_id = $2 AND state = 'good' ORDER BY started_at DESC LIMIT 1`, ws, droplet))
	if errors.Is(err, pgx.ErrNoRows) {
		return Backup{}, false, nil
	}
	return b, err == nil, err
}

// Fail moves a workspace to FAILED (the ladder is exhausted), remembering
// its tenant hash so a later change of its file retries it; ErrStale when
// it changed since it was read.
func (s *Store) Fail(ctx context.Context, ws string, from lifecycle.State, hb time.Time, reason, hash, commit string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE fleet_status SET state = $6, state_since = now(), health = 'critical', health_reason = $4,
			last_error = $4, failed_hash = $5, updated_at = now() WHERE `+guard, ws, from, nullTime(hb), reason, nullIfEmpty(hash), lifecycle.Failed)
		if err != nil {
			return fmt.Errorf("fail %s: %w", ws, err)
		}
		if tag.RowsAffected() == 0 {
			return ErrStale
		}
		return audit(ctx, tx, "watchdog", "watchdog.failed", ws, 0, map[string]any{"from": from, "reason": reason}, commit)
	})
}

// RetryTenant takes a FAILED workspace out of FAILED with its ladder reset: one
// with a droplet becomes ACTIVE_DEGRADED (the watchdog judges it again from
// its heartbeats, and remediates it from the first step), one without
// PENDING (the planner creates it). It is announced on EventChannel in the
// same transaction. ErrNotFailed when it is not FAILED.
func (s *Store) RetryTenant(ctx context.Context, ws, actor, reason, commit string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE fleet_status SET state = CASE WHEN droplet_id IS NULL THEN $3 ELSE $4 END,
			state_since = now(), health = 'unknown', health_reason = $2, last_error = NULL, failed_hash = NULL,
			remediation_step = NULL, remediation_at = NULL, updated_at = now()
			WHERE workspace = $1 AND state = $5`, ws, reason, lifecycle.Retried(false), lifecycle.Retried(true), lifecycle.Failed)
		if err != nil {
			return fmt.Errorf("retry %s: %w", ws, err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFailed
		}
		if err := publish(ctx, tx, Event{Kind: EventRetry, Workspace: ws}); err != nil {
			return err
		}
		return audit(ctx, tx, actor, "retry", ws, 0, map[string]any{"reason": reason}, commit)
	})
}

// applyRebuild points a workspace at its rebuilt droplet and keeps the one
// it replaces in replacing_*; the heartbeat clock starts again with the new
// droplet.
func applyRebuild(ctx context.Context, tx pgx.Tx, a plan.Action, out Outcome) error {
	state, err := bootState(ctx, tx, a.Kind, a.Workspace, out.DropletID)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE fleet_status SET
		replacing_droplet_id = CASE WHEN droplet_id IS DISTINCT FROM $2 THEN droplet_id ELSE replacing_droplet_id END,
		replacing_droplet_name = CASE WHEN droplet_id IS DISTINCT FROM $2 THEN droplet_name ELSE replacing_droplet_name END,
		replacing_account = CASE WHEN droplet_id IS DISTINCT FROM $2 THEN account ELSE replacing_account END,
		replacing_last_seen_at = CASE WHEN droplet_id IS DISTINCT FROM $2
			THEN GREATEST(last_heartbeat_at, last_activity_at) ELSE replacing_last_seen_at END,
		droplet_id = $2, droplet_name = $3, account = $4, ip = $5, state = $7, state_since = now(),
		generation = $6, health = 'unknown', last_heartbeat_at = NULL, last_error = NULL, updated_at = now()
		WHERE workspace = $1`,
		a.Workspace, out.DropletID, out.DropletName, out.Account, nullIfEmpty(out.IP), a.Gen, state)
	if err != nil {
		return err
	}
	return bindTokens(ctx, tx, a.Workspace, out.DropletName, out.DropletID)
}

// ErrNotRunning means an operator's step was asked of a tenant that has no
// running droplet to act on (not in a running lifecycle state).
var ErrNotRunning = errors.New("the tenant has no running droplet")

// RequestStep records an operator's request for a remediation step of
// workspace's droplet (the leader's watchdog takes it at its next run),
// with an audit entry naming actor and reason. ErrUnknownTenant, or
// ErrNotRunning when the workspace has no droplet in a running state.
func (s *Store) RequestStep(ctx context.Context, workspace string, step watchdog.Step, actor, reason string) error {
	return s.request(ctx, workspace, string(step), actor, reason, `UPDATE fleet_status SET operator_step = $2, operator_actor = $3,
		operator_reason = $4, operator_requested_at = now(), updated_at = now() WHERE workspace = $1`, string(step))
}

// RequestBackup records an operator's request for a backup of workspace
// now: the droplet's next manifest carries it (Target.BackupAsked) and its
// agent takes a backup unless one started after it. A newer request
// replaces an older one. Errors as RequestStep's.
func (s *Store) RequestBackup(ctx context.Context, workspace, actor, reason string) error {
	return s.request(ctx, workspace, "backup", actor, reason, `UPDATE fleet_status SET backup_requested_at = now(),
		backup_requested_by = $2, backup_request_reason = $3, updated_at = now() WHERE workspace = $1`)
}

// request runs update ($1 workspace, then args, actor and reason) on a
// workspace with a running droplet, locked, with the audit entry
// operator.<what>.requested.
func (s *Store) request(ctx context.Context, workspace, what, actor, reason, update string, args ...any) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var state string
		var droplet *int64
		err := tx.QueryRow(ctx, `SELECT state, droplet_id FROM fleet_status WHERE workspace = $1 FOR UPDATE`, workspace).Scan(&state, &droplet)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrUnknownTenant
		}
		if err != nil {
			return fmt.Errorf("request %s of %s: %w", what, workspace, err)
		}
		if droplet == nil || !lifecycle.State(state).In(lifecycle.Watched()) {
			return fmt.Errorf("%w (lifecycle %s)", ErrNotRunning, state)
		}
		if _, err := tx.Exec(ctx, update, append(append([]any{workspace}, args...), actor, reason)...); err != nil {
			return fmt.Errorf("request %s of %s: %w", what, workspace, err)
		}
		return audit(ctx, tx, actor, "operator."+what+".requested", workspace, 0, map[string]any{"reason": reason, "droplet_id": *droplet}, "")
	})
}
