package main

import (
	"io"
	"net"
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

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// TestServeRole: a --role serve replica never leads. Beside a full replica
// it serves the fleet while the full one leads; with the full one killed
// it follows a new commit (its /v1/fleet shows it) yet nothing creates the
// new tenant's droplet and it calls no DigitalOcean API, however long it
// runs alone; a full replica started again leads and creates it, so the
// quiet before was the role's, not a slow loop's.
func TestServeRole(t *testing.T) {
	w := newWorld(t, 1, 0)
	var doCalls atomic.Int64
	noDO := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		doCalls.Add(1)
		http.Error(rw, "a serve replica must not call DigitalOcean", http.StatusTeapot)
	}))
	defer noDO.Close()
	serve := w.start("--role", "serve", "--do-api-url", noDO.URL+"/", "--replica-id", "serve-1")
	serve.waitReady(t)
	full := w.start("--replica-id", "full-1")
	testkit.WaitFor(t, "the full replica to create ws-000", func() bool { return w.dropletsByName()["genesis-ws-000-1"] == 1 })
	for name, p := range map[string]*proc{"serve": serve, "full": full} {
		doc, err := getFleet(t, p.url)
		if err != nil || doc.Leader != (name == "full") {
			t.Fatalf("%s: /v1/fleet leader %v (%v), want only the full replica leading", name, doc.Leader, err)
		}
	}
	metrics := func(p *proc) string {
		resp, err := http.Get(p.url + "/metrics")
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	for name, want := range map[*proc][]string{
		serve: {"genesis_replica_leader_eligible 0", "genesis_leader 0"},
		full:  {"genesis_replica_leader_eligible 1", "genesis_leader 1"},
	} {
		if m := metrics(name); !containsAll(m, want) {
			t.Errorf("%s /metrics lacks %v", name.url, want)
		}
	}

	// The full replica dies; the serve replica is alone with a new tenant.
	full.cmd.Process.Signal(syscall.SIGKILL)
	full.cmd.Wait()
	os.WriteFile(filepath.Join(w.repo, "tenants", "ws-new.yaml"), []byte(testkit.TenantYAML(tenant("ws-new", schema.StateRunning))), 0o644)
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "onboard ws-new")
	head := strings.TrimSpace(gitOut(t, w.repo, "rev-parse", "HEAD"))
	testkit.WaitFor(t, "the serve replica to read the new commit", func() bool {
		doc, err := getFleet(t, serve.url)
		return err == nil && doc.Commit == head
	})
	// Ten of its resync periods (200 ms): a replica that could lead would
	// have taken the lock (the dead one's session is gone) and created
	// ws-new by now, as the full replica below does.
	time.Sleep(2 * time.Second)
	if doc, _ := getFleet(t, serve.url); doc.Leader {
		t.Error("the serve replica leads")
	}
	if n := w.dropletsByName()["genesis-ws-new-1"]; n != 0 {
		t.Errorf("ws-new has %d droplets with only a serve replica up, want 0", n)
	}
	again := w.start("--replica-id", "full-2")
	testkit.WaitFor(t, "a full replica to lead again and create ws-new", func() bool { return w.dropletsByName()["genesis-ws-new-1"] == 1 })
	if doc, err := getFleet(t, again.url); err != nil || !doc.Leader {
		t.Errorf("the new full replica: leader %v (%v)", doc.Leader, err)
	}
	if n := doCalls.Load(); n != 0 {
		t.Errorf("the serve replica made %d DigitalOcean calls, want none", n)
	}
	if !strings.Contains(serve.logs.String(), "role serve: this replica never leads") {
		t.Error("the serve replica does not log its role")
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// TestDebugListen: --debug-listen serves Go's profiler on its own address
// and never through the API's.
func TestDebugListen(t *testing.T) {
	w := newWorld(t, 0, 0)
	debug := testkit.FreeAddr(t)
	p := w.start("--debug-listen", debug)
	p.waitReady(t)
	get := func(url string) int {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	if code := get("http://" + debug + "/debug/pprof/heap"); code != http.StatusOK {
		t.Errorf("heap profile on --debug-listen: %d, want 200", code)
	}
	if code := get(p.url + "/debug/pprof/heap"); code != http.StatusNotFound {
		t.Errorf("heap profile on the API's address: %d, want 404", code)
	}
}

// TestDebugListenTaken: a --debug-listen address that cannot be listened on
// stops the reconciler before it opens Postgres (this database URL would
// fail to connect, and the error must name the profiler's address, not it).
func TestDebugListenTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(binary, "--database-url", "postgres://genesis@127.0.0.1:1/none?connect_timeout=1", "--state-dir", t.TempDir(),
		"--insecure-no-auth", "--debug-listen", ln.Addr().String())
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "--debug-listen") || strings.Contains(string(out), "127.0.0.1:1") {
		t.Errorf("exit %d, output %q; want exit 1 naming --debug-listen before any database error", code, out)
	}
}
