package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/fakes/n8nemu"
	"genesis.dev/fleet/internal/promcheck"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// protocolServer is a minimal reconciler for the process test: one token,
// one droplet, one manifest rendered once the droplet has enrolled (sealed
// to the recipient it enrolled with), heartbeats kept.
type protocolServer struct {
	t     *testing.T
	w     *world
	token string

	// build makes the manifest (default: w.manifest); called once the
	// droplet enrolled, with p.mu held.
	build func(v int64) schema.Manifest

	mu         sync.Mutex
	cred       string
	manifest   []byte
	heartbeats []schema.Heartbeat
}

func (p *protocolServer) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch r.Method + " " + r.URL.Path {
	case "POST /v1/enroll":
		var req schema.EnrollRequest
		body, _ := io.ReadAll(r.Body)
		if schema.DecodeStrict(body, &req) != nil {
			http.Error(rw, "malformed", http.StatusBadRequest)
			return
		}
		if req.Token != p.token || p.cred != "" {
			http.Error(rw, "token refused", http.StatusUnauthorized)
			return
		}
		if req.Workspace != p.w.workspace || req.DropletID != p.w.droplet || req.DropletName != "genesis-ws-acme" {
			http.Error(rw, "foreign", http.StatusForbidden)
			return
		}
		rec, err := age.ParseX25519Recipient(req.AgeRecipient)
		if err != nil {
			http.Error(rw, "bad recipient", http.StatusBadRequest)
			return
		}
		p.w.recipient = rec
		m := p.w.manifest(1)
		if p.build != nil {
			m = p.build(1)
		}
		m.IssuedAt, m.Expires = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
		p.manifest = p.w.sign(m, nil)
		p.cred = "cred-0123456789"
		json.NewEncoder(rw).Encode(schema.EnrollResponse{Workspace: req.Workspace, DropletID: req.DropletID, Credential: p.cred})
	case "GET /v1/manifest":
		if r.Header.Get("Authorization") != "Bearer "+p.cred || p.cred == "" {
			http.Error(rw, "unknown credential", http.StatusUnauthorized)
			return
		}
		etag := `"` + sha(p.manifest) + `"`
		if r.Header.Get("If-None-Match") == etag {
			p.mu.Unlock()
			time.Sleep(200 * time.Millisecond) // a short hold
			p.mu.Lock()
			rw.Header().Set("ETag", etag)
			rw.WriteHeader(http.StatusNotModified)
			return
		}
		rw.Header().Set("ETag", etag)
		rw.Write(p.manifest)
	case "POST /v1/heartbeat":
		if r.Header.Get("Authorization") != "Bearer "+p.cred || p.cred == "" {
			http.Error(rw, "unknown credential", http.StatusUnauthorized)
			return
		}
		var hb schema.Heartbeat
		body, _ := io.ReadAll(r.Body)
		if err := schema.DecodeStrict(body, &hb); err != nil {
			p.t.Errorf("heartbeat: %v", err)
			http.Error(rw, "malformed", http.StatusBadRequest)
			return
		}
		p.heartbeats = append(p.heartbeats, hb)
		rw.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(rw, r)
	}
}

func (p *protocolServer) beats() []schema.Heartbeat {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]schema.Heartbeat(nil), p.heartbeats...)
}

// TestRunUnderTheSimulatorHook starts genesis-agent run the way the
// DigitalOcean simulator's boot hook does (DOSIM_* environment, the
// cloud-config user data), and checks it enrolls, applies the manifest,
// heartbeats, serves metrics, and stops cleanly on SIGTERM.
func TestRunUnderTheSimulatorHook(t *testing.T) {
	w := newWorld(t)
	ps := &protocolServer{t: t, w: w, token: "one-time-token-abc"}
	srv := httptest.NewServer(ps)
	defer srv.Close()

	cfg, _ := json.Marshal(schema.AgentConfig{
		ReconcilerURL: srv.URL,
		SigningKeys:   []string{string(dsse.MarshalPublicKeyPEM(w.signer.Public()))},
		Workspace:     w.workspace, DropletName: "genesis-ws-acme", Token: ps.token,
	})
	disk := t.TempDir()
	userData := filepath.Join(disk, "user_data")
	doc := "#cloud-config\nwrite_files:\n  - path: " + schema.AgentConfigPath + "\n    permissions: '0600'\n    content: |\n      " + string(cfg) + "\n"
	if err := os.WriteFile(userData, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	metricsAddr := testkit.FreeAddr(t)

	cmd := exec.Command(bin, "run", "--insecure-http", "--converge=false", "--heartbeat-interval", "200ms", "--poll-wait", "1s", "--metrics-listen", metricsAddr, "--log-format", "json")
	stderr, done := startProc(t, cmd, []string{"PATH=" + os.Getenv("PATH"), "DOSIM_USER_DATA_FILE=" + userData, "DOSIM_DROPLET_ID=" + w.droplet, "DOSIM_DISK_DIR=" + disk})

	deadline := time.Now().Add(15 * time.Second)
	var applied *schema.Heartbeat
	for applied == nil && time.Now().Before(deadline) {
		for _, hb := range ps.beats() {
			if hb.AppliedVersion == 1 {
				applied = &hb
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if applied == nil {
		t.Fatalf("no heartbeat with version 1 applied; stderr:\n%s", stderr.String())
	}
	if applied.Droplet != w.droplet || applied.VerifyError != "" || !strings.HasPrefix(applied.AgentVersion, "genesis-agent/") {
		t.Errorf("heartbeat %+v", applied)
	}
	if _, err := os.Stat(filepath.Join(disk, "genesis-agent", "applied.json")); err != nil {
		t.Errorf("state not kept on the droplet's disk: %v", err)
	}
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(body, []byte("genesis_agent_manifest_applied_version 1")) {
		t.Errorf("metrics lack the applied version:\n%s", body)
	}
	if err := promcheck.Check(body); err != nil {
		t.Error(err)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	// Logs are structured, carry a component, and never the credential
	// or the token.
	sc := bufio.NewScanner(bytes.NewReader([]byte(stderr.String())))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Errorf("log line is not JSON: %s", sc.Text())
			continue
		}
		if rec["component"] == nil {
			t.Errorf("log line without a component: %s", sc.Text())
		}
	}
	if strings.Contains(stderr.String(), ps.cred) || strings.Contains(stderr.String(), ps.token) || strings.Contains(stderr.String(), "s3cret") {
		t.Errorf("a secret in the logs:\n%s", stderr.String())
	}
}

// TestRunConverges runs genesis-agent run with convergence on against the
// n8n emulator and a Caddy admin API stand-in: the manifest's credential
// and workflow reach n8n, Caddy gets a config, the ask endpoint answers for
// the manifest's domains, and heartbeats report n8n and Caddy healthy.
func TestRunConverges(t *testing.T) {
	w := newWorld(t)
	emu := n8nemu.Start(t)
	var loads atomic.Int32
	// Like Caddy, it answers GET /config/ with the config it runs (the
	// agent's probe checks it is the one it loaded).
	var running atomic.Pointer[[]byte]
	caddySrv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.Method + " " + r.URL.Path {
		case "GET /config/":
			rw.Header().Set("Content-Type", "application/json")
			if cfg := running.Load(); cfg != nil {
				rw.Write(*cfg)
				return
			}
			rw.Write([]byte("null"))
		case "POST /load":
			loads.Add(1)
			body, _ := io.ReadAll(r.Body)
			running.Store(&body)
		default:
			http.NotFound(rw, r)
		}
	}))
	defer caddySrv.Close()
	ps := &protocolServer{t: t, w: w, token: "one-time-token-abc", build: w.slackManifest}
	dir, cfgPath := startProtocol(t, ps)
	askAddr := testkit.FreeAddr(t)

	cmd := exec.Command(bin, "run", "--insecure-http", "--config", cfgPath, "--droplet-id", w.droplet, "--state-dir", filepath.Join(dir, "state"),
		"--n8n-url", emu.URL, "--caddy-admin", strings.TrimPrefix(caddySrv.URL, "http://"), "--ask-listen", askAddr,
		"--heartbeat-interval", "200ms", "--poll-wait", "1s", "--log-format", "json",
		// A stand-in for psql that answers the probe's SELECT 1.
		"--postgres-probe", "echo 1")
	stderr, done := startProc(t, cmd, []string{"PATH=" + os.Getenv("PATH")})

	deadline := time.Now().Add(15 * time.Second)
	var applied *schema.Heartbeat
	for applied == nil && time.Now().Before(deadline) {
		for _, hb := range ps.beats() {
			if hb.AppliedVersion == 1 && hb.Components["n8n"].OK && hb.Components["caddy"].OK && hb.Components["workflows"].OK {
				applied = &hb
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if applied == nil {
		t.Fatalf("no heartbeat with version 1 applied and n8n, caddy healthy; beats %+v; stderr:\n%s", ps.beats(), stderr.String())
	}
	if applied.ApplyError != "" || applied.N8NVersion != n8nemu.Version {
		t.Errorf("heartbeat %+v", applied)
	}
	// Every part of the droplet is reported: the containers probe runs
	// docker compose (here there may be no docker: then it says so).
	for _, c := range []string{"n8n", "caddy", "workflows", "postgres", "containers", "swap"} {
		if _, ok := applied.Components[c]; !ok {
			t.Errorf("no %s component in %+v", c, applied.Components)
		}
	}
	if w, p := applied.Components["workflows"], applied.Components["postgres"]; w.Detail != "1 of 1 managed workflows active" || !p.OK {
		t.Errorf("workflows %+v, postgres %+v", w, p)
	}
	// Idle hibernation: no execution yet, no last_activity; after one, the
	// heartbeats carry when it started.
	for _, hb := range ps.beats() {
		if !hb.LastActivity.IsZero() {
			t.Errorf("last_activity %v before any execution", hb.LastActivity)
		}
	}
	ran := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	emu.RecordExecution("wf1", ran)
	var active bool
	for deadline := time.Now().Add(10 * time.Second); !active && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, hb := range ps.beats() {
			active = active || hb.LastActivity.Equal(ran)
		}
	}
	if !active {
		t.Errorf("no heartbeat with last_activity %v; stderr:\n%s", ran, stderr.String())
	}
	creds, wfs := emu.Credentials(), emu.Workflows()
	if len(creds) != 1 || len(wfs) != 1 || !wfs[0].Active || !strings.Contains(string(wfs[0].Nodes), creds[0].ID) {
		t.Errorf("n8n holds %+v and %+v", creds, wfs)
	}
	if loads.Load() != 1 {
		t.Errorf("caddy loads = %d, want 1", loads.Load())
	}
	for domain, want := range map[string]int{"track.acme.com": 200, "evil.example.com": 403} {
		resp, err := http.Get("http://" + askAddr + "/ask?domain=" + domain)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("ask %s = %d, want %d", domain, resp.StatusCode, want)
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if strings.Contains(stderr.String(), "s3cret") || strings.Contains(stderr.String(), ps.cred) {
		t.Errorf("a secret in the logs:\n%s", stderr.String())
	}
}

// slackManifest is a manifest of version v with one webhook workflow using
// one sealed Slack credential.
func (w *world) slackManifest(v int64) schema.Manifest {
	m := w.manifest(v)
	wf := json.RawMessage(`{"name":"Notify","nodes":[` +
		`{"name":"Hook","type":"n8n-nodes-base.webhook","typeVersion":2,"position":[0,0],"webhookId":"h1","parameters":{"path":"notify","httpMethod":"POST"}},` +
		`{"name":"Slack","type":"n8n-nodes-base.slack","typeVersion":2,"position":[200,0],"parameters":{},"credentials":{"slackApi":{"id":"TEMPLATE_SLACK_UUID","name":"Slack"}}}` +
		`],"connections":{},"settings":{}}`)
	m.Workflows = []schema.ManifestWorkflow{{Name: "notify", SHA256: sha(wf), JSON: wf}}
	c := w.cred("slack")
	// n8n 1.123 wants a signatureSecret (or its "notice" field) with a slackApi token.
	c.Data = json.RawMessage(`{"accessToken":"s3cret-slack","signatureSecret":"s3cret-sig"}`)
	mc := w.seal("slack", c)
	mc.Type = "slackApi"
	m.Credentials = []schema.ManifestCredential{mc}
	return m
}

// startProtocol serves ps on 127.0.0.1 until the test ends and writes the
// agent config pointing at it; it returns the test's directory and the
// config's path.
func startProtocol(t *testing.T, ps *protocolServer) (dir, cfgPath string) {
	t.Helper()
	srv := httptest.NewServer(ps)
	t.Cleanup(srv.Close)
	cfg, _ := json.Marshal(schema.AgentConfig{
		ReconcilerURL: srv.URL,
		SigningKeys:   []string{string(dsse.MarshalPublicKeyPEM(ps.w.signer.Public()))},
		Workspace:     ps.w.workspace, DropletName: "genesis-ws-acme", Token: ps.token,
	})
	dir = t.TempDir()
	cfgPath = filepath.Join(dir, "agent.json")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, cfgPath
}

// startProc starts cmd with env and its stderr captured, and kills it (if
// still running) when the test ends; done yields its exit.
func startProc(t *testing.T, cmd *exec.Cmd, env []string) (*syncio.Buffer, chan error) {
	t.Helper()
	cmd.Env = env
	stderr := &syncio.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	return stderr, done
}
