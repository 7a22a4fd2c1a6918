package agentapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

func (w *world) beat(cred string, hb schema.Heartbeat) int {
	w.t.Helper()
	b, _ := json.Marshal(hb)
	code, _, _ := w.do("POST", "/v1/heartbeat", cred, nil, b)
	return code
}

// status reads the heartbeat columns of ws.
type statusRow struct {
	State        string
	Health       string
	Applied      int64
	Issued       int64
	AgentVersion string
	LastSeq      int64
	Beat         bool
	Activity     time.Time
}

func (w *world) status(ws string, droplet int64) statusRow {
	w.t.Helper()
	var r statusRow
	err := w.st.Pool().QueryRow(context.Background(), `SELECT f.state, f.health, f.manifest_version_applied, f.manifest_version_issued,
		coalesce(f.agent_version, ''), a.last_heartbeat_seq, f.last_heartbeat_at IS NOT NULL, coalesce(f.last_activity_at, 'epoch')
		FROM fleet_status f JOIN agents a ON a.workspace = f.workspace AND a.droplet_id = $2 WHERE f.workspace = $1`, ws, droplet).
		Scan(&r.State, &r.Health, &r.Applied, &r.Issued, &r.AgentVersion, &r.LastSeq, &r.Beat, &r.Activity)
	if err != nil {
		w.t.Fatal(err)
	}
	return r
}

func hb(ws, droplet string, seq, applied int64, ok bool) schema.Heartbeat {
	return schema.Heartbeat{Workspace: ws, Droplet: droplet, Seq: seq, SentAt: time.Now().UTC(), AppliedVersion: applied,
		Components: map[string]schema.ComponentHealth{"n8n": {OK: ok}, "caddy": {OK: true}, "postgres": {OK: true}},
		MemoryUsed: 1 << 29, MemoryTotal: 1 << 30, DiskUsed: 1 << 33, DiskTotal: 1 << 35, UptimeSeconds: 42, AgentVersion: "0.1.0"}
}

func TestHeartbeatLifecycle(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	if got := w.status("ws-acme", 1001); got.State != "HANDSHAKE" || got.Issued != 1 || got.Beat {
		t.Fatalf("after enrollment: %+v, want HANDSHAKE with version 1 issued", got)
	}
	// First heartbeat, nothing applied yet: CONFIGURING.
	if code := w.beat(a.cred, hb("ws-acme", "1001", 1, 0, true)); code != http.StatusAccepted {
		t.Fatalf("heartbeat: %d", code)
	}
	poll.Until(t, "CONFIGURING", func() bool { return w.status("ws-acme", 1001).State == "CONFIGURING" })
	// Applied, but n8n down: DEPLOYING (the first manifest is applied, not yet healthy), degraded.
	if code := w.beat(a.cred, hb("ws-acme", "1001", 2, 1, false)); code != http.StatusAccepted {
		t.Fatalf("heartbeat: %d", code)
	}
	poll.Until(t, "seq 2 written", func() bool { return w.status("ws-acme", 1001).LastSeq == 2 })
	if got := w.status("ws-acme", 1001); got.State != "DEPLOYING" || got.Health != "degraded" || got.Applied != 1 {
		t.Errorf("applied with n8n down: %+v", got)
	}
	// Applied and all ok: ACTIVE_HEALTHY.
	beat := hb("ws-acme", "1001", 3, 1, true)
	beat.LastActivity = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if code := w.beat(a.cred, beat); code != http.StatusAccepted {
		t.Fatalf("heartbeat: %d", code)
	}
	poll.Until(t, "ACTIVE_HEALTHY", func() bool { return w.status("ws-acme", 1001).State == "ACTIVE_HEALTHY" })
	got := w.status("ws-acme", 1001)
	if got.Health != "healthy" || got.AgentVersion != "0.1.0" || !got.Activity.Equal(beat.LastActivity) || !got.Beat {
		t.Errorf("healthy row: %+v", got)
	}
	var stored schema.Heartbeat
	var raw []byte
	w.st.Pool().QueryRow(t.Context(), `SELECT heartbeat FROM fleet_status WHERE workspace = 'ws-acme'`).Scan(&raw)
	if err := json.Unmarshal(raw, &stored); err != nil || stored.Seq != 3 || stored.Components["n8n"].OK != true {
		t.Errorf("stored heartbeat = %s (%v)", raw, err)
	}
	if n := testutil.CollectAndCount(w.svc.m.batchSize); n != 1 {
		t.Errorf("batch size histogram: %d series", n)
	}
	// The counter moves just after the batch commits.
	poll.Until(t, "3 heartbeats counted as written", func() bool {
		return testutilCount(t, w.svc.m.heartbeats.WithLabelValues("written")) == 3
	})
	// Convergence is observed once per newly applied version (seq 2), not
	// for a heartbeat repeating it (seq 3), and logged with the version.
	if got := testutil.CollectAndCount(w.svc.m.convergence); got != 1 {
		t.Fatalf("convergence histogram: %d series", got)
	}
	var m dto.Metric
	w.svc.m.convergence.Write(&m)
	if n := m.GetHistogram().GetSampleCount(); n != 1 {
		t.Errorf("convergence observations = %d, want 1 (version 1 applied once)", n)
	}
	if logs := w.logs.String(); strings.Count(logs, `"msg":"manifest applied"`) != 1 || !strings.Contains(logs, `"version":1,"correlation_id"`) {
		t.Errorf("want one manifest applied log line for version 1:\n%s", logs)
	}
}

func TestHeartbeatRefusals(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.setTenant("ws-beta", "blob2", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	w.mustEnroll("ws-beta", 1, 2001, "203.0.113.8")
	if code := w.beat(a.cred, hb("ws-acme", "1001", 5, 0, true)); code != http.StatusAccepted {
		t.Fatalf("heartbeat: %d", code)
	}
	poll.Until(t, "seq 5 written", func() bool { return w.status("ws-acme", 1001).LastSeq == 5 })

	big := hb("ws-acme", "1001", 10, 0, true)
	big.VerifyError = strings.Repeat("x", schema.MaxHeartbeatSize)
	replay := hb("ws-acme", "1001", 3, 7, true)
	replay.AgentVersion = "replayed"
	same := hb("ws-acme", "1001", 5, 7, true)
	same.AgentVersion = "replayed"
	tests := []struct {
		name   string
		cred   string
		body   any
		want   int
		result string
	}{
		{"no credential", "", hb("ws-acme", "1001", 6, 0, true), http.StatusUnauthorized, "unauthorized"},
		{"bad credential", "x" + a.cred, hb("ws-acme", "1001", 6, 0, true), http.StatusUnauthorized, "unauthorized"},
		{"another droplet", a.cred, hb("ws-beta", "2001", 6, 0, true), http.StatusForbidden, "forbidden"},
		{"another droplet of the workspace", a.cred, hb("ws-acme", "2001", 6, 0, true), http.StatusForbidden, "forbidden"},
		{"replayed seq", a.cred, replay, http.StatusAccepted, "replay"},
		{"same seq", a.cred, same, http.StatusAccepted, "replay"},
		{"malformed", a.cred, `{"workspace":`, http.StatusBadRequest, "bad_request"},
		{"unknown field", a.cred, `{"workspace":"ws-acme","droplet":"1001","seq":6,"evil":true}`, http.StatusBadRequest, "bad_request"},
		{"duplicate key", a.cred, `{"workspace":"ws-acme","workspace":"ws-acme","droplet":"1001","seq":6}`, http.StatusBadRequest, "bad_request"},
		{"trailing data", a.cred, `{"workspace":"ws-acme","droplet":"1001","seq":6} x`, http.StatusBadRequest, "bad_request"},
		{"zero seq", a.cred, hb("ws-acme", "1001", 0, 0, true), http.StatusBadRequest, "bad_request"},
		{"swap used past its total", a.cred, `{"workspace":"ws-acme","droplet":"1001","seq":6,"swap_used_bytes":2,"swap_total_bytes":1}`, http.StatusBadRequest, "bad_request"},
		{"repair without a time", a.cred, `{"workspace":"ws-acme","droplet":"1001","seq":6,"repairs":[{"component":"n8n","detail":"repaired"}]}`, http.StatusBadRequest, "bad_request"},
		{"repair without a component", a.cred, `{"workspace":"ws-acme","droplet":"1001","seq":6,"repairs":[{"at":"2026-12-07T06:00:00Z","detail":"repaired"}]}`, http.StatusBadRequest, "bad_request"},
		{"oversized", a.cred, big, http.StatusRequestEntityTooLarge, "too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutilCount(t, w.svc.m.heartbeats.WithLabelValues(tc.result))
			var body []byte
			if s, ok := tc.body.(string); ok {
				body = []byte(s)
			} else {
				body, _ = json.Marshal(tc.body)
			}
			code, _, resp := w.do("POST", "/v1/heartbeat", tc.cred, nil, body)
			if code != tc.want {
				t.Fatalf("status = %d (%s), want %d", code, resp, tc.want)
			}
			if got := testutilCount(t, w.svc.m.heartbeats.WithLabelValues(tc.result)); got != before+1 {
				t.Errorf("genesis_heartbeats_total{result=%q} = %v, want %v", tc.result, got, before+1)
			}
		})
	}
	// Flush whatever might have been queued, then check nothing of the
	// refused or replayed heartbeats was stored.
	if code := w.beat(a.cred, hb("ws-acme", "1001", 6, 0, true)); code != http.StatusAccepted {
		t.Fatal(code)
	}
	poll.Until(t, "seq 6 written", func() bool { return w.status("ws-acme", 1001).LastSeq == 6 })
	if got := w.status("ws-acme", 1001); got.AgentVersion == "replayed" || got.Applied != 0 {
		t.Errorf("a replayed heartbeat was stored: %+v", got)
	}
	if got := w.status("ws-beta", 2001); got.Beat || got.LastSeq != 0 {
		t.Errorf("a heartbeat for ws-beta was stored from ws-acme's credential: %+v", got)
	}
}

func TestHeartbeatQueueFull(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.Queue = 1; c.BatchSize = 1 })
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	// Postgres stalls: the batcher blocks on its first write.
	tx, err := w.st.Pool().Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(t.Context(), `LOCK TABLE fleet_status IN EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	if code := w.beat(a.cred, hb("ws-acme", "1001", 1, 0, true)); code != http.StatusAccepted {
		t.Fatalf("first heartbeat: %d", code)
	}
	poll.Until(t, "the batcher to take the first heartbeat", func() bool { return len(w.svc.queueFor(1001)) == 0 })
	if code := w.beat(a.cred, hb("ws-acme", "1001", 2, 0, true)); code != http.StatusAccepted {
		t.Fatalf("second heartbeat (queued): %d", code)
	}
	if code := w.beat(a.cred, hb("ws-acme", "1001", 3, 0, true)); code != http.StatusServiceUnavailable {
		t.Fatalf("third heartbeat with a full queue: %d, want 503", code)
	}
	tx.Rollback(t.Context())
	// The refused seq was not consumed: the agent's retry is accepted.
	poll.Until(t, "the queue to drain", func() bool { return w.status("ws-acme", 1001).LastSeq == 2 })
	if code := w.beat(a.cred, hb("ws-acme", "1001", 3, 0, true)); code != http.StatusAccepted {
		t.Fatalf("retried heartbeat: %d, want 202", code)
	}
	poll.Until(t, "seq 3 written", func() bool { return w.status("ws-acme", 1001).LastSeq == 3 })
}

// TestBatchKeepsHighestSeq: one batch with several heartbeats of one droplet
// writes the newest; a batch with an older seq than stored changes nothing.
func TestBatchKeepsHighestSeq(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	mk := func(seq int64, version string) store.Heartbeat {
		return store.Heartbeat{Droplet: 1001, Workspace: "ws-acme", Seq: seq, At: time.Now(), Body: []byte(`{}`), AgentVersion: version, OK: true}
	}
	if err := w.svc.writeBatch(t.Context(), []store.Heartbeat{mk(7, "seven"), mk(9, "nine"), mk(8, "eight")}); err != nil {
		t.Fatal(err)
	}
	if got := w.status("ws-acme", 1001); got.LastSeq != 9 || got.AgentVersion != "nine" {
		t.Errorf("after batch: %+v", got)
	}
	// Another replica's older heartbeat loses.
	if err := w.svc.writeBatch(t.Context(), []store.Heartbeat{mk(8, "stale")}); err != nil {
		t.Fatal(err)
	}
	if got := w.status("ws-acme", 1001); got.LastSeq != 9 || got.AgentVersion != "nine" {
		t.Errorf("after a stale batch: %+v", got)
	}
}

// TestHeartbeatAgentReportedHealth: an agent's own report of a problem
// (a component down, an apply or verification error, disk or memory past
// 90%) degrades an ACTIVE_HEALTHY droplet, and an ok report restores it; a
// droplet the watchdog is rebooting comes back ACTIVE_HEALTHY with its
// first ok heartbeat, or ACTIVE_DEGRADED with a problem; FAILED stays.
func TestHeartbeatAgentReportedHealth(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	seq := int64(0)
	send := func(edit func(*schema.Heartbeat)) {
		t.Helper()
		seq++
		beat := hb("ws-acme", "1001", seq, 1, true)
		edit(&beat)
		if code := w.beat(a.cred, beat); code != http.StatusAccepted {
			t.Fatalf("heartbeat %d: %d", seq, code)
		}
		poll.Until(t, fmt.Sprintf("seq %d written", seq), func() bool { return w.status("ws-acme", 1001).LastSeq == seq })
	}
	ok := func(*schema.Heartbeat) {}
	setState := func(state string) {
		t.Helper()
		if _, err := w.st.Pool().Exec(t.Context(), `UPDATE fleet_status SET state = $1 WHERE workspace = 'ws-acme'`, state); err != nil {
			t.Fatal(err)
		}
	}
	send(ok)
	if got := w.status("ws-acme", 1001); got.State != "ACTIVE_HEALTHY" {
		t.Fatalf("after an ok heartbeat: %+v", got)
	}
	steps := []struct {
		name   string
		from   string // state set before the heartbeat ("": as it is)
		edit   func(*schema.Heartbeat)
		state  string
		health string
	}{
		{"disk past 90%", "", func(h *schema.Heartbeat) { h.DiskUsed, h.DiskTotal = 95, 100 }, "ACTIVE_DEGRADED", "degraded"},
		{"ok again", "", ok, "ACTIVE_HEALTHY", "healthy"},
		{"caddy load failing", "", func(h *schema.Heartbeat) { h.Components["caddy"] = schema.ComponentHealth{Detail: "load failed"} }, "ACTIVE_DEGRADED", "degraded"},
		{"apply error", "", func(h *schema.Heartbeat) { h.ApplyError = "n8n answered 500" }, "ACTIVE_DEGRADED", "degraded"},
		{"verification error", "ACTIVE_HEALTHY", func(h *schema.Heartbeat) { h.VerifyError = "bad signature" }, "ACTIVE_DEGRADED", "degraded"},
		{"memory past 90%", "ACTIVE_HEALTHY", func(h *schema.Heartbeat) { h.MemoryUsed, h.MemoryTotal = 99, 100 }, "ACTIVE_DEGRADED", "degraded"},
		{"ok after rebooting", "REBOOTING", ok, "ACTIVE_HEALTHY", "healthy"},
		{"problem after rebooting", "REBOOTING", func(h *schema.Heartbeat) { h.Components["n8n"] = schema.ComponentHealth{} }, "ACTIVE_DEGRADED", "degraded"},
		{"critical, back ok", "ACTIVE_CRITICAL", ok, "ACTIVE_HEALTHY", "healthy"},
		{"FAILED stays", "FAILED", ok, "FAILED", "healthy"},
	}
	for _, s := range steps {
		if s.from != "" {
			setState(s.from)
		}
		send(s.edit)
		if got := w.status("ws-acme", 1001); got.State != s.state || got.Health != s.health {
			t.Errorf("%s: state %s health %s, want %s %s", s.name, got.State, got.Health, s.state, s.health)
		}
	}
}

// TestHeartbeatWriters: with three writers, the droplets' heartbeats are
// split among them, sent concurrently, and every droplet ends at its
// highest seq, each writer having written its share.
func TestHeartbeatWriters(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.Writers = 3 })
	const n = 12
	creds := make([]string, n)
	for i := range n {
		ws := fmt.Sprintf("ws-hb-%02d", i)
		w.setTenant(ws, "blob1", tenantSpec{})
		creds[i] = w.mustEnroll(ws, 1, 4000+i, fmt.Sprintf("203.0.113.%d", 10+i)).cred
	}
	shares := map[chan store.Heartbeat]bool{}
	for i := range n {
		shares[w.svc.queueFor(int64(4000+i))] = true
	}
	if len(shares) != 3 {
		t.Fatalf("%d droplets use %d queues, want 3", n, len(shares))
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			for seq := int64(1); seq <= 5; seq++ {
				if code := w.beat(creds[i], hb(fmt.Sprintf("ws-hb-%02d", i), fmt.Sprint(4000+i), seq, 1, true)); code != http.StatusAccepted {
					t.Errorf("droplet %d seq %d: %d", i, seq, code)
				}
			}
		})
	}
	wg.Wait()
	for i := range n {
		poll.Until(t, "every droplet's last heartbeat written", func() bool {
			r := w.status(fmt.Sprintf("ws-hb-%02d", i), int64(4000+i))
			return r.LastSeq == 5 && r.State == "ACTIVE_HEALTHY"
		})
	}
}

// TestHeartbeatDuringFinish: a heartbeat batch that read a workspace's row
// before a concurrent Finish recorded its droplet, and waits for that
// Finish's row lock, moves on from what Finish wrote. (It used to write
// back the state it computed from the row before: PROVISIONING over the
// recorded droplet, where nothing ever moved it again.)
func TestHeartbeatDuringFinish(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	w.setTenant("ws-race", "blob1", tenantSpec{})
	a := plan.Action{Kind: plan.Create, Workspace: "ws-race", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Droplet: plan.DropletName("ws-race", 1), Gen: 1}
	if _, err := w.st.Begin(ctx, a, schema.StateRunning, commitA); err != nil {
		t.Fatal(err)
	}
	ag := newAgent(t)
	tok := w.unboundToken("ws-race", a.Droplet)
	h := hash(tok)
	if _, err := w.st.Pool().Exec(ctx, `UPDATE enrollment_tokens SET droplet_id = 7001 WHERE token_hash = $1`, h[:]); err != nil {
		t.Fatal(err)
	}
	if code := w.enroll(ag, ag.request(tok, "ws-race", "7001", a.Droplet)); code != http.StatusOK {
		t.Fatalf("enroll: %d", code)
	}
	// The executor's Finish, holding the row.
	tx, err := w.st.Pool().Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `UPDATE fleet_status SET droplet_id = 7001, droplet_name = $2, state = 'INITIALIZING', state_since = now() WHERE workspace = $1`,
		"ws-race", a.Droplet); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- w.svc.writeBatch(context.Background(), []store.Heartbeat{{Droplet: 7001, Workspace: "ws-race", Seq: 1, At: time.Now(), Body: []byte(`{}`), OK: true}})
	}()
	poll.Until(t, "the heartbeat to wait for the row lock", func() bool {
		return w.count(`SELECT count(*) FROM pg_locks WHERE NOT granted`) > 0
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var state string
	var droplet int64
	if err := w.st.Pool().QueryRow(ctx, `SELECT state, droplet_id FROM fleet_status WHERE workspace = 'ws-race'`).Scan(&state, &droplet); err != nil {
		t.Fatal(err)
	}
	if state != "CONFIGURING" || droplet != 7001 {
		t.Errorf("after the heartbeat: %s on droplet %d, want CONFIGURING on 7001 (it moved on from Finish's INITIALIZING)", state, droplet)
	}
}
