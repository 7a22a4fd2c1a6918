package reconciler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/schema"
)

// TestFutureActivityThenIdleHibernation: a droplet's agent reports n8n
// activity in the year 2099. The reconciler stores it clamped to its clock
// plus agentapi.MaxClockSkew, so idle hibernation still happens when the
// tenant is idle (simulator clock); the hibernation (snapshot, destroy,
// through the real executor) revokes the agent's credential: its manifest
// and heartbeat requests get 401 and its heartbeat changes nothing in
// fleet_status.
func TestFutureActivityThenIdleHibernation(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	h.rec.cfg.Now = h.sim.Sim.Now
	h.rec.cfg.PrepareTimeout = 300 * time.Millisecond
	h.state.WriteTenant(idleTenant("ws-idle"))
	h.state.WriteTenant(tenant("ws-other", "running", "nyc3"))
	h.state.WriteTenant(tenant("ws-third", "running", "nyc3"))
	h.state.Commit("an idle tenant and two others (the safety limit allows hibernating a third)")
	h.converge(ctx)

	// The agent protocol on the same database and clock; the droplet's
	// agent enrolled with credential cred.
	svc := agentapi.New(agentapi.Config{Store: h.store, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Now: h.sim.Sim.Now, BatchInterval: 10 * time.Millisecond})
	sctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(sctx) }()
	srv := httptest.NewServer(svc.Handler())
	defer func() { srv.Close(); stop(); <-done }()
	st, _ := h.store.LoadStatus(ctx)
	droplet := st["ws-idle"].DropletID
	const cred = "the-droplets-agent-credential-0123456789abcdef"
	sum := sha256.Sum256([]byte(cred))
	h.exec(`INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash) VALUES ($1, 'ws-idle', $2, $3, $4)`,
		droplet, "age1y3uu66akrdeq9vd97m5yq34elu876zwsplztfgkv4c4z5ktgg92s8q0mw3", make([]byte, 32), sum[:])
	seq := int64(0)
	send := func(method, path string, activity time.Time) int {
		t.Helper()
		var body []byte
		if method == "POST" {
			seq++
			body, _ = json.Marshal(schema.Heartbeat{Workspace: "ws-idle", Droplet: fmt.Sprint(droplet), Seq: seq, SentAt: activity,
				LastActivity: activity, Components: map[string]schema.ComponentHealth{"n8n": {OK: true}}})
		}
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+cred)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	deadline := time.Now().Add(10 * time.Second)
	for send("POST", "/v1/heartbeat", future) != http.StatusAccepted {
		if time.Now().After(deadline) {
			t.Fatal("the agent's heartbeat is not accepted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var stored time.Time
	for h.count(`SELECT count(*) FROM fleet_status WHERE workspace = 'ws-idle' AND last_activity_at IS NOT NULL`) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the heartbeat was not written")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := h.store.Pool().QueryRow(ctx, `SELECT last_activity_at FROM fleet_status WHERE workspace = 'ws-idle'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if limit := h.sim.Sim.Now().Add(agentapi.MaxClockSkew); stored.After(limit) {
		t.Fatalf("last_activity_at = %v, want at most the clock plus %v (%v)", stored, agentapi.MaxClockSkew, limit)
	}

	// Idle: warned after 48 h, hibernated 24 h after the warning.
	h.sim.Sim.Advance(49 * time.Hour)
	h.resync(ctx)
	h.sim.Sim.Advance(25 * time.Hour)
	h.resync(ctx)
	if got := h.lifecycle("ws-idle"); got != "HIBERNATED" {
		t.Fatalf("ws-idle lifecycle = %s, want HIBERNATED despite the activity reported in 2099", got)
	}

	deadline = time.Now().Add(10 * time.Second)
	for send("GET", "/v1/manifest", time.Time{}) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("the destroyed droplet's credential still gets its manifest")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var before, after string
	row := `SELECT to_jsonb(f)::text FROM fleet_status f WHERE workspace = 'ws-idle'`
	if err := h.store.Pool().QueryRow(ctx, row).Scan(&before); err != nil {
		t.Fatal(err)
	}
	if got := send("POST", "/v1/heartbeat", h.sim.Sim.Now()); got != http.StatusUnauthorized {
		t.Errorf("heartbeat of the destroyed droplet: %d, want 401", got)
	}
	time.Sleep(50 * time.Millisecond) // five batch intervals: nothing may be written
	if err := h.store.Pool().QueryRow(ctx, row).Scan(&after); err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("fleet_status changed by the destroyed droplet's heartbeat:\nbefore %s\nafter  %s", before, after)
	}
}
