package reconciler

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// replicaHeader names the replica a request came from, at the simulator.
const replicaHeader = "X-Test-Replica"

// replicaTransport marks every request that leaves a replica's Pool (that
// is, every request its fence let through) with the replica's name.
type replicaTransport struct {
	name string
	base http.RoundTripper
}

func (t replicaTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set(replicaHeader, t.name)
	return t.base.RoundTrip(req)
}

// seen is one request the simulator received.
type seen struct {
	replica, method, path string
}

// holdingSim records every request by replica and holds the answer to the
// first droplet create until released: DigitalOcean has made the droplet,
// the leader does not know yet.
type holdingSim struct {
	mu      sync.Mutex
	reqs    []seen
	holding bool
	held    chan struct{} // closed once the create is held
	release chan struct{}
}

func (h *holdingSim) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.reqs = append(h.reqs, seen{r.Header.Get(replicaHeader), r.Method, r.URL.Path})
		hold := !h.holding && r.Method == http.MethodPost && r.URL.Path == "/v2/droplets"
		h.holding = h.holding || hold
		h.mu.Unlock()
		if !hold {
			next.ServeHTTP(w, r)
			return
		}
		dosimtest.ServeLate(next, w, r, func() bool {
			close(h.held)
			select {
			case <-h.release:
				return true
			case <-r.Context().Done():
				return false
			}
		})
	})
}

func (h *holdingSim) since(n int) []seen {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]seen(nil), h.reqs[n:]...)
}

func (h *holdingSim) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.reqs)
}

// TestLockCutMidCreate: two replicas share Postgres and a DigitalOcean
// account. The leader (A) sends a droplet create; DigitalOcean makes the
// droplet and holds the answer; meanwhile A's lock session is terminated
// (pg_terminate_backend on the backend that holds the advisory lock, found
// in pg_locks), and the answer is then let through. A's ping is set to an
// hour, so only the fence can stop it. Replica B takes the lock (the next
// epoch) and resumes the journal.
//
// Refused: any mutating request from A after the cut (counted at the
// simulator by replica). Kept: exactly one droplet per tenant, no orphans,
// no failed operation or tenant error, every operation finished under B's
// epoch or before the cut.
func TestLockCutMidCreate(t *testing.T) {
	state := testkit.NewStateRepo(t)
	repo := state.Dir
	h := &harness{t: t, state: state, repo: repo}
	h.state.WriteFleet(testFleet())
	// fra1: only acct-b serves it, so both creates queue for its one slot.
	h.state.WriteTenant(tenant("ws-a", "running", "fra1"))
	h.state.WriteTenant(tenant("ws-b", "running", "fra1"))
	h.state.Commit("onboard ws-a, ws-b")

	hs := &holdingSim{held: make(chan struct{}), release: make(chan struct{})}
	sim := dosimtest.Start(t, dosim.Config{Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 50}, {Name: "acct-b", Token: "tok-b", DropletLimit: 50}}},
		dosimtest.WithMiddleware(hs.wrap))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	url := pgtest.New(t)
	replica := func(name string, retry, check time.Duration) (*Reconciler, *store.Store) {
		st, err := store.Open(t.Context(), url, log.With("replica", name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(st.Close)
		src, err := tenants.Open(tenants.Config{Repo: repo, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		rt := http.DefaultTransport.(*http.Transport).Clone()
		t.Cleanup(rt.CloseIdleConnections)
		r := New(Config{Store: st, Logger: log.With("replica", name), LeaderRetry: retry, LeaderCheck: check,
			NewCloud: func(f *schema.Fleet) (*cloud.Pool, error) {
				var accts []cloud.Account
				for _, a := range f.Spec.Accounts {
					accts = append(accts, cloud.Account{Name: a.Name, Token: tokens[a.Name], BaseURL: sim.URL})
				}
				return cloud.New(cloud.Config{Accounts: accts, Logger: log.With("replica", name), RequireLease: true,
					Transport: replicaTransport{name: name, base: rt},
					Limits: cloud.Limits{MaxInFlight: 1, PollMin: 5 * time.Millisecond, PollMax: 20 * time.Millisecond,
						RetryBase: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond}})
			}})
		snap, err := src.Sync(t.Context())
		r.Deliver(t.Context(), snap, err)
		return r, st
	}
	ctx, cancel := context.WithCancel(t.Context())
	var runs sync.WaitGroup
	t.Cleanup(func() { cancel(); runs.Wait() })
	run := func(r *Reconciler) {
		runs.Add(1)
		go func() { defer runs.Done(); _ = r.Run(ctx) }()
	}

	// A tries to lead again only after a minute, so the take-over is B's.
	recA, stA := replica("A", time.Minute, time.Hour)
	run(recA)
	testkit.WaitFor(t, "A leads", func() bool { return recA.Leading() })
	recB, stB := replica("B", 20*time.Millisecond, 50*time.Millisecond)
	run(recB)

	select {
	case <-hs.held:
	case <-time.After(30 * time.Second):
		t.Fatal("the leader never sent a create")
	}
	var pid int64
	if err := stB.Pool().QueryRow(t.Context(), `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND ((classid::bigint << 32) | objid::bigint) = $1`, store.LeaderLockKey).Scan(&pid); err != nil {
		t.Fatalf("find the leader lock's session: %v", err)
	}
	var epochA int64
	if err := stB.Pool().QueryRow(t.Context(), `SELECT epoch FROM leader_lease`).Scan(&epochA); err != nil {
		t.Fatal(err)
	}
	cutAt, cutIndex := time.Now(), hs.count()
	if _, err := stB.Pool().Exec(t.Context(), `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	close(hs.release) // the create's answer reaches A after its lock is gone

	testkit.WaitFor(t, "B leads and both tenants are up", func() bool {
		if !recB.Leading() || recA.Leading() {
			return false
		}
		ops, err := stB.InFlight(t.Context())
		if err != nil || len(ops) > 0 {
			return false
		}
		st, err := stB.LoadStatus(t.Context())
		return err == nil && st["ws-a"].DropletID != 0 && st["ws-b"].DropletID != 0
	})
	recovered := time.Since(cutAt)
	t.Logf("recovered %s after the cut (lock session terminated → both tenants recorded by the new leader)", recovered.Round(time.Millisecond))

	for _, q := range hs.since(cutIndex) {
		if q.replica == "A" && q.method != http.MethodGet {
			t.Errorf("old leader sent %s %s after losing its lock", q.method, q.path)
		}
	}
	got := map[string]int{}
	for _, d := range sim.Sim.Snapshot().Droplets {
		got[d["name"].(string)]++
	}
	if diff := cmp.Diff(map[string]int{"genesis-ws-a-1": 1, "genesis-ws-b-1": 1}, got); diff != "" {
		t.Errorf("droplets by name (-want +got): duplicates or orphans\n%s", diff)
	}
	if orphans := recB.LastPlan().Orphans; len(orphans) != 0 {
		t.Errorf("orphans = %+v, want none", orphans)
	}
	var epochB int64
	if err := stB.Pool().QueryRow(t.Context(), `SELECT epoch FROM leader_lease`).Scan(&epochB); err != nil {
		t.Fatal(err)
	}
	// B took over (more than once if a ping of its lock's session timed
	// out on a busy machine: it then steps down and takes the lock again,
	// each time under a new epoch; A retries only after a minute).
	if epochB <= epochA {
		t.Errorf("epoch after the take-over = %d, want more than A's %d", epochB, epochA)
	}
	rows, err := stA.Pool().Query(t.Context(), `SELECT workspace, kind, state, coalesce(epoch, 0), coalesce(error, '') FROM operations ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	resumed := 0
	for rows.Next() {
		var ws, kind, state, msg string
		var epoch int64
		if err := rows.Scan(&ws, &kind, &state, &epoch, &msg); err != nil {
			t.Fatal(err)
		}
		if state != "succeeded" {
			t.Errorf("operation %s %s is %s (%s), want succeeded", kind, ws, state, msg)
		}
		if epoch < epochA || epoch > epochB {
			t.Errorf("operation %s %s has epoch %d, want A's %d or one of B's up to %d", kind, ws, epoch, epochA, epochB)
		}
		if epoch > epochA {
			resumed++
		}
	}
	if resumed == 0 {
		t.Errorf("no operation finished under the new leader's epochs (after %d); the cut did not interrupt a create", epochA)
	}
	var failed int
	if err := stA.Pool().QueryRow(t.Context(), `SELECT count(*) FROM audit_log WHERE action LIKE '%.failed'`).Scan(&failed); err != nil || failed != 0 {
		t.Errorf("failed actions audited = %d (%v), want 0: a fenced call is not the action's failure", failed, err)
	}
	fleet, err := stA.Fleet(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range fleet {
		if row.LastError != "" {
			t.Errorf("%s last_error = %q, want none", row.Workspace, row.LastError)
		}
	}
}
