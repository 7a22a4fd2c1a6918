package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// HashUpdate is one update_manifest action whose render is left to the
// manifest sweep: what RecordHashes records for it.
type HashUpdate struct {
	Action  plan.Action
	Hash    string
	Desired schema.State
}

// RecordHashes journals many update_manifest actions at once, as Begin
// and Finish journal one that succeeded: for each, a succeeded operation,
// the tenant's new hash, commit and desired state in fleet_status, and an
// audit entry, all in one transaction (all or none: nothing is left
// running for a resume). It is for a change of many tenants whose
// manifests the sweep renders anyway: one statement per call instead of
// ten round trips per tenant, which held the database pool the sweep
// needed. A workspace with an operation in flight, or without a
// fleet_status row, is left out (its action waits, as Begin's ErrBusy);
// RecordHashes returns the operation ids of the workspaces it recorded. It
// locks fleet_status rows in workspace order (the row-lock order above).
func (s *Store) RecordHashes(ctx context.Context, us []HashUpdate, commit string) (map[string]int64, error) {
	us = slices.Clone(us)
	slices.SortFunc(us, func(a, b HashUpdate) int {
		switch {
		case a.Action.Workspace < b.Action.Workspace:
			return -1
		case a.Action.Workspace > b.Action.Workspace:
			return 1
		}
		return 0
	})
	n := len(us)
	ws, accts, names, actions, hashes, desired := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	ids := make([]int64, n)
	for k, u := range us {
		if u.Action.Kind != plan.UpdateManifest {
			return nil, fmt.Errorf("record hashes: %s is not an update_manifest", u.Action)
		}
		a, err := json.Marshal(u.Action)
		if err != nil {
			return nil, err
		}
		ws[k], accts[k], names[k], ids[k], actions[k], hashes[k], desired[k] = u.Action.Workspace, u.Action.Account, u.Action.Droplet, int64(u.Action.DropletID), string(a), u.Hash, string(u.Desired)
	}
	out := map[string]int64{}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := checkEpoch(ctx, tx); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, recordHashesSQL, ws, accts, names, ids, actions, hashes, desired, nullIfEmpty(commit), epochArg(ctx))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var w string
			var id int64
			if err := rows.Scan(&w, &id); err != nil {
				return err
			}
			out[w] = id
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("record the hashes of %d tenants: %w", n, err)
	}
	return out, nil
}

// recordHashesSQL: $1 the workspaces (sorted), $2 accounts, $3 droplet
// names, $4 droplet ids, $5 the actions (JSON), $6 hashes, $7 desired
// states, $8 the commit, $9 the epoch.
const recordHashesSQL = `WITH t AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::text[]) AS t(w, acct, dname, did, action, hash, desired)
), lk AS (
	SELECT f.workspace FROM fleet_status f JOIN t ON f.workspace = t.w
	WHERE NOT EXISTS (SELECT 1 FROM operations o WHERE o.workspace = t.w AND o.state IN ('pending', 'running'))
	ORDER BY f.workspace FOR NO KEY UPDATE OF f
), ins AS (
	INSERT INTO operations (workspace, kind, state, account, droplet_name, droplet_id, action, commit, started_at, finished_at, attempts, epoch)
	SELECT t.w, 'update_manifest', 'succeeded', NULLIF(t.acct, ''), NULLIF(t.dname, ''), NULLIF(t.did, 0), t.action::jsonb, $8::text, now(), now(), 1, $9::bigint
	FROM t JOIN lk ON lk.workspace = t.w ORDER BY t.w
	RETURNING id, workspace
), upd AS (
	UPDATE fleet_status f SET tenant_hash = NULLIF(t.hash, ''), last_commit = $8::text, desired_state = t.desired, updated_at = now()
	FROM t JOIN lk ON lk.workspace = t.w WHERE f.workspace = t.w
), aud AS (
	INSERT INTO audit_log (actor, action, workspace, operation_id, detail, commit)
	SELECT 'reconciler', 'update_manifest', ins.workspace, ins.id, jsonb_build_object('action', t.action::jsonb, 'droplet_id', t.did), $8::text
	FROM ins JOIN t ON t.w = ins.workspace
)
SELECT workspace, id FROM ins`
