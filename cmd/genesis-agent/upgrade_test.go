package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"genesis.dev/fleet/agent"
	"genesis.dev/fleet/internal/supervise"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// publish replaces the served manifest with version v, changed by edit.
func (p *protocolServer) publish(v int64, edit func(*schema.Manifest)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.w.manifest(v)
	edit(&m)
	m.IssuedAt, m.Expires = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	p.manifest = p.w.sign(m, nil)
}

// upgradeDroplet is one droplet of the upgrade test: the fake reconciler,
// the agent's slot layout and the supervisor standing in for systemd.
type upgradeDroplet struct {
	t      *testing.T
	ps     *protocolServer
	slots  agent.Slots
	sup    *supervise.Supervisor
	stderr *syncio.Buffer
}

// TestAgentUpgrade builds three real agents (1.4.0, 1.5.0, and 1.6.0 that
// crashes at start), serves them over HTTP, and runs 1.4.0 from slot a
// under a supervisor that restarts it like systemd's Restart=always and
// restarts it on SIGHUP (the watcher's restart command is kill -HUP).
func TestAgentUpgrade(t *testing.T) {
	builds := t.TempDir()
	build := func(version string, ldflags string) string {
		t.Helper()
		out := filepath.Join(builds, version)
		if b, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", out, ".").CombinedOutput(); err != nil {
			t.Fatalf("build agent %s: %v\n%s", version, err, b)
		}
		return out
	}
	old := build("1.4.0", "-X main.buildVersion=1.4.0")
	build("1.5.0", "-X main.buildVersion=1.5.0")
	build("1.6.0", "-X main.buildVersion=1.6.0 -X main.crashAtStart=yes")
	files := httptest.NewServer(http.FileServer(http.Dir(builds)))
	defer files.Close()
	pin := func(version string) *schema.AgentPin {
		data, err := os.ReadFile(filepath.Join(builds, version))
		if err != nil {
			t.Fatal(err)
		}
		return &schema.AgentPin{Version: version, SHA256: sha(data), URL: files.URL + "/" + version}
	}

	// The watcher's restart command signals this process; the droplet of
	// the running subtest restarts its agent.
	var mu sync.Mutex
	var current *supervise.Supervisor
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			mu.Lock()
			if current != nil {
				current.Restart()
			}
			mu.Unlock()
		}
	}()
	start := func(t *testing.T, deadline time.Duration) *upgradeDroplet {
		w := newWorld(t)
		ps := &protocolServer{t: t, w: w, token: "one-time-token-abc"}
		dir, cfgPath := startProtocol(t, ps)
		d := &upgradeDroplet{t: t, ps: ps, slots: agent.Slots{Root: filepath.Join(dir, "agent")}, stderr: &syncio.Buffer{}}
		if err := agent.Install(d.slots.Root, old); err != nil {
			t.Fatal(err)
		}
		d.sup = supervise.New(supervise.Config{
			Path: d.slots.Current(),
			Args: []string{"run", "--insecure-http", "--converge=false", "--backups=false", "--config", cfgPath, "--droplet-id", w.droplet,
				"--state-dir", filepath.Join(dir, "state"), "--agent-root", d.slots.Root, "--upgrade-watcher", "detached",
				"--upgrade-restart", "kill -HUP " + strconv.Itoa(os.Getpid()), "--upgrade-deadline", deadline.String(),
				"--heartbeat-interval", "200ms", "--poll-wait", "1s", "--retry-max", "2s"},
			Env:    []string{"PATH=" + os.Getenv("PATH")},
			Stderr: d.stderr, Delay: 200 * time.Millisecond,
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { d.sup.Run(ctx); close(done) }() //nolint:errcheck // restarts always
		mu.Lock()
		current = d.sup
		mu.Unlock()
		t.Cleanup(func() {
			cancel()
			<-done
			if t.Failed() {
				watch, _ := os.ReadFile(filepath.Join(d.slots.Root, agent.WatchLogFile))
				t.Logf("agent logs:\n%s\nwatcher logs:\n%s", d.stderr.String(), watch)
			}
		})
		d.waitBeat("version 1 applied by 1.4.0", func(hb schema.Heartbeat) bool {
			return hb.AppliedVersion == 1 && hb.AgentVersion == "genesis-agent/1.4.0"
		})
		return d
	}

	t.Run("upgrade", func(t *testing.T) {
		d := start(t, time.Minute)
		d.ps.publish(2, func(m *schema.Manifest) { m.Agent = pin("1.5.0") })
		d.waitBeat("a heartbeat of 1.5.0", func(hb schema.Heartbeat) bool {
			return hb.AgentVersion == "genesis-agent/1.5.0" && hb.AppliedVersion == 2 && hb.ApplyError == "" && len(hb.Rejected) == 0
		})
		d.waitCommitted("b")
	})

	t.Run("crash rolled back", func(t *testing.T) {
		d := start(t, 3*time.Second)
		d.ps.publish(2, func(m *schema.Manifest) { m.Agent = pin("1.6.0") })
		d.waitBeat("1.4.0 reporting the rejection of 1.6.0", func(hb schema.Heartbeat) bool {
			return hb.AgentVersion == "genesis-agent/1.4.0" && len(hb.Rejected) == 1 &&
				hb.Rejected[0].Part == schema.RejectAgent && hb.Rejected[0].Target == "1.6.0" && hb.Rejected[0].Version == 2
		})
		d.waitCommitted("a")
		// Not tried again while the manifest asks for it.
		starts, n := d.sup.Starts(), len(d.ps.beats())
		testkit.WaitFor(t, "ten more heartbeats", func() bool { return len(d.ps.beats()) >= n+10 })
		if got := d.sup.Starts(); got != starts {
			t.Errorf("agent started %d times after the rollback", got-starts)
		}
		d.waitCommitted("a")
		// A manifest naming another build clears the rejection and
		// upgrades.
		d.ps.publish(3, func(m *schema.Manifest) { m.Agent = pin("1.5.0") })
		d.waitBeat("a heartbeat of 1.5.0 without rejections", func(hb schema.Heartbeat) bool {
			return hb.AgentVersion == "genesis-agent/1.5.0" && hb.AppliedVersion == 3 && len(hb.Rejected) == 0
		})
		d.waitCommitted("b")
	})

	t.Run("digest mismatch", func(t *testing.T) {
		d := start(t, time.Minute)
		bad := pin("1.5.0")
		bad.SHA256 = pin("1.4.0").SHA256
		d.ps.publish(2, func(m *schema.Manifest) { m.Agent = bad })
		d.waitBeat("the refusal reported", func(hb schema.Heartbeat) bool {
			return hb.AppliedVersion == 2 && hb.AgentVersion == "genesis-agent/1.4.0" &&
				strings.Contains(hb.ApplyError, "SHA-256 is") && strings.Contains(hb.ApplyError, "refused")
		})
		d.waitCommitted("a")
		if _, err := os.Stat(d.slots.Binary("b")); err == nil {
			t.Error("the refused download was written to slot b")
		}
		if got := d.sup.Starts(); got != 1 {
			t.Errorf("agent started %d times, want 1", got)
		}
	})
}

// waitBeat waits for a heartbeat that satisfies ok.
func (d *upgradeDroplet) waitBeat(what string, ok func(schema.Heartbeat) bool) {
	d.t.Helper()
	testkit.WaitFor(d.t, what, func() bool {
		for _, hb := range d.ps.beats() {
			if ok(hb) {
				return true
			}
		}
		return false
	})
}

// waitCommitted waits until no upgrade is pending and current is slot.
func (d *upgradeDroplet) waitCommitted(slot string) {
	d.t.Helper()
	testkit.WaitFor(d.t, "no pending upgrade, current at slot "+slot, func() bool {
		_, pending, err := d.slots.ReadPending()
		active, _ := d.slots.Active()
		return err == nil && !pending && active == slot
	})
}
