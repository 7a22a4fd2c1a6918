package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// agentsChannel is agentapi's notification channel: "a <droplet>" makes
// every replica forget the droplet's cached credential (and so the
// workspace it was cached with).
const agentsChannel = "genesis_agents"

// MoveSpare gives the droplet of an assign_spare action to its tenant, in
// one transaction: the tenant's fleet_status row takes the droplet (id, the
// tenant's name for it, account, region, size, ip; CONFIGURING until its
// agent applies the tenant's manifest), the spare's row lets go of it (and
// keeps its generation), the droplet's agent moves to the tenant's
// workspace with its manifest version high-water mark (the spare's
// manifests are dropped; the tenant's continue above them, so the agent
// never sees its version go down), and every replica is told to forget the
// agent's cached credential. It is idempotent: a droplet already moved is
// left as it is. A droplet whose agent belongs to neither workspace is
// refused.
func (s *Store) MoveSpare(ctx context.Context, a plan.Action, ip string, desired schema.State) error {
	if a.Kind != plan.AssignSpare || !schema.IsSpareWorkspace(a.Spare) || a.DropletID == 0 {
		return fmt.Errorf("move spare: %s is not an assignment of a spare droplet", a)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var owner string
		var hwm int64
		err := tx.QueryRow(ctx, `SELECT workspace, manifest_version FROM agents WHERE droplet_id = $1 FOR UPDATE`, a.DropletID).Scan(&owner, &hwm)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("droplet %d has no enrolled agent", a.DropletID)
		}
		if err != nil {
			return err
		}
		if owner == a.Workspace {
			return nil // moved already
		}
		if owner != a.Spare {
			return fmt.Errorf("droplet %d's agent belongs to %s, not to spare %s", a.DropletID, owner, a.Spare)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM manifests WHERE droplet_id = $1`, a.DropletID); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE fleet_status SET droplet_id = NULL, droplet_name = NULL, ip = NULL,
			state = CASE WHEN state = $3 THEN state ELSE $4 END, state_since = now(), health = 'unknown',
			manifest_version_issued = 0, manifest_version_applied = 0, last_heartbeat_at = NULL, heartbeat = '{}', updated_at = now()
			WHERE droplet_id = $1 AND workspace <> $2`, a.DropletID, a.Workspace, lifecycle.Provisioning, lifecycle.Pending); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO fleet_status (workspace, droplet_id, droplet_name, account, region, size, ip, state, desired_state, generation, manifest_version_issued)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $11, $8, $9, $10)
			ON CONFLICT (workspace) DO UPDATE SET droplet_id = $2, droplet_name = $3, account = $4, region = $5, size = $6, ip = $7,
				state = $11, state_since = now(), desired_state = $8, generation = $9, health = 'unknown',
				manifest_version_issued = $10, manifest_version_applied = 0, last_heartbeat_at = NULL, heartbeat = '{}',
				hibernated_by_policy = false, wake_requested = false, last_error = NULL, updated_at = now()`,
			a.Workspace, a.DropletID, a.Droplet, a.Account, nullIfEmpty(a.Region), nullIfEmpty(a.Size), nullIfEmpty(ip),
			string(desired), a.Gen, hwm, lifecycle.Finished(lifecycle.AssignSpare, false)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE agents SET workspace = $2, enrolled_at = now() WHERE droplet_id = $1`, a.DropletID, a.Workspace); err != nil {
			return err
		}
		if err := audit(ctx, tx, "", "assign_spare.moved", a.Workspace, 0, map[string]any{"spare": a.Spare, "droplet_id": a.DropletID}, ""); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, agentsChannel, fmt.Sprintf("a %d", a.DropletID))
		return err
	})
	if err != nil {
		return fmt.Errorf("move spare droplet %d to %s: %w", a.DropletID, a.Workspace, err)
	}
	return nil
}

// applySpareOutcome records a spare action's success (Finish).
func applySpareOutcome(ctx context.Context, tx pgx.Tx, a plan.Action, out Outcome) error {
	var err error
	switch a.Kind {
	case plan.AssignSpare:
		// MoveSpare moved the droplet; the tenant's row now records the
		// tenant content its manifest was rendered from.
		_, err = tx.Exec(ctx, `UPDATE fleet_status SET tenant_hash = $2, last_commit = $3, desired_state = $4, last_error = NULL, updated_at = now()
			WHERE workspace = $1`, a.Workspace, nullIfEmpty(out.TenantHash), nullIfEmpty(out.Commit), string(out.Desired))
	case plan.DestroySpare:
		// A spare holds nothing worth keeping: its row (and, by cascade,
		// its agent and tokens) goes with its droplet.
		_, err = tx.Exec(ctx, `DELETE FROM fleet_status WHERE workspace = $1 AND (droplet_id IS NULL OR droplet_id = $2)`, a.Workspace, a.DropletID)
	}
	return err
}
