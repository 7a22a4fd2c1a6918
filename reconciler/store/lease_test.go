package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// opRow is what the journal holds about one operation.
type opRow struct {
	State, Step string
	Attempts    int
	Epoch       int64
}

func readOp(t *testing.T, s *Store, id int64) opRow {
	t.Helper()
	var r opRow
	if err := s.pool.QueryRow(t.Context(), `SELECT state, coalesce(step, ''), attempts, coalesce(epoch, 0) FROM operations WHERE id = $1`, id).
		Scan(&r.State, &r.Step, &r.Attempts, &r.Epoch); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitLead takes the lead on s, waiting for a lock a dead session held.
func waitLead(t *testing.T, s *Store) *Leader {
	t.Helper()
	for range 200 {
		l, err := s.TryLead(t.Context(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if l != nil {
			return l
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the leader lock was never freed")
	return nil
}

// TestJournalEpoch: each take of the leader lock gets the next epoch;
// journal writes under a leader's epoch record it; once another replica
// took the lock, every journal write of the old epoch (begin, step,
// created, retry, finish) is refused with ErrStaleEpoch, calls the stale
// hook, and changes nothing.
func TestJournalEpoch(t *testing.T) {
	a, b := replicas(t)
	ctx := t.Context()

	la := waitLead(t, a)
	if la.Epoch < 1 {
		t.Fatalf("first epoch = %d, want ≥ 1", la.Epoch)
	}
	var stale []error
	actx := WithEpoch(ctx, la.Epoch, func(err error) { stale = append(stale, err) })
	create := plan.Action{Kind: plan.Create, Workspace: "ws-a", Account: "acct-a", Region: "nyc3", Droplet: "genesis-ws-a-1", Gen: 1}
	id, err := a.Begin(actx, create, schema.StateRunning, commit)
	if err != nil {
		t.Fatal(err)
	}
	if got := readOp(t, a, id); got.Epoch != la.Epoch {
		t.Errorf("begun operation's epoch = %d, want %d", got.Epoch, la.Epoch)
	}
	// The old leader's lock session is cut (as pg_terminate_backend, a
	// network cut or a crash would); replica b takes over.
	if err := la.Check(ctx); err != nil {
		t.Fatalf("check of a held lock: %v", err)
	}
	if _, err := b.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, int64(la.pid)); err != nil {
		t.Fatal(err)
	}
	if err := la.Check(ctx); err == nil {
		t.Fatal("check of a terminated lock session succeeded")
	}
	select {
	case <-la.Lost:
	default:
		t.Error("a failed check did not close Lost")
	}
	la.Release()
	lb := waitLead(t, b)
	defer lb.Release()
	if lb.Epoch != la.Epoch+1 {
		t.Fatalf("epoch after take-over = %d, want %d", lb.Epoch, la.Epoch+1)
	}
	before := readOp(t, a, id)

	writes := []struct {
		name string
		do   func(context.Context) error
	}{
		{"begin", func(ctx context.Context) error {
			_, err := a.Begin(ctx, plan.Action{Kind: plan.Create, Workspace: "ws-b", Account: "acct-a", Droplet: "genesis-ws-b-1", Gen: 1}, schema.StateRunning, commit)
			return err
		}},
		{"step", func(ctx context.Context) error { return a.Step(ctx, id, "created", 77) }},
		{"created", func(ctx context.Context) error { return a.Created(ctx, id, "created", 77, "genesis-ws-a-1") }},
		{"retry", func(ctx context.Context) error { return a.Retry(ctx, id) }},
		{"finish succeeded", func(ctx context.Context) error {
			return a.Finish(ctx, id, create, Outcome{Account: "acct-a", DropletID: 77, DropletName: "genesis-ws-a-1", Desired: schema.StateRunning}, nil)
		}},
		{"record hashes", func(ctx context.Context) error {
			_, err := a.RecordHashes(ctx, []HashUpdate{{Action: plan.Action{Kind: plan.UpdateManifest, Workspace: "ws-a", Account: "acct-a", Droplet: "genesis-ws-a-1", DropletID: 77}, Hash: "h2", Desired: schema.StateRunning}}, commit)
			return err
		}},
		{"finish failed", func(ctx context.Context) error {
			return a.Finish(ctx, id, create, Outcome{Desired: schema.StateRunning}, errors.New("create droplet: 500"))
		}},
	}
	for _, w := range writes {
		t.Run("stale "+w.name, func(t *testing.T) {
			stale = nil
			err := w.do(actx)
			if !errors.Is(err, ErrStaleEpoch) {
				t.Fatalf("err = %v, want ErrStaleEpoch", err)
			}
			if len(stale) != 1 {
				t.Errorf("stale hook called %d times, want 1", len(stale))
			}
			if got := readOp(t, a, id); got != before {
				t.Errorf("operation = %+v, want unchanged %+v", got, before)
			}
		})
	}
	var n int
	if err := a.pool.QueryRow(ctx, `SELECT count(*) FROM operations WHERE workspace = 'ws-b'`).Scan(&n); err != nil || n != 0 {
		t.Errorf("operations of ws-b = %d (%v), want 0: a stale begin journaled", n, err)
	}
	var st string
	if err := a.pool.QueryRow(ctx, `SELECT state FROM fleet_status WHERE workspace = 'ws-a'`).Scan(&st); err != nil || st != "PROVISIONING" {
		t.Errorf("ws-a state = %q (%v), want PROVISIONING (untouched by the stale finish)", st, err)
	}

	// The new leader resumes the operation under its own epoch.
	bctx := WithEpoch(ctx, lb.Epoch, nil)
	if err := b.Retry(bctx, id); err != nil {
		t.Fatal(err)
	}
	if err := b.Created(bctx, id, "found", 77, "genesis-ws-a-1"); err != nil {
		t.Fatal(err)
	}
	if err := b.Finish(bctx, id, create, Outcome{Account: "acct-a", DropletID: 77, DropletName: "genesis-ws-a-1", Desired: schema.StateRunning}, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := readOp(t, b, id), (opRow{State: "succeeded", Step: "found", Attempts: 2, Epoch: lb.Epoch}); got != want {
		t.Errorf("resumed operation = %+v, want %+v", got, want)
	}
}

// TestLeaderEpochWaitsForWrite: a journal write in progress under the old
// epoch holds the lease row: the new leader's increment waits for it, so no
// write of the old epoch commits after a new leader took its epoch.
func TestLeaderEpochWaitsForWrite(t *testing.T) {
	a, _ := open(t)
	ctx := t.Context()
	la := waitLead(t, a)
	tx, err := a.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := checkEpoch(WithEpoch(ctx, la.Epoch, nil), tx); err != nil {
		t.Fatal(err)
	}
	la.Release()
	got := make(chan *Leader, 1)
	go func() {
		l, _ := a.TryLead(ctx, time.Hour)
		got <- l
	}()
	// Until the write commits, the take-over cannot take its epoch.
	var waiting bool
	for range 500 {
		if err := a.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%leader_lease%')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !waiting {
		t.Fatal("the take-over did not wait for the write in progress")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	lb := <-got
	if lb == nil {
		t.Fatal("no take-over after the write committed")
	}
	defer lb.Release()
	if lb.Epoch != la.Epoch+1 {
		t.Errorf("epoch = %d, want %d", lb.Epoch, la.Epoch+1)
	}
}
