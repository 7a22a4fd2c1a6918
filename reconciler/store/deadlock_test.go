package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// TestBulkWritesNeverDeadlock runs the statements that write many
// fleet_status rows at once — the leader's SetDesired, the sweep's
// StoreManifests and two replicas' heartbeat batches — together, on the
// same rows, each batch in its own random order, for several rounds. None
// may fail with a deadlock: they lock the agents rows in droplet order,
// then the fleet_status rows in workspace order ("Row-lock order"). Before
// that, a leader's first pass deadlocked with its own sweep at 20,000
// tenants (genesis-load scale).
func TestBulkWritesNeverDeadlock(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped with -short: several seconds of concurrent batches")
	}
	db, _ := open(t)
	ctx := t.Context()
	const n, rounds = 400, 8
	ws := make([]string, n)
	for i := range ws {
		ws[i] = fmt.Sprintf("ws-d%04d", i)
		if _, err := db.pool.Exec(ctx, `INSERT INTO fleet_status (workspace, droplet_id, state, desired_state) VALUES ($1, $2, $3, 'running')`,
			ws[i], 7000+i, string(lifecycle.ActiveHealthy)); err != nil {
			t.Fatal(err)
		}
		hash := sha256.Sum256([]byte(ws[i]))
		if _, err := db.pool.Exec(ctx, `INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash)
			VALUES ($1, $2, 'age1test', $3, $4)`, 7000+i, ws[i], make([]byte, 32), hash[:]); err != nil {
			t.Fatal(err)
		}
	}
	shuffled := func(r *rand.Rand) []int {
		p := r.Perm(n)
		return p
	}
	var seq atomic.Int64
	var deadlocks atomic.Int64
	var wg sync.WaitGroup
	fail := func(who string, err error) {
		var pg *pgconn.PgError
		if errors.As(err, &pg) && pg.Code == "40P01" {
			deadlocks.Add(1)
		}
		t.Errorf("%s: %v", who, err)
	}
	// The sweep: every droplet's next manifest, a batch in random order.
	wg.Go(func() {
		r := rand.New(rand.NewPCG(1, 0))
		for v := int64(1); v <= rounds; v++ {
			var ms []Manifest
			for _, i := range shuffled(r) {
				ms = append(ms, Manifest{Droplet: int64(7000 + i), Version: v, Workspace: ws[i], Envelope: []byte("e"), Digest: make([]byte, 32),
					IssuedAt: time.Now(), Expires: time.Now().Add(time.Hour), Commit: commit})
			}
			stored, err := db.StoreManifests(ctx, ms)
			if err != nil {
				fail("manifests", err)
				return
			}
			for k, ok := range stored {
				if !ok {
					t.Errorf("manifest %d of round %d not stored", ms[k].Droplet, v)
				}
			}
		}
	})
	// Two replicas' heartbeat batches.
	for w := range 2 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(2, uint64(w)))
			for range rounds {
				var batch []Heartbeat
				for _, i := range shuffled(r) {
					batch = append(batch, Heartbeat{Droplet: int64(7000 + i), Workspace: ws[i], Seq: seq.Add(1), At: time.Now(), Body: []byte(`{}`), OK: true})
				}
				if _, err := db.WriteHeartbeats(ctx, NewHeartbeatBatch(batch)); err != nil {
					fail("heartbeats", err)
					return
				}
			}
		})
	}
	// The leader's passes: every tenant's desired state flips each round.
	wg.Go(func() {
		for k := range rounds {
			desired := map[string]schema.State{}
			for _, w := range ws {
				desired[w] = []schema.State{schema.StateHibernated, schema.StateRunning}[k%2]
			}
			if err := db.SetDesired(ctx, desired, commit); err != nil {
				fail("desired", err)
				return
			}
		}
	})
	// A mass change's update_manifest actions, recorded a chunk at a time
	// (RecordHashes sorts them; handed over shuffled).
	wg.Go(func() {
		r := rand.New(rand.NewPCG(3, 0))
		for k := range rounds {
			var us []HashUpdate
			for _, i := range shuffled(r) {
				us = append(us, HashUpdate{Action: plan.Action{Kind: plan.UpdateManifest, Workspace: ws[i], DropletID: 7000 + i},
					Hash: fmt.Sprintf("h%d", k), Desired: schema.StateRunning})
			}
			if _, err := db.RecordHashes(ctx, us, commit); err != nil {
				fail("hashes", err)
				return
			}
		}
	})
	wg.Wait()
	if d := deadlocks.Load(); d > 0 {
		t.Fatalf("%d deadlocks", d)
	}
	var want, issued int64
	if err := db.pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE desired_state = 'running'), min(manifest_version_issued)
		FROM fleet_status WHERE workspace LIKE 'ws-d%'`).Scan(&want, &issued); err != nil {
		t.Fatal(err)
	}
	if want != n || issued != rounds {
		t.Errorf("after the rounds: %d of %d rows desire running, lowest issued version %d; want all, %d", want, n, issued, rounds)
	}
}
