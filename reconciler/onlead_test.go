package reconciler

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/store"
)

// TestOnLeadAtEveryTakeOver: Config.OnLead runs when a replica takes the
// lead, and again on the replica that takes it over after the leader's
// lock session dies — not on one that only follows.
func TestOnLeadAtEveryTakeOver(t *testing.T) {
	url := pgtest.New(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	type replica struct {
		rec   *Reconciler
		st    *store.Store
		leads atomic.Int64
	}
	start := func(retry time.Duration) *replica {
		st, err := store.Open(t.Context(), url, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		r := &replica{st: st}
		r.rec = New(Config{Store: st, Logger: log, LeaderRetry: retry, LeaderCheck: 50 * time.Millisecond, OnLead: func() { r.leads.Add(1) }})
		return r
	}
	ctx, cancel := context.WithCancel(t.Context())
	var runs sync.WaitGroup
	t.Cleanup(func() { cancel(); runs.Wait() })
	run := func(r *replica) { runs.Go(func() { _ = r.rec.Run(ctx) }) }

	a := start(time.Hour) // A never tries again: the take-over is B's
	run(a)
	testkit.WaitFor(t, "A leads", func() bool { return a.rec.Leading() })
	b := start(20 * time.Millisecond)
	run(b)
	time.Sleep(200 * time.Millisecond) // B tries the lock several times meanwhile
	if a.leads.Load() != 1 || b.leads.Load() != 0 {
		t.Fatalf("OnLead calls: A %d, B %d; want 1 and 0 while A leads", a.leads.Load(), b.leads.Load())
	}
	if _, err := b.st.Pool().Exec(t.Context(), `SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND ((classid::bigint << 32) | objid::bigint) = $1`, store.LeaderLockKey); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "B takes the lead", func() bool { return b.rec.Leading() && !a.rec.Leading() })
	if a.leads.Load() != 1 || b.leads.Load() != 1 {
		t.Errorf("OnLead calls after the take-over: A %d, B %d; want 1 each", a.leads.Load(), b.leads.Load())
	}
}
