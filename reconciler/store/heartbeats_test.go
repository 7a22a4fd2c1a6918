package store

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// TestHeartbeatSQLMatchesLifecycle drives the real batched heartbeat
// statement on Postgres with every stored state (lifecycle.All, so a new
// state cannot be left out) × every kind of heartbeat, all in one batch,
// and compares each row's resulting state with lifecycle.OnHeartbeat. A
// heartbeat of a droplet the workspace does not record (it records none)
// moves no state and is stored only while the workspace awaits its droplet
// (lifecycle.AwaitingDroplet); states that need a droplet (lifecycle.NeedDroplet)
// cannot lack one.
func TestHeartbeatSQLMatchesLifecycle(t *testing.T) {
	db, _ := open(t)
	ctx := context.Background()
	inputs := []struct {
		name string
		hb   lifecycle.Heartbeat
	}{
		{"ok newest", lifecycle.Heartbeat{OK: true, Applied: 3, Issued: 3}},
		{"ok older", lifecycle.Heartbeat{OK: true, Applied: 1, Issued: 3}},
		{"ok none applied", lifecycle.Heartbeat{OK: true, Applied: 0, Issued: 3}},
		{"ok none issued", lifecycle.Heartbeat{OK: true, Applied: 0, Issued: 0}},
		{"problems newest", lifecycle.Heartbeat{OK: false, Applied: 3, Issued: 3}},
		{"problems older", lifecycle.Heartbeat{OK: false, Applied: 1, Issued: 3}},
		{"problems none applied", lifecycle.Heartbeat{OK: false, Applied: 0, Issued: 3}},
	}
	type tcase struct {
		ws       string
		state    lifecycle.State
		input    string
		recorded bool
		want     lifecycle.State
		written  bool
	}
	var cases []tcase
	var batch []Heartbeat
	droplet := int64(5000)
	add := func(state lifecycle.State, input string, hb lifecycle.Heartbeat, recorded bool) {
		droplet++
		ws := fmt.Sprintf("ws-l%d", droplet)
		var rowDroplet any
		c := tcase{ws: ws, state: state, input: input, recorded: recorded, want: state, written: state.In(lifecycle.AwaitingDroplet())}
		if recorded {
			rowDroplet, c.want, c.written = droplet, lifecycle.OnHeartbeat(state, hb), true
		}
		if _, err := db.pool.Exec(ctx, `INSERT INTO fleet_status (workspace, droplet_id, state, desired_state, manifest_version_issued, snapshot_id)
			VALUES ($1, $2, $3, 'running', $4, '1')`, ws, rowDroplet, string(state), hb.Issued); err != nil {
			t.Fatal(err)
		}
		hash := sha256.Sum256([]byte(ws))
		if _, err := db.pool.Exec(ctx, `INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash)
			VALUES ($1, $2, 'age1test', $3, $4)`, droplet, ws, make([]byte, 32), hash[:]); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, c)
		batch = append(batch, Heartbeat{Droplet: droplet, Workspace: ws, Seq: 1, At: time.Now(), Body: []byte(`{}`),
			Applied: hb.Applied, OK: hb.OK})
	}
	for _, s := range lifecycle.All() {
		for _, in := range inputs {
			add(s, in.name, in.hb, true)
		}
		if !s.In(lifecycle.NeedDroplet()) {
			add(s, "ok newest, droplet not recorded", inputs[0].hb, false)
		}
	}
	if _, err := db.WriteHeartbeats(ctx, NewHeartbeatBatch(batch)); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%s", c.state, c.input), func(t *testing.T) {
			var got string
			var written bool
			if err := db.pool.QueryRow(ctx, `SELECT state, last_heartbeat_at IS NOT NULL FROM fleet_status WHERE workspace = $1`, c.ws).
				Scan(&got, &written); err != nil {
				t.Fatal(err)
			}
			if lifecycle.State(got) != c.want {
				t.Errorf("state = %s, want %s (lifecycle.OnHeartbeat)", got, c.want)
			}
			if written != c.written {
				t.Errorf("heartbeat stored = %v, want %v", written, c.written)
			}
		})
	}
}

// TestRawHeartbeatUpsert: the benchmark baseline inserts a workspace's row
// and then updates it in place; AppliedVersions reads what it recorded,
// only for the workspaces the pattern matches.
func TestRawHeartbeatUpsert(t *testing.T) {
	db, _ := open(t)
	ctx := context.Background()
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	write := func(applied int64, ws ...string) {
		t.Helper()
		r := RawHeartbeats{}
		for i, w := range ws {
			r.Workspaces = append(r.Workspaces, w)
			r.Droplets = append(r.Droplets, int64(9000+i))
			r.At = append(r.At, at)
			r.Bodies = append(r.Bodies, `{}`)
			r.Applied = append(r.Applied, applied)
			r.AgentVersions = append(r.AgentVersions, "0.1.0")
			r.OK = append(r.OK, true)
		}
		if err := db.RawHeartbeatUpsert(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	write(1, "load-a", "load-b", "other-c")
	write(2, "load-a")
	got, err := db.AppliedVersions(ctx, "load-%")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, map[int64]int64{9000: 2, 9001: 1}); diff != "" {
		t.Errorf("AppliedVersions (-got +want):\n%s", diff)
	}
}

// TestFleetHealthDetail: /v1/fleet's row carries what the newest
// heartbeat said — components with their reasons, memory, swap, disk,
// uptime, the apply error — and none before the first heartbeat.
func TestFleetHealthDetail(t *testing.T) {
	db, _ := open(t)
	ctx := context.Background()
	for i, ws := range []string{"ws-hd", "ws-quiet"} {
		droplet := int64(7100 + i)
		if _, err := db.pool.Exec(ctx, `INSERT INTO fleet_status (workspace, droplet_id, state, desired_state) VALUES ($1, $2, 'ACTIVE_HEALTHY', 'running')`, ws, droplet); err != nil {
			t.Fatal(err)
		}
		hash := sha256.Sum256([]byte(ws))
		if _, err := db.pool.Exec(ctx, `INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash)
			VALUES ($1, $2, 'age1test', $3, $4)`, droplet, ws, make([]byte, 32), hash[:]); err != nil {
			t.Fatal(err)
		}
	}
	body := `{"components":{"n8n":{"ok":true},"caddy":{"ok":true,"detail":"repaired: caddy had lost its config; reloaded"}},` +
		`"memory_used_bytes":536870912,"memory_total_bytes":1073741824,"disk_used_bytes":5368709120,"disk_total_bytes":26843545600,` +
		`"swap_used_bytes":3650722201,"swap_total_bytes":4294967296,` +
		`"uptime_seconds":3600.5,"apply_error":"workflow x: n8n said 500",` +
		`"repairs":[{"component":"caddy","at":"2026-12-07T06:00:00Z","detail":"repaired: caddy had lost its config; reloaded"}]}`
	at := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := db.WriteHeartbeats(ctx, NewHeartbeatBatch([]Heartbeat{{Droplet: 7100, Workspace: "ws-hd", Seq: 1, At: at, Body: []byte(body), OK: true}})); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]FleetRow{}
	for _, r := range rows {
		got[r.Workspace] = r
	}
	want := &schema.HealthDetail{ReportedAt: at, MemoryUsed: 536870912, MemoryTotal: 1073741824, DiskUsed: 5368709120, DiskTotal: 26843545600,
		SwapUsed: 3650722201, SwapTotal: 4294967296,
		UptimeSeconds: 3600.5, ApplyError: "workflow x: n8n said 500",
		Components: map[string]schema.ComponentHealth{"n8n": {OK: true}, "caddy": {OK: true, Detail: "repaired: caddy had lost its config; reloaded"}},
		Repairs:    []schema.Repair{{Component: "caddy", At: time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC), Detail: "repaired: caddy had lost its config; reloaded"}}}
	hd := got["ws-hd"].HealthDetail
	if hd == nil {
		t.Fatal("no health detail after a heartbeat")
	}
	hd.ReportedAt = hd.ReportedAt.UTC()
	if diff := cmp.Diff(want, hd); diff != "" {
		t.Errorf("health detail (-want +got):\n%s", diff)
	}
	if got["ws-quiet"].HealthDetail != nil {
		t.Errorf("a droplet that never sent a heartbeat: %+v", got["ws-quiet"].HealthDetail)
	}
}
