package store

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/reconciler/plan"
)

// observationOf is o stored as SaveObservation takes it.
func observationOf(t testing.TB, o plan.Observed, at time.Time, leader string) Observation {
	body, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	return Observation{JSON: body, Digest: sha256.Sum256(body), At: at, Leader: leader, Complete: o.Complete(), Droplets: len(o.Droplets)}
}

// fleetObserved is an observation of n tenants, each with a droplet and a
// status row, and a snapshot for every tenth.
func fleetObserved(n int) plan.Observed {
	o := plan.Observed{Incomplete: map[string]string{}, Status: map[string]plan.Status{}, InFlight: map[string]string{}}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := range n {
		ws := fmt.Sprintf("ws-%05d", i)
		acct := fmt.Sprintf("acct-%02d", i%40)
		o.Droplets = append(o.Droplets, plan.Droplet{ID: 100000 + i, Name: "genesis-" + ws + "-1", Account: acct, Region: "nyc3",
			Size: "s-1vcpu-2gb", Status: "active", Workspace: ws, Created: created})
		o.Status[ws] = plan.Status{Lifecycle: "ACTIVE_HEALTHY", Account: acct, DropletID: 100000 + i, Generation: 1,
			LastActivity: created.Add(time.Duration(i) * time.Second), TenantHash: fmt.Sprintf("%064x", i)}
		if i%10 == 0 {
			o.Snapshots = append(o.Snapshots, plan.Snapshot{ID: fmt.Sprint(900000 + i), Name: "genesis-" + ws + "-1-snap", Account: acct,
				Region: "nyc3", Workspace: ws, SizeGB: 4.2, Created: created})
		}
	}
	return o
}

// TestObservationStore: none stored reads as none; a saved observation
// reads back as saved and announces itself; a touch moves only its time and
// leader, and does nothing for another digest.
func TestObservationStore(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	if _, ok, err := s.LoadObservation(ctx); ok || err != nil {
		t.Fatalf("fresh database: ok %v err %v, want none", ok, err)
	}
	got := listen(t, s)
	at := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	first := observationOf(t, fleetObserved(3), at, "replica-a/7")
	first.Epoch = 12
	if err := s.SaveObservation(ctx, first); err != nil {
		t.Fatal(err)
	}
	if p := next(got, 5*time.Second); p != "observed" {
		t.Errorf("notification %q, want observed", p)
	}
	check := func(want Observation) {
		t.Helper()
		row, ok, err := s.LoadObservation(ctx)
		if !ok || err != nil {
			t.Fatalf("load: ok %v err %v", ok, err)
		}
		row.At = row.At.UTC()
		if diff := cmp.Diff(row, want); diff != "" {
			t.Errorf("stored observation (-got +want):\n%s", diff)
		}
	}
	check(first)

	later := at.Add(time.Minute)
	if ok, err := s.TouchObservation(ctx, first.Digest, later, "replica-b/9", 0); !ok || err != nil {
		t.Fatalf("touch: %v %v", ok, err)
	}
	touched := first
	touched.At, touched.Leader, touched.Epoch = later, "replica-b/9", 0
	check(touched)
	if ok, err := s.TouchObservation(ctx, sha256.Sum256([]byte("other")), later.Add(time.Minute), "replica-b/9", 0); ok || err != nil {
		t.Errorf("touch of another digest: %v %v, want false", ok, err)
	}
	check(touched)

	second := observationOf(t, plan.Observed{Incomplete: map[string]string{"acct-a": "list droplets: 500"}, Status: map[string]plan.Status{}}, later, "replica-b/9")
	if err := s.SaveObservation(ctx, second); err != nil {
		t.Fatal(err)
	}
	check(second)
	if err := s.SaveObservation(ctx, Observation{JSON: []byte(`{}`), At: later, Leader: "bad leader id"}); err == nil {
		t.Error("a leader id with a space was stored")
	}
}

// TestObservationAt15k logs the size of a 15,000-tenant observation and the
// time to store it, touch it and read it back (reported, not asserted).
func TestObservationAt15k(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	o := fleetObserved(15000)
	start := time.Now()
	obs := observationOf(t, o, time.Now(), "replica-a/1")
	encode := time.Since(start)
	save := func() time.Duration {
		start := time.Now()
		if err := s.SaveObservation(ctx, obs); err != nil {
			t.Fatal(err)
		}
		return time.Since(start)
	}
	first, again := save(), save()
	start = time.Now()
	if ok, err := s.TouchObservation(ctx, obs.Digest, time.Now(), "replica-a/1", 0); !ok || err != nil {
		t.Fatalf("touch: %v %v", ok, err)
	}
	touch := time.Since(start)
	start = time.Now()
	row, ok, err := s.LoadObservation(ctx)
	if !ok || err != nil {
		t.Fatal(ok, err)
	}
	var back plan.Observed
	if err := json.Unmarshal(row.JSON, &back); err != nil {
		t.Fatal(err)
	}
	load := time.Since(start)
	var stored int64
	s.pool.QueryRow(ctx, `SELECT pg_column_size(observed) FROM observation`).Scan(&stored)
	t.Logf("15,000 tenants: observation %.1f MB as JSON (%.1f MB stored, compressed); encode %v, first save %v, save %v, touch (unchanged) %v, load+decode %v",
		float64(len(obs.JSON))/1e6, float64(stored)/1e6, encode.Round(time.Millisecond), first.Round(time.Millisecond), again.Round(time.Millisecond),
		touch.Round(time.Millisecond), load.Round(time.Millisecond))
	if len(back.Droplets) != 15000 || len(back.Status) != 15000 {
		t.Errorf("read back %d droplets, %d status rows", len(back.Droplets), len(back.Status))
	}
}
