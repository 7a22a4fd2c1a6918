package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/store"
)

// replicaFront serves the world's simulator to each replica under its own
// path prefix (/A/, /B/), so every request is known by replica, and holds
// the answers of replica A's droplet creates (the simulator has made the
// droplet; the leader does not know yet) until the caller gives up.
type replicaFront struct {
	mu   sync.Mutex
	reqs []string // "replica METHOD /path"
	held int
}

func (f *replicaFront) handler(sim http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		replica, rest, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		r.URL.Path = "/" + rest
		f.mu.Lock()
		f.reqs = append(f.reqs, replica+" "+r.Method+" "+r.URL.Path)
		hold := replica == "A" && r.Method == http.MethodPost && r.URL.Path == "/v2/droplets"
		f.mu.Unlock()
		if !hold {
			sim.ServeHTTP(w, r)
			return
		}
		dosimtest.ServeLate(sim, w, r, func() bool {
			f.mu.Lock()
			f.held++
			f.mu.Unlock()
			<-r.Context().Done()
			return false
		})
	})
}

func (f *replicaFront) since(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.reqs[n:]...)
}

func (f *replicaFront) count() (reqs, held int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs), f.held
}

// TestLockCutMidCreateBinaries: two genesis-reconciler processes; the
// leader's two creates are held by DigitalOcean (which made the droplets)
// while the leader's lock session is terminated with pg_terminate_backend
// (its pid found in pg_locks). The old leader sends no mutating request
// after the cut and gives up on the held ones; the other replica takes the
// lock and resumes the journal, finding both droplets by name: one droplet
// per tenant, no orphans, no failure.
func TestLockCutMidCreateBinaries(t *testing.T) {
	w := newWorld(t, 2, 0)
	front := &replicaFront{}
	srv := httptest.NewServer(front.handler(w.sim.Sim.Handler()))
	t.Cleanup(srv.Close)

	a := w.start("--do-api-url", srv.URL+"/A/")
	testkit.WaitFor(t, "A leads", func() bool { doc, err := getFleet(t, a.url); return err == nil && doc.Leader })
	b := w.start("--do-api-url", srv.URL+"/B/")
	testkit.WaitFor(t, "the leader's two creates held", func() bool { _, held := front.count(); return held == 2 })
	var pid int64
	if err := w.query(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND ((classid::bigint << 32) | objid::bigint) = $1`, store.LeaderLockKey).Scan(&pid); err != nil {
		t.Fatalf("find the leader lock's session: %v", err)
	}
	cut, _ := front.count()
	cutAt := time.Now()
	w.exec(`SELECT pg_terminate_backend($1)`, pid)

	testkit.WaitFor(t, "B to lead and both tenants to be recorded", func() bool {
		doc, err := getFleet(t, b.url)
		return err == nil && doc.Leader && allInitialized(t, b.url, 2)
	})
	t.Logf("recovered %s after the cut (lock session terminated → both tenants INITIALIZING under the new leader)", time.Since(cutAt).Round(time.Millisecond))
	// The old leader finds its session dead at its next ping of the lock's session
	// (every second) or at its next mutating request's proof, whichever comes first;
	// the new one may lead sooner than that. Until then it holds a fenced
	// lease: it may say it leads, but nothing it sends mutates.
	testkit.WaitFor(t, "the old leader to step down", func() bool {
		doc, err := getFleet(t, a.url)
		return err == nil && !doc.Leader
	})
	t.Logf("old leader stepped down %s after the cut", time.Since(cutAt).Round(time.Millisecond))

	for _, q := range front.since(cut) {
		if strings.HasPrefix(q, "A ") && !strings.HasPrefix(q, "A GET ") {
			t.Errorf("old leader sent %q after losing its lock", q[2:])
		}
	}
	got := w.dropletsByName()
	if len(got) != 2 || got["genesis-ws-000-1"] != 1 || got["genesis-ws-001-1"] != 1 {
		t.Errorf("droplets by name = %v, want one each of genesis-ws-000-1 and genesis-ws-001-1", got)
	}
	if doc, err := getFleet(t, b.url); err != nil || len(doc.Orphans) != 0 {
		t.Errorf("orphans = %v (%v), want none", doc.Orphans, err)
	}
	var failed, resumed int
	if err := w.query(`SELECT count(*) FILTER (WHERE state <> 'succeeded'), count(*) FILTER (WHERE epoch = (SELECT epoch FROM leader_lease))
		FROM operations`).Scan(&failed, &resumed); err != nil {
		t.Fatal(err)
	}
	if failed != 0 {
		t.Errorf("%d operations not succeeded, want 0", failed)
	}
	if resumed != 2 {
		t.Errorf("%d operations finished under the new leader's epoch, want both creates", resumed)
	}
}
