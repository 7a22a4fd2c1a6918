package store

import (
	"context"
	"testing"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// TestRecordHashes: a mass change's update_manifest actions are journaled
// as succeeded operations with their tenants' new hashes and audit
// entries, in one statement; a tenant with an operation in flight, or
// without a fleet_status row, is left out untouched; another kind is
// refused with nothing written.
func TestRecordHashes(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	if err := s.SetDesired(ctx, map[string]schema.State{"ws-a": schema.StateRunning, "ws-b": schema.StateRunning, "ws-c": schema.StateRunning}, commit); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(ctx, plan.Action{Kind: plan.Resize, Workspace: "ws-b", Account: "acct-a", Droplet: "genesis-ws-b-2", Gen: 2}, schema.StateRunning, commit); err != nil {
		t.Fatal(err)
	}
	update := func(ws string, id int) HashUpdate {
		return HashUpdate{Action: plan.Action{Kind: plan.UpdateManifest, Workspace: ws, Account: "acct-a", Droplet: "genesis-" + ws + "-1", DropletID: id, Reason: "tenant changed in git"},
			Hash: "hash-" + ws, Desired: schema.StateRunning}
	}
	// Out of order: RecordHashes sorts (the row-lock order).
	got, err := s.RecordHashes(ctx, []HashUpdate{update("ws-d", 4), update("ws-c", 3), update("ws-b", 2), update("ws-a", 1)}, commit)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["ws-a"] == 0 || got["ws-c"] == 0 {
		t.Fatalf("recorded %v, want ws-a and ws-c (ws-b has an operation in flight, ws-d no row)", got)
	}
	for ws, id := range got {
		var kind, state, opCommit string
		var finished, dropletID int64
		if err := s.pool.QueryRow(ctx, `SELECT kind, state, commit, (finished_at IS NOT NULL)::int, droplet_id FROM operations WHERE id = $1 AND workspace = $2`, id, ws).
			Scan(&kind, &state, &opCommit, &finished, &dropletID); err != nil {
			t.Fatalf("%s's operation %d: %v", ws, id, err)
		}
		if kind != "update_manifest" || state != "succeeded" || opCommit != commit || finished != 1 || dropletID == 0 {
			t.Errorf("%s's operation: %s %s %s finished=%d droplet=%d", ws, kind, state, opCommit, finished, dropletID)
		}
		var hash, last string
		if err := s.pool.QueryRow(ctx, `SELECT tenant_hash, last_commit FROM fleet_status WHERE workspace = $1`, ws).Scan(&hash, &last); err != nil || hash != "hash-"+ws || last != commit {
			t.Errorf("%s: hash %q, last commit %q (%v); want hash-%s and the commit", ws, hash, last, err, ws)
		}
		var audits int
		if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE operation_id = $1 AND action = 'update_manifest' AND workspace = $2 AND detail->'action'->>'reason' = 'tenant changed in git'`, id, ws).Scan(&audits); err != nil || audits != 1 {
			t.Errorf("%s: %d audit entries (%v), want 1 with the action", ws, audits, err)
		}
	}
	var untouched int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM fleet_status WHERE workspace = 'ws-b' AND tenant_hash IS NULL`).Scan(&untouched); err != nil || untouched != 1 {
		t.Errorf("ws-b (operation in flight): %d rows without a hash (%v), want its row untouched", untouched, err)
	}
	var rows int
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM fleet_status WHERE workspace = 'ws-d') + (SELECT count(*) FROM operations WHERE workspace IN ('ws-b', 'ws-d') AND kind = 'update_manifest')`).Scan(&rows); err != nil || rows != 0 {
		t.Errorf("ws-b and ws-d: %d rows (%v), want none written", rows, err)
	}

	// Another kind: refused, nothing written.
	bad := update("ws-a", 1)
	bad.Action.Kind = plan.Reboot
	if _, err := s.RecordHashes(ctx, []HashUpdate{update("ws-c", 3), bad}, commit); err == nil {
		t.Error("a reboot recorded as a hash update")
	}
	var ops int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM operations WHERE kind = 'update_manifest'`).Scan(&ops); err != nil || ops != 2 {
		t.Errorf("%d update_manifest operations after a refused call (%v), want 2", ops, err)
	}
}

// TestRecordHashesAllOrNone is a leader stopped in the middle of a chunk:
// the statement has taken the first tenants' rows and waits for the lock
// of the last one (held by another transaction) when its context ends, as
// a killed process's connection does. Nothing of the chunk stays: no
// operation, no hash, no audit entry (a chunk recorded tenant by tenant
// would leave the first two); the next leader's plan records the whole
// chunk again.
func TestRecordHashesAllOrNone(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	if err := s.SetDesired(ctx, map[string]schema.State{"ws-a": schema.StateRunning, "ws-b": schema.StateRunning, "ws-c": schema.StateRunning}, commit); err != nil {
		t.Fatal(err)
	}
	var us []HashUpdate
	for k, ws := range []string{"ws-a", "ws-b", "ws-c"} {
		us = append(us, HashUpdate{Action: plan.Action{Kind: plan.UpdateManifest, Workspace: ws, Account: "acct-a", Droplet: "genesis-" + ws + "-1", DropletID: k + 1, Reason: "tenant changed in git"},
			Hash: "hash-" + ws, Desired: schema.StateRunning})
	}
	hold, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Rollback(context.WithoutCancel(ctx))
	if _, err := hold.Exec(ctx, `SELECT 1 FROM fleet_status WHERE workspace = 'ws-c' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}
	stopped, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := s.RecordHashes(stopped, us, commit)
		done <- err
	}()
	// The chunk waits for ws-c's lock, the rows before it taken.
	testkit.WaitFor(t, "the chunk to wait for ws-c's row lock", func() bool {
		var waiting int
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&waiting)
		return err == nil && waiting == 1
	})
	stop()
	if err := <-done; err == nil {
		t.Fatal("a chunk stopped in the middle reported success")
	}
	if err := hold.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var ops, hashed, audits int
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM operations), (SELECT count(*) FROM fleet_status WHERE tenant_hash IS NOT NULL), (SELECT count(*) FROM audit_log WHERE action = 'update_manifest')`).
		Scan(&ops, &hashed, &audits); err != nil {
		t.Fatal(err)
	}
	if ops+hashed+audits != 0 {
		t.Fatalf("after a chunk stopped in the middle: %d operations, %d hashes, %d audit entries; want none", ops, hashed, audits)
	}
	// The next leader plans the same tenants again: all of them recorded.
	got, err := s.RecordHashes(ctx, us, commit)
	if err != nil || len(got) != 3 {
		t.Fatalf("the chunk again: %v, %v; want all 3 recorded", got, err)
	}
}
