package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Backup states (migrations/0016_backups.sql).
const (
	BackupPending  = "pending"
	BackupGood     = "good"
	BackupFailed   = "failed"
	BackupDeleting = "deleting"
)

// ErrBackupBusy means the workspace has a backup in progress already.
var ErrBackupBusy = errors.New("a backup of this workspace is in progress")

// ErrNoBackup means no backup of that id belongs to the workspace.
var ErrNoBackup = errors.New("no such backup of this workspace")

// Backup is one row of backups.
type Backup struct {
	ID        string     `json:"id"`
	Workspace string     `json:"workspace"`
	DropletID int64      `json:"droplet_id"`
	Key       string     `json:"object_key"`
	State     string     `json:"state"`
	Started   time.Time  `json:"started_at"`
	Finished  *time.Time `json:"finished_at,omitempty"`
	Size      int64      `json:"size_bytes,omitempty"`
	SHA256    string     `json:"sha256,omitempty"`
	Error     string     `json:"error,omitempty"`
}

const backupCols = `id, workspace, droplet_id, object_key, state, started_at, finished_at, coalesce(size_bytes, 0), coalesce(sha256, ''), coalesce(error, '')`

func scanBackup(row pgx.Row) (Backup, error) {
	var b Backup
	err := row.Scan(&b.ID, &b.Workspace, &b.DropletID, &b.Key, &b.State, &b.Started, &b.Finished, &b.Size, &b.SHA256, &b.Error)
	return b, err
}

func scanBackups(rows pgx.Rows, err error) ([]Backup, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Backup
	for rows.Next() {
		b, err := scanBackup(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// BeginBackup records backup id of workspace, by droplet, to object key as
// pending. A pending backup started after busySince refuses a second one
// (ErrBackupBusy): one upload per workspace at a time.
func (s *Store) BeginBackup(ctx context.Context, id, ws string, droplet int64, key string, busySince time.Time) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// Serializes two replicas issuing for the same workspace.
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('backup:' || $1))`, ws); err != nil {
			return err
		}
		var busy bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM backups WHERE workspace = $1 AND state = 'pending' AND started_at > $2)`,
			ws, busySince).Scan(&busy); err != nil {
			return err
		}
		if busy {
			return ErrBackupBusy
		}
		if _, err := tx.Exec(ctx, `INSERT INTO backups (id, workspace, droplet_id, object_key, state) VALUES ($1, $2, $3, $4, 'pending')`,
			id, ws, droplet, key); err != nil {
			return fmt.Errorf("record backup %s: %w", id, err)
		}
		return audit(ctx, tx, "agent", "backup.started", ws, 0, map[string]any{"backup": id, "droplet_id": droplet, "object_key": key}, "")
	})
}

// GetBackup is workspace's backup id (ErrNoBackup when there is none).
func (s *Store) GetBackup(ctx context.Context, ws, id string) (Backup, error) {
	b, err := scanBackup(s.pool.QueryRow(ctx, `SELECT `+backupCols+` FROM backups WHERE id = $1 AND workspace = $2`, id, ws))
	if errors.Is(err, pgx.ErrNoRows) {
		return Backup{}, ErrNoBackup
	}
	return b, err
}

// FinishBackup records how pending backup id of workspace ended: good with
// its size and SHA-256 when errMsg is "", else failed. Only a pending
// backup moves (a second report changes nothing and says ErrNoBackup).
func (s *Store) FinishBackup(ctx context.Context, ws, id string, size int64, sha, errMsg string) error {
	state, action := BackupGood, "backup.succeeded"
	if errMsg != "" {
		state, action, size, sha = BackupFailed, "backup.failed", 0, ""
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE backups SET state = $3, finished_at = now(), size_bytes = $4, sha256 = $5, error = $6
			WHERE id = $1 AND workspace = $2 AND state = 'pending'`, id, ws, state, nullIfZero64(size), nullIfEmpty(sha), nullIfEmpty(errMsg))
		if err != nil {
			return fmt.Errorf("finish backup %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNoBackup
		}
		detail := map[string]any{"backup": id}
		if errMsg != "" {
			detail["error"] = errMsg
		} else {
			detail["size_bytes"], detail["sha256"] = size, sha
		}
		return audit(ctx, tx, "agent", action, ws, 0, detail, "")
	})
}

// GoodBackups lists workspace's good backups, newest first.
func (s *Store) GoodBackups(ctx context.Context, ws string) ([]Backup, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+backupCols+` FROM backups WHERE workspace = $1 AND state = 'good' ORDER BY started_at DESC, id`, ws)
	return scanBackups(rows, err)
}

// NewestGoodBackup is workspace ws's newest good backup (false: none).
func (s *Store) NewestGoodBackup(ctx context.Context, ws string) (Backup, bool, error) {
	b, err := scanBackup(s.pool.QueryRow(ctx, `SELECT `+backupCols+` FROM backups
		WHERE workspace = $1 AND state = 'good' ORDER BY started_at DESC, id LIMIT 1`, ws))
	if errors.Is(err, pgx.ErrNoRows) {
		return Backup{}, false, nil
	}
	return b, err == nil, err
}

// AllGoodBackups lists every good backup, by workspace and newest first
// (retention's input).
func (s *Store) AllGoodBackups(ctx context.Context) ([]Backup, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+backupCols+` FROM backups WHERE state = 'good' ORDER BY workspace, started_at DESC, id`)
	return scanBackups(rows, err)
}

// NewestBackups is the start time of each workspace's newest good backup
// (a backup's data is at least as new as when it started).
func (s *Store) NewestBackups(ctx context.Context) (map[string]Backup, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT ON (workspace) `+backupCols+` FROM backups WHERE state = 'good' ORDER BY workspace, started_at DESC, id`)
	bs, err := scanBackups(rows, err)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Backup, len(bs))
	for _, b := range bs {
		out[b.Workspace] = b
	}
	return out, nil
}

// Unfinished lists backups to clean up: failed ones, ones being deleted,
// and pending ones started before pendingBefore (their upload URL has
// expired, so no good object can arrive any more).
func (s *Store) Unfinished(ctx context.Context, pendingBefore time.Time) ([]Backup, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+backupCols+` FROM backups
		WHERE state IN ('failed', 'deleting') OR (state = 'pending' AND started_at < $1) ORDER BY started_at`, pendingBefore)
	return scanBackups(rows, err)
}

// MarkDeleting marks backup id for deletion (its object is removed next)
// if it is still in state from (what the caller saw: a backup that moved
// on since, say a pending one an agent just finished, is left alone); a
// backup a pending restore names is kept too (false).
func (s *Store) MarkDeleting(ctx context.Context, id, from, reason string) (bool, error) {
	var ws string
	err := s.pool.QueryRow(ctx, `UPDATE backups SET state = 'deleting', error = coalesce(error, $2) WHERE id = $1 AND state = $3
		AND NOT EXISTS (SELECT 1 FROM backup_restores r WHERE r.backup_id = $1 AND r.finished_at IS NULL)
		RETURNING workspace`, id, reason, from).Scan(&ws)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("mark backup %s for deletion: %w", id, err)
	}
	return true, s.Audit(ctx, "reconciler", "backup.expired", ws, map[string]any{"backup": id, "reason": reason}, "")
}

// DeleteBackup forgets backup id, whose object is gone.
func (s *Store) DeleteBackup(ctx context.Context, id string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM backup_restores WHERE backup_id = $1 AND finished_at IS NOT NULL`, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM backups WHERE id = $1 AND state = 'deleting'`, id)
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23503" {
			return nil // a restore names it again: kept
		}
		return err
	})
}

// Restore is a backup_restores row with the backup it names.
type Restore struct {
	Backup   Backup
	Droplet  string
	Finished *time.Time
	Error    string
}

// RequestRestore asks droplet (a droplet name) of workspace to restore
// backup id before n8n starts.
func (s *Store) RequestRestore(ctx context.Context, ws, droplet, id, commit string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO backup_restores (workspace, droplet_name, backup_id) VALUES ($1, $2, $3)
			ON CONFLICT (workspace, droplet_name) DO UPDATE SET backup_id = $3, requested_at = now(), finished_at = NULL, error = NULL
			WHERE backup_restores.finished_at IS NULL`, ws, droplet, id); err != nil {
			return fmt.Errorf("request restore of %s on %s: %w", id, droplet, err)
		}
		return audit(ctx, tx, "reconciler", "restore.requested", ws, 0, map[string]any{"backup": id, "droplet": droplet}, commit)
	})
}

// RestoreFor is the restore droplet of workspace is asked to make (false:
// none).
func (s *Store) RestoreFor(ctx context.Context, ws, droplet string) (Restore, bool, error) {
	var r Restore
	var id string
	err := s.pool.QueryRow(ctx, `SELECT backup_id, finished_at, coalesce(error, '') FROM backup_restores WHERE workspace = $1 AND droplet_name = $2`,
		ws, droplet).Scan(&id, &r.Finished, &r.Error)
	if errors.Is(err, pgx.ErrNoRows) {
		return Restore{}, false, nil
	}
	if err != nil {
		return Restore{}, false, err
	}
	r.Droplet = droplet
	if r.Backup, err = s.GetBackup(ctx, ws, id); err != nil {
		return Restore{}, false, err
	}
	return r, true, nil
}

// FinishRestore records that droplet (for the journal) of workspace
// restored backup id (errMsg "") or refused it.
func (s *Store) FinishRestore(ctx context.Context, ws, droplet, id, errMsg string) error {
	action := "restore.succeeded"
	if errMsg != "" {
		action = "restore.failed"
	}
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE backup_restores SET finished_at = now(), error = $3
			WHERE workspace = $1 AND backup_id = $2 AND finished_at IS NULL`, ws, id, nullIfEmpty(errMsg))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNoBackup
		}
		detail := map[string]any{"backup": id, "droplet": droplet}
		if errMsg != "" {
			detail["error"] = errMsg
		}
		return audit(ctx, tx, "agent", action, ws, 0, detail, "")
	})
}
