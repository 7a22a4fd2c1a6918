package localfleet

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/schema"
)

// TestFleet starts a small fleet end to end: two running tenants of
// state-example on the simulator, every droplet booting genesis-demo's
// droplet hook with a real genesis-agent and Caddy, until both agents
// applied their signed manifests; then Stop leaves no process behind.
func TestFleet(t *testing.T) {
	bin, caddy := buildBins(t)

	// The state repository: state-example with two running tenants.
	work := t.TempDir()
	repo := filepath.Join(work, "state")
	if out, err := exec.Command("cp", "-r", "../state-example", repo).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	want := []string{"ws-acme", "ws-globex"}
	files, _ := filepath.Glob(filepath.Join(repo, "tenants", "*.yaml"))
	for _, f := range files {
		if id := strings.TrimSuffix(filepath.Base(f), ".yaml"); id != want[0] && id != want[1] {
			os.Remove(f)
		}
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "-A"}, {"commit", "-q", "-m", "two tenants"}} {
		cmd := exec.Command("git", append([]string{"-C", repo, "-c", "user.name=test", "-c", "user.email=test@genesis.invalid"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	loaded := schema.LoadDir(os.DirFS(repo))
	if len(loaded.Errors) > 0 || len(loaded.Tenants) != 2 {
		t.Fatalf("state repository: %d tenants, errors %v", len(loaded.Tenants), loaded.Errors)
	}

	pidLog := filepath.Join(work, "pids.log")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	f, err := Start(ctx, Options{StateRepo: repo, Accounts: loaded.Fleet.Spec.Accounts, Work: work,
		AgeIdentity: filepath.Join(repo, "demo-keys", "age.key"), WebhookSecret: "test-secret",
		BootDelay: 300 * time.Millisecond, ActionDelay: 200 * time.Millisecond, HookGrace: 2 * time.Second,
		BootCmd: fmt.Sprintf("exec %s droplet --caddy-bin %s --agent-bin %s --pid-log %s -- --heartbeat-interval 1s --poll-wait 20s --log-format json",
			filepath.Join(bin, "genesis-demo"), caddy, filepath.Join(bin, "genesis-agent"), pidLog)})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			f.Stop()
		}
	}()
	for _, u := range []string{f.URL, f.SimURL} {
		if pu, err := url.Parse(u); err != nil || pu.Hostname() != "127.0.0.1" {
			t.Errorf("%s does not listen on 127.0.0.1", u)
		}
	}

	type row struct {
		Workspace       string `json:"workspace"`
		Lifecycle       string `json:"lifecycle"`
		ManifestApplied int64  `json:"manifest_version_applied"`
	}
	var last []row
	for healthy := 0; healthy < len(want); {
		if ctx.Err() != nil {
			logs, _ := exec.Command("sh", "-c", "tail -n 20 "+work+"/*.log").CombinedOutput()
			t.Fatalf("not every tenant ACTIVE_HEALTHY: %+v\n%s", last, logs)
		}
		time.Sleep(250 * time.Millisecond)
		resp, err := http.Get(f.URL + "/v1/fleet")
		if err != nil {
			continue
		}
		var doc struct {
			Tenants []row `json:"tenants"`
		}
		err = json.NewDecoder(resp.Body).Decode(&doc)
		resp.Body.Close()
		if err != nil {
			continue
		}
		last, healthy = doc.Tenants, 0
		for _, r := range doc.Tenants {
			if r.Lifecycle == "ACTIVE_HEALTHY" && r.ManifestApplied > 0 {
				healthy++
			}
		}
	}

	stopped = true
	if err := f.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	alive, n, err := Leftovers(pidLog)
	if err != nil || n == 0 || len(alive) > 0 {
		t.Errorf("after Stop: %d processes logged, still running: %q (%v)", n, alive, err)
	}
	pids, _ := os.ReadFile(pidLog)
	roles := map[string]int{}
	for _, line := range strings.Split(string(pids), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			roles[f[1]]++
		}
	}
	if roles["droplet-sim"] < 2 || roles["agent"] != roles["droplet-sim"] || roles["caddy"] != roles["droplet-sim"] {
		t.Errorf("processes started by role: %v", roles)
	}
}
