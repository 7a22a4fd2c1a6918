package upgradetest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"genesis.dev/fleet/agent"
	"genesis.dev/fleet/agent/probe"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/watchdog"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// beatSink is the agent side of a reconciler, as small as the agent
// needs: enrollment gives a credential, no manifest is published (the
// droplet's converger applied it directly), heartbeats are decoded as the
// reconciler decodes them (strictly) and kept.
type beatSink struct {
	t     *testing.T
	mu    sync.Mutex
	beats []schema.Heartbeat
}

func (s *beatSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.Method + " " + r.URL.Path {
	case "POST /v1/enroll":
		var req schema.EnrollRequest
		body, _ := io.ReadAll(r.Body)
		if err := schema.DecodeStrict(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		json.NewEncoder(w).Encode(schema.EnrollResponse{Workspace: req.Workspace, DropletID: req.DropletID, Credential: "cred-escalate"})
	case "GET /v1/manifest":
		http.Error(w, `{"error":"no manifest yet"}`, http.StatusNotFound)
	case "POST /v1/heartbeat":
		var hb schema.Heartbeat
		body, _ := io.ReadAll(r.Body)
		if err := schema.DecodeStrict(body, &hb); err != nil {
			s.t.Errorf("heartbeat the reconciler would refuse: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.beats = append(s.beats, hb)
		s.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
	}
}

// wait returns the first heartbeat after the first skip ones that ok
// accepts.
func (s *beatSink) wait(what string, skip int, ok func(schema.Heartbeat) bool) schema.Heartbeat {
	s.t.Helper()
	var got schema.Heartbeat
	testkit.WaitFor(s.t, what, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, hb := range s.beats[min(skip, len(s.beats)):] {
			if ok(hb) {
				got = hb
				return true
			}
		}
		return false
	})
	return got
}

func (s *beatSink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.beats)
}

// TestN8NRepairFailsEscalates is the other half of
// TestN8NKilledRepairedLocally: a killed n8n container the agent cannot
// start again (its container is gone) is not silent. The real agent's
// heartbeats, with the real probes over the compose stack (the docker
// emulator) and n8n's API, keep reporting n8n down with the failed
// restart in the detail; the reconciler's judge of a heartbeat
// (watchdog.Problems, which makes the heartbeat writer set
// ACTIVE_DEGRADED) finds the problem; and the watchdog, fed those
// heartbeats one a minute on its own clock, reboots the droplet once it
// was degraded for spec.watchdog's criticalAfter (default 15 min), and
// not a minute sooner.
func TestN8NRepairFailsEscalates(t *testing.T) {
	d := newDroplet(t)
	if err := d.apply(manifest(1, "1.123.81")); err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sink := &beatSink{t: t}
	srv := httptest.NewServer(sink)
	defer srv.Close()
	st, err := agent.OpenState(filepath.Join(d.dir, "agent-state"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// The probe's docker is this test binary too (the compose runtime's
	// Exec gives its children the same environment).
	t.Setenv("DOCKERSIM_TEST_AS", "docker")
	t.Setenv("DOCKERSIM_STATE", filepath.Join(d.dir, "engine"))
	t.Setenv("DOCKERSIM_N8N_BIN", d.rt.Docker)
	containers := probe.Containers{Docker: d.rt.Docker, Project: "genesis", File: d.rt.File, Expected: func(s string) (string, bool) {
		if s != "n8n" {
			return "", false
		}
		return d.conv.N8NDownOnPurpose()
	}}
	a, err := agent.New(agent.Config{
		Bootstrap: schema.AgentConfig{ReconcilerURL: srv.URL, SigningKeys: []string{string(dsse.MarshalPublicKeyPEM(pub))},
			Workspace: "ws-acme", DropletName: "genesis-ws-acme-1", Token: "one-time"},
		DropletID: "4242", State: st, Logger: slog.New(slog.DiscardHandler), HeartbeatInterval: 200 * time.Millisecond, PollWait: time.Second,
		Probes: map[string]agent.Probe{"n8n": d.conv.ProbeN8N, "workflows": d.conv.ProbeWorkflows, "containers": containers.Probe},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	healthy := sink.wait("a healthy heartbeat", 0, func(hb schema.Heartbeat) bool {
		return hb.Components["n8n"].OK && hb.Components["workflows"].OK && hb.Components["containers"].OK
	})
	if p := watchdog.Problems(healthy); len(p) != 0 || healthy.Components["workflows"].Detail != "2 of 2 managed workflows active" {
		t.Fatalf("healthy droplet: problems %v in %+v", p, healthy.Components)
	}

	// Kill n8n and take its container away: docker compose start fails.
	record := filepath.Join(d.dir, "engine", "genesis", "n8n.json")
	data, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.PID == 0 {
		t.Fatalf("container record %s: %v", data, err)
	}
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(record); err != nil {
		t.Fatal(err)
	}
	from := sink.count()
	failed := sink.wait("a heartbeat with the failed restart", from, func(hb schema.Heartbeat) bool {
		return strings.Contains(hb.Components["n8n"].Detail, "restart 1 failed")
	})
	again := sink.wait("a later heartbeat, within the restart backoff", sink.count(), func(hb schema.Heartbeat) bool {
		return strings.Contains(hb.Components["n8n"].Detail, "1 restarts failed, next at")
	})
	for _, hb := range []schema.Heartbeat{failed, again} {
		if hb.Components["n8n"].OK || hb.Components["containers"].OK || !strings.Contains(hb.Components["containers"].Detail, "n8n has no container") {
			t.Errorf("heartbeat components %+v, want n8n and containers down", hb.Components)
		}
		if p := watchdog.Problems(hb); !slices.Contains(p, "component n8n down") || !slices.Contains(p, "component containers down") {
			t.Errorf("problems %v, want n8n and containers down", p)
		}
	}
	if d.conv.N8NRepairs() != 0 {
		t.Errorf("%d repairs, want none", d.conv.N8NRepairs())
	}

	// The reconciler's side, on its own clock: the heartbeat writer made
	// the tenant ACTIVE_DEGRADED at t0 (a heartbeat with problems); the
	// agent keeps sending such heartbeats every minute.
	t0 := time.Date(2030, 1, 2, 3, 0, 0, 0, time.UTC)
	policy := watchdog.PolicyFrom(schema.Watchdog{})
	row := watchdog.Row{Workspace: "ws-acme", Lifecycle: lifecycle.ActiveDegraded, Desired: string(schema.StateRunning),
		DropletID: 4242, DropletName: "genesis-ws-acme-1", Account: "main", StateSince: t0}
	others := []watchdog.Row{}
	for _, ws := range []string{"ws-b", "ws-c"} {
		others = append(others, watchdog.Row{Workspace: ws, Lifecycle: lifecycle.ActiveHealthy, Desired: string(schema.StateRunning), DropletID: 1, StateSince: t0.Add(-time.Hour)})
	}
	for m := 0; m <= int(policy.CriticalAfter/time.Minute); m++ {
		now := t0.Add(time.Duration(m) * time.Minute)
		if len(watchdog.Problems(again)) == 0 {
			t.Fatal("the agent's heartbeat stopped reporting the problem")
		}
		row.LastHeartbeat = now
		rows := append([]watchdog.Row{row}, others...)
		for i := range others {
			rows[i+1].LastHeartbeat = now
		}
		dec := watchdog.Evaluate(rows, policy, now)
		switch {
		case now.Sub(t0) < policy.CriticalAfter && len(dec.Remediations) != 0:
			t.Fatalf("minute %d, within criticalAfter: %+v", m, dec.Remediations)
		case now.Sub(t0) == policy.CriticalAfter:
			want := []watchdog.Remediation{{Workspace: "ws-acme", Step: watchdog.StepReboot, Heartbeat: now,
				Reason: "ACTIVE_DEGRADED for 15m0s while its agent reports problems"}}
			if len(dec.Remediations) != 1 || dec.Remediations[0] != want[0] {
				t.Errorf("minute %d, degraded for criticalAfter: %+v, want %+v", m, dec.Remediations, want)
			}
		}
	}
}
