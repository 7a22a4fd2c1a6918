package store

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

const commit = "0123456789abcdef0123456789abcdef01234567"

func open(t *testing.T) (*Store, string) {
	t.Helper()
	url := pgtest.New(t)
	s, err := Open(t.Context(), url, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	f := &schema.Fleet{Spec: schema.FleetSpec{Accounts: []schema.Account{{Name: "acct-a", Regions: []string{"nyc3"}, MaxDroplets: 5}}}}
	if err := s.SyncAccounts(t.Context(), f); err != nil {
		t.Fatal(err)
	}
	return s, url
}

func TestJournalLifecycle(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	create := plan.Action{Kind: plan.Create, Workspace: "ws-a", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Droplet: "genesis-ws-a-1", Gen: 1}
	id, err := s.Begin(ctx, create, schema.StateRunning, commit)
	if err != nil {
		t.Fatal(err)
	}
	// At most one operation in flight per workspace.
	if _, err := s.Begin(ctx, plan.Action{Kind: plan.Destroy, Workspace: "ws-a"}, schema.StateAbsent, commit); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Begin: err = %v, want ErrBusy", err)
	}
	if err := s.Step(ctx, id, "created", 77); err != nil {
		t.Fatal(err)
	}
	ops, err := s.InFlight(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ops) != 1 || ops[0].Step != "created" || ops[0].Commit != commit {
		t.Fatalf("in flight = %+v", ops)
	}
	if diff := cmp.Diff(create, ops[0].Action); diff != "" {
		t.Errorf("journaled action (-want +got):\n%s", diff)
	}
	st, _ := s.LoadStatus(ctx)
	if st["ws-a"].Lifecycle != "PROVISIONING" {
		t.Errorf("lifecycle during create = %q, want PROVISIONING", st["ws-a"].Lifecycle)
	}
	out := Outcome{Account: "acct-a", DropletID: 77, DropletName: "genesis-ws-a-1", IP: "127.1.0.1", TenantHash: "h1", Desired: schema.StateRunning, Commit: commit,
		Name: &NameWrite{Target: "127.1.0.1"}}
	if err := s.Finish(ctx, id, create, out, nil); err != nil {
		t.Fatal(err)
	}
	if ops, _ := s.InFlight(ctx); len(ops) != 0 {
		t.Errorf("in flight after finish = %v", ops)
	}
	st, _ = s.LoadStatus(ctx)
	want := plan.Status{Lifecycle: "INITIALIZING", Account: "acct-a", DropletID: 77, Generation: 1, TenantHash: "h1", IP: "127.1.0.1", NameTarget: "127.1.0.1"}
	if diff := cmp.Diff(want, st["ws-a"]); diff != "" {
		t.Errorf("status after create (-want +got):\n%s", diff)
	}
	// The name audit's drift: recorded only while the record still says
	// what the audit read.
	if err := s.SetNameTarget(ctx, "ws-a", "127.9.9.9", "127.1.0.8"); err != nil {
		t.Fatal(err)
	}
	if st, _ = s.LoadStatus(ctx); st["ws-a"].NameTarget != "127.1.0.1" {
		t.Errorf("a stale audit changed the name target to %q", st["ws-a"].NameTarget)
	}
	if err := s.SetNameTarget(ctx, "ws-a", "127.1.0.1", ""); err != nil {
		t.Fatal(err)
	}
	if st, _ = s.LoadStatus(ctx); st["ws-a"].NameTarget != "" {
		t.Errorf("after the audit found no record, target %q", st["ws-a"].NameTarget)
	}

	// Hibernate records the snapshot and drops the droplet.
	hib := plan.Action{Kind: plan.Hibernate, Workspace: "ws-a", Account: "acct-a", Droplet: "genesis-ws-a-1", DropletID: 77}
	id, err = s.Begin(ctx, hib, schema.StateRunning, commit)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, id, hib, Outcome{SnapshotID: "900", SnapshotGB: 2.5, ByPolicy: true, Desired: schema.StateRunning, Commit: commit}, nil); err != nil {
		t.Fatal(err)
	}
	st, _ = s.LoadStatus(ctx)
	want = plan.Status{Lifecycle: "HIBERNATED", Account: "acct-a", Generation: 1, SnapshotID: "900", HibernatedByPolicy: true, TenantHash: "h1"}
	if diff := cmp.Diff(want, st["ws-a"]); diff != "" {
		t.Errorf("status after hibernate (-want +got):\n%s", diff)
	}

	// A failure is journaled and audited; the status keeps its state.
	wake := plan.Action{Kind: plan.Wake, Workspace: "ws-a", Account: "acct-a", Snapshot: "900", Droplet: "genesis-ws-a-2", Gen: 2}
	id, err = s.Begin(ctx, wake, schema.StateRunning, commit)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, id, wake, Outcome{Commit: commit}, errors.New("create droplet: 422 region unavailable")); err != nil {
		t.Fatal(err)
	}
	rows, _ := s.Fleet(ctx)
	if len(rows) != 1 || rows[0].LastError != "create droplet: 422 region unavailable" || rows[0].Lifecycle != "WAKING" {
		t.Errorf("fleet after failed wake = %+v", rows)
	}
	var audits []string
	r, err := s.pool.Query(ctx, `SELECT action FROM audit_log ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var a string
		r.Scan(&a)
		audits = append(audits, a)
	}
	if diff := cmp.Diff([]string{"create", "hibernate", "wake.failed"}, audits); diff != "" {
		t.Errorf("audit log (-want +got):\n%s", diff)
	}
}

// replicas opens two stores on one database, as two replicas would.
func replicas(t *testing.T) (a, b *Store) {
	t.Helper()
	a, url := open(t)
	b, err := Open(t.Context(), url, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return a, b
}

func TestLeaderElection(t *testing.T) {
	a, b := replicas(t)
	la, err := a.TryLead(t.Context(), 50*time.Millisecond)
	if err != nil || la == nil {
		t.Fatalf("first replica did not lead: %v", err)
	}
	if lb, err := b.TryLead(t.Context(), 50*time.Millisecond); err != nil || lb != nil {
		t.Fatalf("second replica leads too (%v)", err)
	}
	la.Release()
	lb, err := b.TryLead(t.Context(), 50*time.Millisecond)
	if err != nil || lb == nil {
		t.Fatalf("second replica could not take over after release: %v", err)
	}
	// Killing the leader's session (as a crash would) frees the lock.
	if _, err := a.pool.Exec(t.Context(), `SELECT pg_terminate_backend($1)`, int64(lb.pid)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lb.Lost:
	case <-time.After(30 * time.Second):
		t.Fatal("the leader never noticed its session died")
	}
	lb.Release()
	var la2 *Leader
	for la2 == nil {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		la2, err = a.TryLead(ctx, 50*time.Millisecond)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	la2.Release()
}

func TestSetDesiredAndState(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	if err := s.SetDesired(ctx, map[string]schema.State{"ws-a": schema.StateRunning, "ws-b": schema.StateAbsent}, commit); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]string{}
	for _, r := range rows {
		got[r.Workspace] = [2]string{r.Desired, r.Lifecycle}
	}
	if diff := cmp.Diff(map[string][2]string{"ws-a": {"running", "PENDING"}, "ws-b": {"absent", "PENDING"}}, got, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("fleet (-want +got):\n%s", diff)
	}
	if v, _ := s.GetState(ctx, "desired_commit"); v != commit {
		t.Errorf("desired_commit = %q", v)
	}
	if v, _ := s.GetState(ctx, "nothing"); v != "" {
		t.Errorf("unset key = %q", v)
	}
}

// TestFailedHibernationLeavesHibernating checks that a hibernation that
// fails with its droplet still there moves the tenant to CONFIGURING (its
// manifest says running again, the agent restarts n8n), never leaving it
// stuck in HIBERNATING with n8n stopped.
func TestFailedHibernationLeavesHibernating(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	create := plan.Action{Kind: plan.Create, Workspace: "ws-a", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Droplet: "genesis-ws-a-1", Gen: 1}
	id, err := s.Begin(ctx, create, schema.StateRunning, commit)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(ctx, id, create, Outcome{Account: "acct-a", DropletID: 77, DropletName: "genesis-ws-a-1", Desired: schema.StateRunning, Commit: commit}, nil); err != nil {
		t.Fatal(err)
	}
	hib := plan.Action{Kind: plan.Hibernate, Workspace: "ws-a", Account: "acct-a", Droplet: "genesis-ws-a-1", DropletID: 77}
	if id, err = s.Begin(ctx, hib, schema.StateHibernated, commit); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.LoadStatus(ctx); st["ws-a"].Lifecycle != "HIBERNATING" {
		t.Fatalf("lifecycle during hibernation = %q", st["ws-a"].Lifecycle)
	}
	if err := s.Finish(ctx, id, hib, Outcome{Desired: schema.StateHibernated, Commit: commit}, errors.New("snapshot droplet 77: 422 droplet already has a pending event")); err != nil {
		t.Fatal(err)
	}
	st, _ := s.LoadStatus(ctx)
	if got := st["ws-a"]; got.Lifecycle != "CONFIGURING" || got.DropletID != 77 {
		t.Errorf("after a failed hibernation: %+v, want CONFIGURING with droplet 77", got)
	}
}

// TestCreatedBindsTokens: when the create returns, the workspace's unbound
// provisioning tokens for the created droplet's name are bound to its id in
// the journal step's transaction; tokens of other names or workspaces, and
// tokens bound already, are untouched. A token minted by a resumed try
// (after the step) is bound when the action finishes. Wake, resize and
// rebuild record their droplet the same way.
func TestCreatedBindsTokens(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	mint := func(tok, ws, name string) {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, `INSERT INTO enrollment_tokens (token_hash, workspace, droplet_name, expires_at)
			VALUES (sha256($1::bytea), $2, $3, now() + interval '30 minutes')`, []byte(tok), ws, name); err != nil {
			t.Fatal(err)
		}
	}
	bound := func() map[string]int64 {
		t.Helper()
		rows, err := s.Pool().Query(ctx, `SELECT t.n, coalesce(e.droplet_id, 0) FROM enrollment_tokens e
			JOIN unnest($1::text[]) AS t(n) ON e.token_hash = sha256(t.n::bytea)`, []string{"a1", "a1-old", "a2", "b1", "a1-resumed"})
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		got := map[string]int64{}
		for rows.Next() {
			var n string
			var id int64
			rows.Scan(&n, &id)
			got[n] = id
		}
		return got
	}
	create := func(ws string) (plan.Action, int64) {
		a := plan.Action{Kind: plan.Create, Workspace: ws, Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Droplet: plan.DropletName(ws, 1), Gen: 1}
		id, err := s.Begin(ctx, a, schema.StateRunning, commit)
		if err != nil {
			t.Fatal(err)
		}
		return a, id
	}
	a, opA := create("ws-a")
	_, _ = create("ws-b")
	mint("a1", "ws-a", "genesis-ws-a-1")
	mint("a1-old", "ws-a", "genesis-ws-a-1")
	if _, err := s.Pool().Exec(ctx, `UPDATE enrollment_tokens SET droplet_id = 5 WHERE token_hash = sha256('a1-old'::bytea)`); err != nil {
		t.Fatal(err)
	}
	mint("a2", "ws-a", "genesis-ws-a-2")
	mint("b1", "ws-b", "genesis-ws-b-1")

	if err := s.Created(ctx, opA, "created", 77, "genesis-ws-a-1"); err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"a1": 77, "a1-old": 5, "a2": 0, "b1": 0}
	if diff := cmp.Diff(want, bound()); diff != "" {
		t.Errorf("tokens after the create returned (-want +got):\n%s", diff)
	}
	if ops, _ := s.InFlight(ctx); len(ops) != 2 {
		t.Fatalf("in flight = %+v", ops)
	}
	mint("a1-resumed", "ws-a", "genesis-ws-a-1")
	out := Outcome{Account: "acct-a", DropletID: 77, DropletName: "genesis-ws-a-1", IP: "127.1.0.1", Desired: schema.StateRunning, Commit: commit}
	if err := s.Finish(ctx, opA, a, out, nil); err != nil {
		t.Fatal(err)
	}
	want["a1-resumed"] = 77
	if diff := cmp.Diff(want, bound()); diff != "" {
		t.Errorf("tokens after the create finished (-want +got):\n%s", diff)
	}
	if err := s.Created(ctx, 424242, "created", 78, "genesis-ws-a-1"); err == nil {
		t.Error("Created for an unknown operation succeeded")
	}
}
