// Package store is the reconciler's Postgres state: fleet_status (one row per
// workspace), the operations journal, the audit log, the account table and
// leader election.
//
// The journal is what makes execution crash-safe. An action is written as a
// running operation, with the action itself, before any DigitalOcean call;
// each step is recorded as it completes; the outcome and the workspace's new
// status are written in one transaction with the audit entry. After a crash
// the new leader finds the operations still running and executes them again:
// execution is idempotent (creates find their droplet by name and tag), so a
// resumed operation finishes instead of repeating. The partial unique index
// operations_one_in_flight keeps one operation in flight per workspace.
//
// It is the only package that writes fleet_status and the agent protocol's
// tables (agents, enrollment_tokens, manifests): package agentapi keeps the
// protocol, its caches and the signing, and calls the statements here
// (agents.go: credentials and the agents notification channel;
// enrollment.go: provisioning tokens and the enrollment transaction, Tx;
// manifests.go: storing manifests and the droplets to render for;
// heartbeats.go: the batched heartbeat statement).
//
// The work queue's retry state (tenant_retries, retries.go) is a row per
// workspace whose last action failed: attempts, the error's kind, and
// until when (or, for a terminal error, with which tenant file) the
// planner leaves it alone; success deletes it.
//
// Leader election is a session advisory lock held on a dedicated
// connection: whoever holds it plans and executes; if its process or
// connection dies, Postgres releases the lock and another replica takes it.
// Taking the lock increments the leader epoch (table leader_lease) in the
// lock's session. Journal writes made under WithEpoch succeed only while
// that epoch is current and record it on the operation (operations.epoch),
// so a replica that lost the lock can neither start nor advance an
// operation once another took over; Leader.Check proves the lock on its
// own session, which the reconciler runs before every mutating
// DigitalOcean request (reconciler/cloud Lease).
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"genesis.dev/fleet/migrations"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// LeaderLockKey is the advisory lock the leader holds ("genesis" 0x02).
const LeaderLockKey int64 = 0x67656e6573697302

// Store is the reconciler's database.
type Store struct {
	pool *pgxpool.Pool
	log  *slog.Logger
}

// Option changes how Open connects.
type Option func(*pgxpool.Config)

// WithTracer traces every query of the store's connections (the
// reliability suite's crash hook in cmd/genesis-reconciler counts committed
// journal writes with it).
func WithTracer(t pgx.QueryTracer) Option {
	return func(c *pgxpool.Config) { c.ConnConfig.Tracer = t }
}

// Open connects to url, applies the migrations and returns the store.
func Open(ctx context.Context, url string, log *slog.Logger, opts ...Option) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	for _, o := range opts {
		o(cfg)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	applied, err := migrations.Apply(ctx, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("apply migrations: %w", err)
	}
	if len(applied) > 0 {
		log.Info("applied migrations", "component", "store", "files", applied)
	}
	return &Store{pool: pool, log: log}, nil
}

// New is the store on pool, whose migrations Open applied already (a
// second Store on an open Store's pool, with other logging).
func New(pool *pgxpool.Pool, log *slog.Logger) *Store { return &Store{pool: pool, log: log} }

// Pool is the connection pool, for packages that keep their own tables.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Ping checks the database answers (readiness).
func (s *Store) Ping(ctx context.Context) error { return s.pool.Ping(ctx) }

// SyncAccounts upserts the fleet's accounts into do_accounts.
func (s *Store) SyncAccounts(ctx context.Context, f *schema.Fleet) error {
	batch := &pgx.Batch{}
	for _, a := range f.Spec.Accounts {
		batch.Queue(`INSERT INTO do_accounts (name, regions, max_droplets) VALUES ($1, $2, $3)
			ON CONFLICT (name) DO UPDATE SET regions = EXCLUDED.regions, max_droplets = EXCLUDED.max_droplets, updated_at = now()
			WHERE do_accounts.regions IS DISTINCT FROM EXCLUDED.regions OR do_accounts.max_droplets <> EXCLUDED.max_droplets`,
			a.Name, a.Regions, a.MaxDroplets)
	}
	if err := s.pool.SendBatch(ctx, batch).Close(); err != nil {
		return fmt.Errorf("sync accounts: %w", err)
	}
	return nil
}

// LoadStatus reads fleet_status as the planner sees it.
func (s *Store) LoadStatus(ctx context.Context) (map[string]plan.Status, error) {
	rows, err := s.pool.Query(ctx, `SELECT workspace, state, coalesce(account, ''), coalesce(droplet_id, 0), generation,
		coalesce(snapshot_id, ''), hibernated_by_policy, wake_requested, coalesce(last_activity_at, 'epoch'), coalesce(tenant_hash, ''),
		coalesce(idle_warned_at, 'epoch'), coalesce(replacing_droplet_id, 0), coalesce(host(ip), ''), coalesce(host(dns_target), ''), coalesce(host(reserved_ip), '')
		FROM fleet_status`)
	if err != nil {
		return nil, fmt.Errorf("load fleet status: %w", err)
	}
	defer rows.Close()
	out := map[string]plan.Status{}
	for rows.Next() {
		var ws string
		var st plan.Status
		var droplet, replacing int64
		if err := rows.Scan(&ws, &st.Lifecycle, &st.Account, &droplet, &st.Generation, &st.SnapshotID,
			&st.HibernatedByPolicy, &st.WakeRequested, &st.LastActivity, &st.TenantHash, &st.IdleWarnedAt, &replacing, &st.IP, &st.NameTarget, &st.ReservedIP); err != nil {
			return nil, fmt.Errorf("load fleet status: %w", err)
		}
		if st.LastActivity.Equal(time.Unix(0, 0)) {
			st.LastActivity = time.Time{}
		}
		if st.IdleWarnedAt.Equal(time.Unix(0, 0)) {
			st.IdleWarnedAt = time.Time{}
		}
		st.DropletID, st.Replacing = int(droplet), int(replacing)
		out[ws] = st
	}
	return out, rows.Err()
}

// Operation is a journaled action.
type Operation struct {
	ID        int64
	Workspace string
	Kind      string
	State     string
	Step      string
	Attempts  int
	Action    plan.Action
	Commit    string
	Error     string
}

// opKind is the journal's name for an action kind.
func opKind(k plan.Kind) string {
	if k == plan.DeleteSnapshot {
		return "snapshot_delete"
	}
	return string(k)
}

// InFlight lists the operations pending or running, oldest first.
func (s *Store) InFlight(ctx context.Context) ([]Operation, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, workspace, kind, state, coalesce(step, ''), attempts, coalesce(action, '{}'), coalesce(commit, '')
		FROM operations WHERE state IN ('pending', 'running') ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list in-flight operations: %w", err)
	}
	defer rows.Close()
	var out []Operation
	for rows.Next() {
		var op Operation
		var action []byte
		if err := rows.Scan(&op.ID, &op.Workspace, &op.Kind, &op.State, &op.Step, &op.Attempts, &action, &op.Commit); err != nil {
			return nil, fmt.Errorf("list in-flight operations: %w", err)
		}
		if err := json.Unmarshal(action, &op.Action); err != nil {
			return nil, fmt.Errorf("operation %d: decode action: %w", op.ID, err)
		}
		out = append(out, op)
	}
	return out, rows.Err()
}

// ErrBusy means the workspace already has an operation in flight.
var ErrBusy = errors.New("workspace has an operation in flight")

// nullIfEmpty maps "" to SQL NULL.
func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func nullIfZero(n int) any {
	if n == 0 {
		return nil
	}
	return n
}

// Begin journals a as running before anything is done for it, and moves the
// workspace into the state the action starts in. ErrBusy when the workspace
// already has an operation in flight.
func (s *Store) Begin(ctx context.Context, a plan.Action, desired schema.State, commit string) (int64, error) {
	action, err := json.Marshal(a)
	if err != nil {
		return 0, err
	}
	var id int64
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkEpoch(ctx, tx); err != nil {
			return err
		}
		err := tx.QueryRow(ctx, `INSERT INTO operations (workspace, kind, state, account, droplet_name, droplet_id, action, commit, started_at, attempts, epoch)
			VALUES ($1, $2, 'running', $3, $4, $5, $6, $7, now(), 1, $8) RETURNING id`,
			a.Workspace, opKind(a.Kind), nullIfEmpty(a.Account), nullIfEmpty(a.Droplet), nullIfZero(a.DropletID), action, nullIfEmpty(commit), epochArg(ctx)).Scan(&id)
		if err != nil {
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.ConstraintName == "operations_one_in_flight" {
				return ErrBusy
			}
			return err
		}
		if state := a.Kind.Info().StartState; state != "" {
			_, err = tx.Exec(ctx, `INSERT INTO fleet_status (workspace, state, desired_state, region, size)
				VALUES ($1, $2, $3, $4, $5)
				ON CONFLICT (workspace) DO UPDATE SET state = $2, state_since = now(), desired_state = $3, updated_at = now()`,
				a.Workspace, state, string(desired), nullIfEmpty(a.Region), nullIfEmpty(a.Size))
		}
		return err
	})
	if err != nil {
		if errors.Is(err, ErrBusy) {
			return 0, ErrBusy
		}
		return 0, fmt.Errorf("journal %s: %w", a, err)
	}
	return id, nil
}

// Step records progress of a running operation (and the droplet it now
// concerns, if known).
func (s *Store) Step(ctx context.Context, id int64, step string, dropletID int) error {
	err := s.underEpoch(ctx, func(q execer) error {
		_, err := q.Exec(ctx, `UPDATE operations SET step = $2, droplet_id = coalesce($3, droplet_id), epoch = coalesce($4, epoch), updated_at = now() WHERE id = $1`,
			id, step, nullIfZero(dropletID), epochArg(ctx))
		return err
	})
	if err != nil {
		return fmt.Errorf("journal step of operation %d: %w", id, err)
	}
	return nil
}

// Created records that operation id's create returned (step created) or
// found (step found) droplet dropletID called name, and binds the
// workspace's unbound provisioning tokens for name to it, in one
// transaction: from then on only that droplet id can enroll with them
// (reconciler/agentapi). A token minted for a retry whose create found the
// earlier droplet is bound too; it was never sent anywhere.
func (s *Store) Created(ctx context.Context, id int64, step string, dropletID int, name string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkEpoch(ctx, tx); err != nil {
			return err
		}
		var ws string
		err := tx.QueryRow(ctx, `UPDATE operations SET step = $2, droplet_id = coalesce($3, droplet_id), epoch = coalesce($4, epoch), updated_at = now() WHERE id = $1 RETURNING workspace`,
			id, step, nullIfZero(dropletID), epochArg(ctx)).Scan(&ws)
		if err != nil {
			return err
		}
		// The droplet exists and boots: a workspace waiting for it is
		// BOOTING (lifecycle.Created); fleet_status records the droplet
		// once it is active (Finish).
		if _, err := tx.Exec(ctx, `UPDATE fleet_status SET state = $2, state_since = now(), updated_at = now()
			WHERE workspace = $1 AND droplet_id IS NULL AND state = ANY($3) AND state <> $2`,
			ws, lifecycle.Booting, lifecycle.Strings(lifecycle.AwaitingDroplet())); err != nil {
			return err
		}
		return bindTokens(ctx, tx, ws, name, dropletID)
	})
	if err != nil {
		return fmt.Errorf("journal step %s of operation %d: %w", step, id, err)
	}
	return nil
}

// bindTokens binds workspace's unbound provisioning tokens for the droplet
// called name to dropletID (nothing when either is unknown).
func bindTokens(ctx context.Context, tx pgx.Tx, workspace, name string, dropletID int) error {
	if name == "" || dropletID <= 0 {
		return nil
	}
	if _, err := tx.Exec(ctx, `UPDATE enrollment_tokens SET droplet_id = $3
		WHERE workspace = $1 AND droplet_name = $2 AND droplet_id IS NULL`, workspace, name, dropletID); err != nil {
		return fmt.Errorf("bind provisioning tokens of %s: %w", name, err)
	}
	return nil
}

// bootState is the lifecycle state of a workspace's just-recorded droplet
// after action k (lifecycle.Finished): HANDSHAKE when its agent enrolled
// already (it may be faster than the executor's record of the create),
// else INITIALIZING.
func bootState(ctx context.Context, tx pgx.Tx, k plan.Kind, workspace string, dropletID int) (lifecycle.State, error) {
	var enrolled bool
	err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM agents WHERE droplet_id = $1 AND workspace = $2)`, dropletID, workspace).Scan(&enrolled)
	if err != nil {
		return "", fmt.Errorf("look up the agent of droplet %d: %w", dropletID, err)
	}
	return lifecycle.Finished(lifecycle.Action(k), enrolled), nil
}

// Retry counts another attempt at a resumed operation, under ctx's
// epoch (see WithEpoch).
func (s *Store) Retry(ctx context.Context, id int64) error {
	return s.underEpoch(ctx, func(q execer) error {
		_, err := q.Exec(ctx, `UPDATE operations SET attempts = attempts + 1, epoch = coalesce($2, epoch), updated_at = now() WHERE id = $1`, id, epochArg(ctx))
		return err
	})
}

// Outcome is what an action achieved.
type Outcome struct {
	Account     string
	DropletID   int
	DropletName string
	IP          string
	SnapshotID  string
	SnapshotGB  float64
	TenantHash  string
	Desired     schema.State
	ByPolicy    bool // a hibernation the idle policy decided
	Actor       string
	Commit      string
	// Name, when set, is what the action wrote into the tenant's stable
	// DNS name (NameTarget, "" for removed), recorded with the outcome.
	Name *NameWrite
	// Reserved, when set, is the tenant's reserved IP after the action
	// (Address "" : released).
	Reserved *ReservedIP
	// FailedOver are the accounts a create gave up on (cloud.Result), in
	// the audit entry.
	FailedOver []string
}

// ReservedIP is a tenant's reserved IPv4 and the account holding it.
type ReservedIP struct{ Address, Account string }

// NameWrite is a write of a stable name: the address it now says ("" for
// no record).
type NameWrite struct{ Target string }

// Finish ends operation id. With runErr nil it succeeded: the workspace's
// status is updated for the action in the same transaction, with an audit
// entry. Otherwise it failed: the error is journaled and audited, and the
// workspace keeps its status with last_error set.
func (s *Store) Finish(ctx context.Context, id int64, a plan.Action, out Outcome, runErr error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkEpoch(ctx, tx); err != nil {
			return err
		}
		detail := map[string]any{"action": a, "droplet_id": out.DropletID}
		if len(out.FailedOver) > 0 {
			detail["failed_over"] = out.FailedOver
		}
		if runErr != nil {
			msg := runErr.Error()
			detail["error"] = msg
			if _, err := tx.Exec(ctx, `UPDATE operations SET state = 'failed', error = $2, epoch = coalesce($3, epoch), finished_at = now(), updated_at = now() WHERE id = $1`, id, msg, epochArg(ctx)); err != nil {
				return err
			}
			// A failed hibernation (or resize) leaves its droplet
			// running: it leaves HIBERNATING for CONFIGURING
			// (lifecycle.FailedFrom), so its manifest says running
			// again (the agent restarts n8n) and its next heartbeat
			// makes it ACTIVE_HEALTHY; the planner tries again if git
			// still asks for it.
			if _, err := tx.Exec(ctx, `UPDATE fleet_status SET last_error = $2,
				state = CASE WHEN state = $3 AND droplet_id IS NOT NULL THEN $4 ELSE state END,
				state_since = CASE WHEN state = $3 AND droplet_id IS NOT NULL THEN now() ELSE state_since END,
				updated_at = now() WHERE workspace = $1`, a.Workspace, msg, lifecycle.Hibernating, lifecycle.FailedFrom(lifecycle.Hibernating, true)); err != nil {
				return err
			}
			return audit(ctx, tx, out.Actor, string(a.Kind)+".failed", a.Workspace, id, detail, out.Commit)
		}
		if _, err := tx.Exec(ctx, `UPDATE operations SET state = 'succeeded', droplet_id = coalesce($2, droplet_id), epoch = coalesce($3, epoch), finished_at = now(), updated_at = now() WHERE id = $1`,
			id, nullIfZero(out.DropletID), epochArg(ctx)); err != nil {
			return err
		}
		if err := applyOutcome(ctx, tx, a, out); err != nil {
			return fmt.Errorf("record outcome of %s: %w", a, err)
		}
		if out.Reserved != nil {
			detail["reserved_ip"] = out.Reserved.Address
			if _, err := tx.Exec(ctx, `UPDATE fleet_status SET reserved_ip = $2, reserved_ip_account = $3 WHERE workspace = $1`,
				a.Workspace, nullIfEmpty(out.Reserved.Address), nullIfEmpty(out.Reserved.Account)); err != nil {
				return fmt.Errorf("record reserved ip of %s: %w", a.Workspace, err)
			}
		}
		if out.Name != nil {
			detail["dns_target"] = out.Name.Target
			if _, err := tx.Exec(ctx, `UPDATE fleet_status SET dns_target = $2, dns_at = now() WHERE workspace = $1`,
				a.Workspace, nullIfEmpty(out.Name.Target)); err != nil {
				return fmt.Errorf("record name of %s: %w", a.Workspace, err)
			}
		}
		if out.SnapshotID != "" {
			detail["snapshot_id"] = out.SnapshotID
		}
		return audit(ctx, tx, out.Actor, string(a.Kind), a.Workspace, id, detail, out.Commit)
	})
}

func applyOutcome(ctx context.Context, tx pgx.Tx, a plan.Action, out Outcome) error {
	var err error
	switch a.Kind {
	case plan.Create, plan.Wake, plan.Resize, plan.Adopt, plan.CreateSpare:
		gen := a.Gen
		// A droplet id moves between rows only through this update; clear
		// it from any stale row first so the unique constraint holds.
		if _, err = tx.Exec(ctx, `UPDATE fleet_status SET droplet_id = NULL, updated_at = now() WHERE droplet_id = $1 AND workspace <> $2`, out.DropletID, a.Workspace); err != nil {
			return err
		}
		var state lifecycle.State
		if state, err = bootState(ctx, tx, a.Kind, a.Workspace, out.DropletID); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO fleet_status (workspace, droplet_id, droplet_name, account, region, size, ip, state, desired_state, generation, tenant_hash, last_commit)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
			ON CONFLICT (workspace) DO UPDATE SET droplet_id = $2, droplet_name = $3, account = $4, region = $5, size = $6,
				ip = CASE WHEN fleet_status.droplet_id = $2 THEN coalesce($7, fleet_status.ip) ELSE $7 END,
				state = $8, state_since = now(), desired_state = $9, generation = $10, tenant_hash = $11, last_commit = $12,
				hibernated_by_policy = false, wake_requested = false, last_error = NULL, updated_at = now()`,
			a.Workspace, out.DropletID, out.DropletName, out.Account, nullIfEmpty(a.Region), nullIfEmpty(a.Size), nullIfEmpty(out.IP),
			state, string(out.Desired), gen, nullIfEmpty(out.TenantHash), nullIfEmpty(out.Commit))
		if err == nil {
			// The journal step bound them already unless it failed.
			err = bindTokens(ctx, tx, a.Workspace, out.DropletName, out.DropletID)
		}
		if err == nil && a.Kind == plan.Wake {
			// A wake is the user's activity: the idle clock starts again.
			_, err = tx.Exec(ctx, `UPDATE fleet_status SET last_activity_at = GREATEST(last_activity_at, now()), idle_warned_at = NULL WHERE workspace = $1`, a.Workspace)
		}
	case plan.Rebuild:
		err = applyRebuild(ctx, tx, a, out)
	case plan.UpdateManifest:
		_, err = tx.Exec(ctx, `UPDATE fleet_status SET tenant_hash = $2, last_commit = $3, desired_state = $4, updated_at = now() WHERE workspace = $1`,
			a.Workspace, nullIfEmpty(out.TenantHash), nullIfEmpty(out.Commit), string(out.Desired))
	case plan.Hibernate:
		_, err = tx.Exec(ctx, `UPDATE fleet_status SET droplet_id = NULL, ip = NULL, state = $6, state_since = now(),
			snapshot_id = $2, snapshot_size_gb = $3, snapshot_at = now(), hibernated_by_policy = $4, wake_requested = false,
			desired_state = $5, last_error = NULL, updated_at = now() WHERE workspace = $1`,
			a.Workspace, out.SnapshotID, out.SnapshotGB, out.ByPolicy, string(out.Desired), lifecycle.Finished(lifecycle.Hibernate, false))
	case plan.Destroy:
		_, err = tx.Exec(ctx, `UPDATE fleet_status SET droplet_id = NULL, ip = NULL, state = $3, state_since = now(),
			desired_state = 'absent', last_error = NULL, updated_at = now() WHERE workspace = $1 AND (droplet_id IS NULL OR droplet_id = $2)`,
			a.Workspace, a.DropletID, lifecycle.Finished(lifecycle.Destroy, false))
	case plan.PointName:
		// Finish records out.Name.
	case plan.SnapshotNow:
		// Finish records out.SnapshotID in the audit entry; the snapshot
		// is the tenant's latest copy in the next observation.
	case plan.DeleteSnapshot:
		_, err = tx.Exec(ctx, `UPDATE fleet_status SET snapshot_id = NULL, snapshot_size_gb = NULL, snapshot_at = NULL, updated_at = now()
			WHERE workspace = $1 AND snapshot_id = $2 AND state <> $3`, a.Workspace, a.Snapshot, lifecycle.Hibernated)
	default:
		err = applySpareOutcome(ctx, tx, a, out)
	}
	return err
}

// Audit appends to audit_log.
func (s *Store) Audit(ctx context.Context, actor, action, workspace string, detail map[string]any, commit string) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		return audit(ctx, tx, actor, action, workspace, 0, detail, commit)
	})
}

func audit(ctx context.Context, tx pgx.Tx, actor, action, workspace string, opID int64, detail map[string]any, commit string) error {
	if actor == "" {
		actor = "reconciler"
	}
	d, err := json.Marshal(detail)
	if err != nil {
		return err
	}
	var op any
	if opID != 0 {
		op = opID
	}
	_, err = tx.Exec(ctx, `INSERT INTO audit_log (actor, action, workspace, operation_id, detail, commit) VALUES ($1, $2, $3, $4, $5, $6)`,
		actor, action, nullIfEmpty(workspace), op, d, nullIfEmpty(commit))
	return err
}

// SetDesired records the declared state of every tenant (creating rows for
// new tenants as PENDING), so /v1/fleet shows desired vs actual. It is one
// statement that locks only the rows whose desired state changes, in
// workspace order (see "Row-lock order" below): a pass at 100,000 tenants that
// changes nothing holds no row lock, and one that changes many cannot
// deadlock with the sweep's manifests or a replica's heartbeats, which
// lock the rows they write in the same order. (As a batch of one upsert
// per tenant, in map order, it deadlocked with the sweep at a leader's
// first pass: genesis-load scale, 20,000 tenants.)
func (s *Store) SetDesired(ctx context.Context, desired map[string]schema.State, commit string) error {
	ws := slices.Sorted(maps.Keys(desired))
	states := make([]string, len(ws))
	for k, w := range ws {
		states[k] = string(desired[w])
	}
	if _, err := s.pool.Exec(ctx, setDesiredSQL, ws, states); err != nil {
		return fmt.Errorf("record desired states: %w", err)
	}
	return s.SetState(ctx, "desired_commit", commit)
}

// Row-lock order. Every statement writing many fleet_status rows first
// locks them with
//
//	SELECT f.workspace FROM fleet_status f ... ORDER BY f.workspace FOR NO KEY UPDATE OF f
//
// (the sort runs before the lock, so the locks are taken in workspace
// order) and writes only rows that lock returned; one that also writes
// agents locks those first, in droplet order. Two such statements then
// never wait on each other in a cycle: deadlock-free by ordering, not by
// retrying. TestBulkWritesNeverDeadlock runs them together.

// setDesiredSQL: $1 the workspaces (sorted), $2 their declared states.
const setDesiredSQL = `WITH want AS (
	SELECT * FROM unnest($1::text[], $2::text[]) AS t(w, d)
), lk AS (
	SELECT f.workspace FROM fleet_status f JOIN want ON f.workspace = want.w
	WHERE f.desired_state IS DISTINCT FROM want.d
	ORDER BY f.workspace FOR NO KEY UPDATE OF f
), upd AS (
	UPDATE fleet_status f SET desired_state = want.d, updated_at = now()
	FROM want JOIN lk ON lk.workspace = want.w
	WHERE f.workspace = want.w AND f.desired_state IS DISTINCT FROM want.d
)
INSERT INTO fleet_status (workspace, desired_state)
SELECT w, d FROM want WHERE NOT EXISTS (SELECT 1 FROM fleet_status f WHERE f.workspace = want.w) ORDER BY w
ON CONFLICT (workspace) DO UPDATE SET desired_state = excluded.desired_state, updated_at = now()
	WHERE fleet_status.desired_state IS DISTINCT FROM excluded.desired_state`

// SetState and GetState keep small named values (the last reconciled
// commit).
func (s *Store) SetState(ctx context.Context, key, value string) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO reconciler_state (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = $2, updated_at = now()`, key, value)
	return err
}

// GetState returns the value of key, "" when unset.
func (s *Store) GetState(ctx context.Context, key string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, `SELECT value FROM reconciler_state WHERE key = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// FleetRow is one workspace's fleet_status row, as the API reads it (the
// API answers it as api.TenantStatus, converted field by field).
type FleetRow struct {
	Workspace       string
	Desired         string
	Lifecycle       string
	Health          string
	DropletID       int64
	DropletName     string
	Account         string
	Region          string
	Size            string
	IP              string
	SnapshotID      string
	SnapshotGB      float64
	HibernatedByPol bool
	LastCommit      string
	LastError       string
	LastHeartbeat   time.Time
	// ManifestIssued is the newest manifest version issued to the
	// workspace's droplet; ManifestApplied the one its agent last reported
	// applied. Equal: the agent runs (and trusts the keys of) the newest.
	ManifestIssued  int64
	ManifestApplied int64
	// N8NVersion and AgentVersion are what the droplet's agent last
	// reported running.
	N8NVersion   string
	AgentVersion string
	UpdatedAt    time.Time
	// Hibernation (idle policy and the wake fast path).
	WakeRequested bool
	LastActivity  time.Time
	// IdleWarnedAt is when the tenant was warned of an idle hibernation
	// (shown only while no activity came after it).
	IdleWarnedAt time.Time
	// The work queue's retry state (tenant_retries), when the last action
	// failed: "backing off until RetryAfter (attempt Attempts, last error
	// kind LastErrorKind)"; a terminal kind has no RetryAfter and waits for
	// a change of the tenant's file or POST /v1/tenants/{id}/retry.
	RetryAfter    time.Time
	Attempts      int
	LastErrorKind string
	// NameTarget is what the stable DNS name says (dns_target).
	NameTarget string
	// HealthDetail is what the newest heartbeat said (nil: none yet).
	HealthDetail *schema.HealthDetail
}

// Fleet lists every workspace's status, by id.
func (s *Store) Fleet(ctx context.Context) ([]FleetRow, error) {
	return s.fleetRows(ctx, "")
}

// fleetRows reads fleet_status rows (with their retry state) matching
// where ("": all), by id.
func (s *Store) fleetRows(ctx context.Context, where string, args ...any) ([]FleetRow, error) {
	rows, err := s.pool.Query(ctx, `SELECT workspace, desired_state, state, health, coalesce(droplet_id, 0), coalesce(droplet_name, ''),
		coalesce(account, ''), coalesce(region, ''), coalesce(size, ''), coalesce(host(ip), ''), coalesce(snapshot_id, ''),
		coalesce(snapshot_size_gb, 0), hibernated_by_policy, coalesce(last_commit, ''), coalesce(f.last_error, ''),
		coalesce(last_heartbeat_at, 'epoch'), manifest_version_issued, manifest_version_applied,
		coalesce(n8n_version, ''), coalesce(agent_version, ''), f.updated_at,
		wake_requested, coalesce(last_activity_at, 'epoch'),
		CASE WHEN idle_warned_at >= coalesce(last_activity_at, 'epoch') THEN idle_warned_at ELSE 'epoch' END,
		coalesce(r.retry_after, 'epoch'), coalesce(r.attempts, 0), coalesce(r.last_error_kind, ''), coalesce(host(f.dns_target), ''),
		f.heartbeat->'components', coalesce((f.heartbeat->>'memory_used_bytes')::numeric, 0), coalesce((f.heartbeat->>'memory_total_bytes')::numeric, 0),
		coalesce((f.heartbeat->>'disk_used_bytes')::numeric, 0), coalesce((f.heartbeat->>'disk_total_bytes')::numeric, 0),
		coalesce((f.heartbeat->>'uptime_seconds')::float8, 0), coalesce(f.heartbeat->>'apply_error', ''), coalesce(f.heartbeat->>'verify_error', ''),
		coalesce((f.heartbeat->>'swap_used_bytes')::numeric, 0), coalesce((f.heartbeat->>'swap_total_bytes')::numeric, 0),
		f.heartbeat->'repairs'
		FROM fleet_status f LEFT JOIN tenant_retries r USING (workspace) `+where+` ORDER BY workspace`, args...)
	if err != nil {
		return nil, fmt.Errorf("list fleet: %w", err)
	}
	defer rows.Close()
	var out []FleetRow
	for rows.Next() {
		var r FleetRow
		var hd schema.HealthDetail
		var components, repairs []byte
		var memUsed, memTotal, diskUsed, diskTotal, swapUsed, swapTotal float64
		if err := rows.Scan(&r.Workspace, &r.Desired, &r.Lifecycle, &r.Health, &r.DropletID, &r.DropletName, &r.Account, &r.Region, &r.Size,
			&r.IP, &r.SnapshotID, &r.SnapshotGB, &r.HibernatedByPol, &r.LastCommit, &r.LastError, &r.LastHeartbeat,
			&r.ManifestIssued, &r.ManifestApplied, &r.N8NVersion, &r.AgentVersion, &r.UpdatedAt, &r.WakeRequested, &r.LastActivity, &r.IdleWarnedAt,
			&r.RetryAfter, &r.Attempts, &r.LastErrorKind, &r.NameTarget,
			&components, &memUsed, &memTotal, &diskUsed, &diskTotal, &hd.UptimeSeconds, &hd.ApplyError, &hd.VerifyError,
			&swapUsed, &swapTotal, &repairs); err != nil {
			return nil, err
		}
		if !r.LastHeartbeat.Equal(time.Unix(0, 0)) {
			d := hd
			d.ReportedAt = r.LastHeartbeat
			d.MemoryUsed, d.MemoryTotal, d.DiskUsed, d.DiskTotal = uint64(memUsed), uint64(memTotal), uint64(diskUsed), uint64(diskTotal)
			d.SwapUsed, d.SwapTotal = uint64(swapUsed), uint64(swapTotal)
			if len(components) > 0 {
				// Stored as the agent sent it, already validated; a row
				// that does not decode shows without components.
				_ = json.Unmarshal(components, &d.Components)
			}
			if len(repairs) > 0 {
				_ = json.Unmarshal(repairs, &d.Repairs)
			}
			r.HealthDetail = &d
		}
		for _, t := range []*time.Time{&r.LastHeartbeat, &r.LastActivity, &r.IdleWarnedAt, &r.RetryAfter} {
			if t.Equal(time.Unix(0, 0)) {
				*t = time.Time{}
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// SetNameTarget makes workspace's recorded name target actual when it
// still says recorded (the name audit found the zone saying something
// else: the planner's point_name repairs it); a write since the audit's
// read wins.
func (s *Store) SetNameTarget(ctx context.Context, workspace, recorded, actual string) error {
	_, err := s.pool.Exec(ctx, `UPDATE fleet_status SET dns_target = $3, dns_at = now()
		WHERE workspace = $1 AND coalesce(host(dns_target), '') = $2`, workspace, recorded, nullIfEmpty(actual))
	if err != nil {
		return fmt.Errorf("record name drift of %s: %w", workspace, err)
	}
	return nil
}

// ReservedIPOf is workspace's reserved IP and its account (zero: none).
func (s *Store) ReservedIPOf(ctx context.Context, workspace string) (ReservedIP, error) {
	var r ReservedIP
	err := s.pool.QueryRow(ctx, `SELECT coalesce(host(reserved_ip), ''), coalesce(reserved_ip_account, '') FROM fleet_status WHERE workspace = $1`,
		workspace).Scan(&r.Address, &r.Account)
	if errors.Is(err, pgx.ErrNoRows) {
		return ReservedIP{}, nil
	}
	if err != nil {
		return ReservedIP{}, fmt.Errorf("read reserved ip of %s: %w", workspace, err)
	}
	return r, nil
}
