package reconciler

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
)

// eventsRig is a Reconciler (never run: the test says whether it leads)
// and its Events listener on a real Postgres.
type eventsRig struct {
	t       *testing.T
	store   *store.Store
	rec     *Reconciler
	events  *Events
	fetches atomic.Int32
}

func newEventsRig(t *testing.T) *eventsRig {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(t.Context(), pgtest.New(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	g := &eventsRig{t: t, store: st, rec: New(Config{Store: st, Logger: log})}
	g.events = NewEvents(EventsConfig{Store: st, Reconciler: g.rec, Fetch: func() { g.fetches.Add(1) }, Logger: log, Registerer: prometheus.NewRegistry()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.events.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	g.waitListening()
	return g
}

func (g *eventsRig) waitListening() {
	g.t.Helper()
	testkit.WaitFor(g.t, "the listener to connect", func() bool { return testutil.ToFloat64(g.events.connected) == 1 })
}

// takeKick reports whether the loop was kicked, and what it would plan:
// the pending tenants, or nil for a full pass.
func (g *eventsRig) takeKick() (bool, []string) {
	select {
	case <-g.rec.kick:
	case <-time.After(300 * time.Millisecond):
		return false, nil
	}
	g.rec.mu.Lock()
	defer g.rec.mu.Unlock()
	if g.rec.needFull {
		g.rec.needFull = false
		return true, nil
	}
	var ids []string
	for id := range g.rec.pending {
		ids = append(ids, id)
	}
	g.rec.pending = map[string]bool{}
	return true, ids
}

// TestEventsLeaderActsFollowerIgnores: a wake or retry announced by any
// replica makes the leader plan that tenant now and is ignored by a
// follower; a fetch makes every replica fetch; a forged payload is refused
// and counted; a lost listening connection is followed, once listening
// again, by a fetch and (on the leader) a full pass, since notifications
// may have been missed.
func TestEventsLeaderActsFollowerIgnores(t *testing.T) {
	g := newEventsRig(t)
	ctx := t.Context()
	g.rec.needFull = false
	g.takeKick() // the first connect's
	notify := func(payload string) {
		t.Helper()
		if _, err := g.store.Pool().Exec(ctx, `SELECT pg_notify($1, $2)`, store.EventChannel, payload); err != nil {
			t.Fatal(err)
		}
	}
	type outcome struct {
		Kicked  bool
		Tenants []string
		Fetches int32
	}
	for _, tc := range []struct {
		name    string
		leading bool
		payload string
		want    outcome
	}{
		{"leader: wake", true, "wake ws-acme", outcome{true, []string{"ws-acme"}, 0}},
		{"leader: retry", true, "retry ws-failed", outcome{true, []string{"ws-failed"}, 0}},
		{"leader: fetch", true, "fetch", outcome{false, nil, 1}},
		{"leader: observed", true, "observed", outcome{}},
		{"leader: forged wake", true, "wake ws-acme; DROP TABLE", outcome{}},
		{"leader: unknown kind", true, "destroy ws-acme", outcome{}},
		{"follower: wake", false, "wake ws-acme", outcome{}},
		{"follower: retry", false, "retry ws-failed", outcome{}},
		{"follower: fetch", false, "fetch", outcome{false, nil, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g.rec.setLeading(tc.leading)
			before := g.fetches.Load()
			notify(tc.payload)
			// A marker after it: once the marker's fetch is seen, the
			// payload was handled.
			notify("fetch")
			testkit.WaitFor(t, "the marker", func() bool { return g.fetches.Load() >= before+1+tc.want.Fetches })
			var got outcome
			got.Kicked, got.Tenants = g.takeKick()
			got.Fetches = g.fetches.Load() - before - 1
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
		})
	}
	if got := testutil.ToFloat64(g.events.received.WithLabelValues("invalid", "none")); got != 2 {
		t.Errorf("invalid events counted: %v, want 2", got)
	}

	t.Run("reconnect: fetch and a full pass on the leader", func(t *testing.T) {
		g.rec.setLeading(true)
		before := g.fetches.Load()
		if _, err := g.store.Pool().Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN "`+store.EventChannel+`"'`); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, "the listener to reconnect and fetch", func() bool { return g.fetches.Load() > before })
		g.waitListening()
		kicked, tenants := g.takeKick()
		if !kicked || tenants != nil {
			t.Errorf("after the reconnect: kicked %v, tenants %v; want a full pass", kicked, tenants)
		}
	})
}

// TestObservedServed: /v1/observed answers 503 before the leader stored an
// observation, then the stored one with observed_at and leader on any
// replica (here a second Observations standing for a follower), an
// unchanged one only moves its time, and a stale one is 503 again.
func TestObservedServed(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := t.Context()
	st, err := store.Open(ctx, pgtest.New(t), log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	reg := prometheus.NewRegistry()
	leader := NewObservations(ObservationsConfig{Store: st, Replica: "replica-a/1", Epoch: func() int64 { return 4 }, MaxAge: time.Minute, Logger: log, Registerer: reg})
	follower := httptest.NewServer(fleetapi.Handler(fleetapi.HandlerConfig{Store: st, Observations: NewObservations(ObservationsConfig{Store: st, Replica: "replica-b/2", MaxAge: time.Minute})}))
	defer follower.Close()
	get := func() (int, string) {
		resp, err := http.Get(follower.URL + "/v1/observed")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 503 || !strings.Contains(body, "no observation stored yet") {
		t.Errorf("before any observation: %d %s", code, body)
	}
	obs := plan.Observed{Droplets: []plan.Droplet{{ID: 7, Name: "genesis-ws-a-1", Account: "acct-a", Workspace: "ws-a"}},
		Status: map[string]plan.Status{"ws-a": {Lifecycle: "ACTIVE_HEALTHY", DropletID: 7}}, Incomplete: map[string]string{}, InFlight: map[string]string{}}
	at := time.Now().UTC().Truncate(time.Microsecond)
	leader.Save(ctx, obs, at)
	leader.Save(ctx, obs, at.Add(time.Second)) // unchanged: a touch
	code, body := get()
	if code != 200 {
		t.Fatalf("after an observation: %d %s", code, body)
	}
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	var doc api.Observed
	if err := dec.Decode(&doc); err != nil {
		t.Fatal(err)
	}
	want := api.Observed{Observed: obs, ObservedAt: at.Add(time.Second), Leader: "replica-a/1", LeaderEpoch: 4}
	if diff := cmp.Diff(doc, want); diff != "" {
		t.Errorf("served (-got +want):\n%s", diff)
	}
	if n := testutil.CollectAndCount(leader.writes); n != 2 {
		t.Errorf("write kinds observed: %d, want full and touch", n)
	}
	if _, err := st.Pool().Exec(ctx, `UPDATE observation SET observed_at = now() - interval '2 minutes'`); err != nil {
		t.Fatal(err)
	}
	if code, body := get(); code != 503 || !strings.Contains(body, "old, more than 1m0s: is a leader running?") || !strings.Contains(body, "replica-a/1") {
		t.Errorf("stale: %d %s", code, body)
	}
}
