package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/localfleet"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// TestDropletSim runs genesis-demo droplet as the simulator's boot hook
// would, with the real Caddy and genesis-agent: the emulator and Caddy
// answer at the addresses droplet-sim.json gives, the agent runs with them
// (it tries to enroll with a reconciler that is not ready), the agent's
// records of an earlier n8n are dropped, killing the agent leaves the
// droplet up, and SIGTERM stops every process it started.
func TestDropletSim(t *testing.T) {
	bin, caddyBin := buildDroplet(t)

	// A reconciler that is not ready: the agent retries its enrollment.
	var enrolls atomic.Int32
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/enroll" {
			enrolls.Add(1)
		}
		http.Error(w, "not yet", http.StatusServiceUnavailable)
	}))
	defer rec.Close()
	dir := t.TempDir()
	cfgPath := agentConfigFile(t, rec.URL, dir)
	disk := filepath.Join(dir, "disk")
	state := filepath.Join(disk, "genesis-agent")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	// What an agent recorded for the n8n of an earlier boot, and a file
	// that must survive.
	for name, body := range map[string]string{"n8n.json": `{"email":"a@b","password":"x","api_key":"old"}`, "converge.json": "{}", "keep.json": "{}"} {
		if err := os.WriteFile(filepath.Join(state, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	pidLog := filepath.Join(dir, "pids.log")

	cmd := exec.Command(filepath.Join(bin, "genesis-demo"), "droplet", "--caddy-bin", caddyBin, "--pid-log", pidLog, "--grace", "3s",
		"--", "--heartbeat-interval", "1s", "--retry-max", "200ms", "--log-format", "json")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GENESIS_AGENT_CONFIG=" + cfgPath,
		"DOSIM_DROPLET_ID=42", "DOSIM_DROPLET_IP=127.1.200.7", "DOSIM_DISK_DIR=" + disk}
	d := startDroplet(t, cmd, disk)
	logs, exited, info := d.logs, d.exited, d.info
	if info.DropletID != "42" || info.IP != "127.1.200.7" || info.PID != cmd.Process.Pid {
		t.Errorf("droplet-sim.json: %+v", info)
	}
	for _, name := range []string{"n8n.json", "converge.json"} {
		if _, err := os.Stat(filepath.Join(state, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s of the earlier n8n is still there (%v)", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(state, "keep.json")); err != nil {
		t.Errorf("another file of the agent's state is gone: %v", err)
	}
	// n8n (the emulator) and Caddy's admin API answer.
	for url, want := range map[string]string{info.N8NURL + "/rest/settings": `"settingsMode"`, "http://" + info.CaddyAdmin + "/config/": `"admin"`} {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %s %s", url, resp.Status, body)
		}
	}
	waitFor(t, "the agent's enrollment attempts", logs, func() bool { return enrolls.Load() >= 2 })

	// Killing the agent leaves the droplet up: droplet-sim, Caddy and n8n
	// keep running.
	if err := killAgent(context.Background(), info); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "droplet-sim to notice", logs, func() bool {
		return strings.Contains(logs.String(), `"msg":"agent exited; n8n and caddy keep running"`)
	})
	if localfleet.ProcessGone(info.PID) || localfleet.ProcessGone(info.CaddyPID) {
		t.Fatalf("droplet-sim or caddy stopped with the agent:\n%s", logs)
	}
	if resp, err := http.Get(info.N8NURL + "/healthz"); err != nil {
		t.Errorf("n8n after the agent died: %v", err)
	} else {
		resp.Body.Close()
	}
	if err := killAgent(context.Background(), info); err == nil {
		t.Error("killing a dead agent succeeded")
	}

	// SIGTERM: everything it started is gone, and it exits 0.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if d.err != nil {
			t.Errorf("droplet-sim after SIGTERM: %v\n%s", d.err, logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("droplet-sim still runs 20s after SIGTERM:\n%s", logs)
	}
	alive, n, err := localfleet.Leftovers(pidLog)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || len(alive) > 0 {
		t.Errorf("pid log: %d processes, still running: %q", n, alive)
	}
	for _, want := range []string{`"component":"droplet-sim"`, `"msg":"droplet up"`, `"msg":"stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s", want)
		}
	}
}

func TestDropletSimUsage(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "caddy")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	disk := t.TempDir()
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "Usage: genesis-demo droplet"},
		{[]string{"--disk", disk}, 2, "--caddy-bin is required"},
		{[]string{"--caddy-bin", exe, "--agent-bin", exe}, 2, "--disk or $DOSIM_DISK_DIR is required"},
		{[]string{"--caddy-bin", exe, "--agent-bin", exe, "--disk", disk, "--bind", "10.0.0.1"}, 2, `--bind "10.0.0.1": want a loopback IP address`},
		{[]string{"--caddy-bin", filepath.Join(disk, "nope"), "--agent-bin", exe, "--disk", disk}, 2, "--caddy-bin " + filepath.Join(disk, "nope") + ": not an executable file"},
		{[]string{"--caddy-bin", exe, "--agent-bin", exe, "--disk", disk, "extra"}, 2, `unexpected arguments ["extra"]`},
		{[]string{"--caddy-bin", exe, "--agent-bin", exe, "--disk", disk, "--log-format", "xml"}, 2, "--log-format"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			code, out, errOut := cli(t, "", append([]string{"droplet"}, tc.args...)...)
			if code != tc.code || !strings.Contains(out+errOut, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, out, errOut, tc.code, tc.want)
			}
		})
	}
}

// waitFor polls cond for up to 30 seconds.
func waitFor(t *testing.T, what string, logs *syncio.Buffer, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s; logs:\n%s", what, logs)
		}
	}
}

// TestDropletSimCompose: with --n8n-runtime compose the droplet's n8n is a
// container of the docker emulator (DIR/bin/docker), the agent is told to
// switch versions through it, its records of n8n are kept (n8n's state
// lives in its database), and SIGTERM stops the container.
func TestDropletSimCompose(t *testing.T) {
	bin, caddyBin := buildDroplet(t)
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not yet", http.StatusServiceUnavailable)
	}))
	defer rec.Close()
	dir := t.TempDir()
	cfgPath := agentConfigFile(t, rec.URL, dir)
	disk := filepath.Join(dir, "disk")
	state := filepath.Join(disk, "genesis-agent")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "n8n.json"), []byte(`{"email":"a@b","password":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// A droplet whose agent committed a version (a reboot): droplet-sim
	// starts n8n at it, as docker's restart policy would. A new droplet
	// (no version yet) leaves n8n to the agent's first manifest.
	if err := os.WriteFile(filepath.Join(state, "n8n-version"), []byte("1.123.81\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "genesis-demo"), "droplet", "--caddy-bin", caddyBin, "--grace", "3s", "--n8n-runtime", "compose",
		"--", "--heartbeat-interval", "1s", "--retry-max", "200ms", "--log-format", "json", "--backups=false")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "GENESIS_AGENT_CONFIG=" + cfgPath,
		"DOSIM_DROPLET_ID=43", "DOSIM_DROPLET_IP=127.1.200.8", "DOSIM_DISK_DIR=" + disk}
	d := startDroplet(t, cmd, disk)
	logs, exited, info := d.logs, d.exited, d.info
	waitFor(t, "the n8n container", logs, func() bool {
		resp, err := http.Get(info.N8NURL + "/healthz/readiness")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if _, err := os.Stat(filepath.Join(state, "n8n.json")); err != nil {
		t.Errorf("the agent's n8n login was dropped: %v", err)
	}
	if !strings.Contains(logs.String(), "--n8n-runtime") && !strings.Contains(logs.String(), `"msg":"n8n container started"`) {
		t.Errorf("no container start logged:\n%s", logs)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("droplet-sim still runs 30s after SIGTERM:\n%s", logs)
	}
	if resp, err := http.Get(info.N8NURL + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the n8n container still answers after the droplet stopped")
	}
}

// runningDroplet is a started droplet-sim: its output, its exit (err is
// set when exited closes) and its droplet-sim.json.
type runningDroplet struct {
	logs   *syncio.Buffer
	exited chan struct{}
	err    error
	info   dropletInfo
}

// startDroplet starts cmd (a droplet-sim on disk), kills it when the test
// ends if it still runs, and waits for its droplet-sim.json.
func startDroplet(t *testing.T, cmd *exec.Cmd, disk string) *runningDroplet {
	t.Helper()
	d := &runningDroplet{logs: &syncio.Buffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = d.logs, d.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			cmd.Process.Kill()
			<-d.exited
		}
	})
	waitFor(t, "droplet-sim.json", d.logs, func() bool {
		data, err := os.ReadFile(filepath.Join(disk, dropletInfoFile))
		if err != nil {
			return false
		}
		if d.info, err = parseDropletInfo(data); err != nil {
			t.Fatal(err)
		}
		return true
	})
	return d
}

// buildDroplet builds genesis-demo and genesis-agent into a temporary
// directory and returns it with a Caddy binary.
func buildDroplet(t *testing.T) (bin, caddyBin string) {
	t.Helper()
	bin = t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", ".", "../genesis-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin, buildCaddy(t)
}

// agentConfigFile writes an agent config for reconciler into dir and
// returns its path.
func agentConfigFile(t *testing.T, reconciler, dir string) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := json.Marshal(schema.AgentConfig{ReconcilerURL: reconciler, SigningKeys: []string{string(dsse.MarshalPublicKeyPEM(pub))},
		Workspace: "ws-test", DropletName: "genesis-ws-test-1", Token: "one-time"})
	path := filepath.Join(dir, "agent.json")
	if err := os.WriteFile(path, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
