package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/promcheck"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/tenants"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "genesis-reconciler-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "genesis-reconciler")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build genesis-reconciler: %v\n%s", err, out)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

const fleetYAML = `apiVersion: genesis.dev/v1
kind: Fleet
spec:
  accounts:
    - {name: acct-a, regions: [nyc3], maxDroplets: 50, tokenEnv: GENESIS_TEST_TOKEN_A}
    - {name: acct-b, regions: [nyc3], maxDroplets: 50, tokenEnv: GENESIS_TEST_TOKEN_B}
  defaults: {size: s-1vcpu-1gb, image: ubuntu-22-04-x64, n8nVersion: 1.123.81}
  recipients: [age1y3uu66akrdeq9vd97m5yq34elu876zwsplztfgkv4c4z5ktgg92s8q0mw3]
  safety: {maxDestroyPerRun: 5, maxHibernatePercent: 50}
  sizes: {s-1vcpu-1gb: {monthlyUSD: 6}}
`

func tenantYAML(id string) string {
	return fmt.Sprintf("apiVersion: genesis.dev/v1\nkind: Tenant\nmetadata: {id: %s, name: %s, tier: pro}\nspec:\n  state: running\n  droplet: {region: nyc3}\n", id, id)
}

type world struct {
	t    *testing.T
	repo string
	db   string
	sim  *dosimtest.Server
}

func newWorld(t *testing.T, tenantsN int, boot time.Duration) *world {
	w := &world{t: t, repo: t.TempDir(), db: pgtest.New(t)}
	w.git("init", "-q", "-b", "main")
	os.MkdirAll(filepath.Join(w.repo, "tenants"), 0o755)
	os.WriteFile(filepath.Join(w.repo, "genesis.yaml"), []byte(fleetYAML), 0o644)
	for i := range tenantsN {
		id := fmt.Sprintf("ws-%03d", i)
		os.WriteFile(filepath.Join(w.repo, "tenants", id+".yaml"), []byte(tenantYAML(id)), 0o644)
	}
	w.git("add", "-A")
	w.git("commit", "-q", "-m", "fleet")
	w.sim = dosimtest.Start(t, dosim.Config{
		Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 100}, {Name: "acct-b", Token: "tok-b", DropletLimit: 100}},
		Limits:   dosim.Limits{BootDelay: dosim.Duration(boot)},
	})
	return w
}

func (w *world) git(args ...string) {
	w.t.Helper()
	cmd := exec.Command("git", append([]string{"-C", w.repo, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		w.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
}

// proc is a running genesis-reconciler.
type proc struct {
	cmd  *exec.Cmd
	url  string
	logs *syncio.Buffer
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (w *world) start(extra ...string) *proc {
	w.t.Helper()
	addr := freePort(w.t)
	args := append([]string{"--state-repo", w.repo, "--database-url", w.db, "--do-api-url", w.sim.URL, "--listen", addr,
		"--poll-interval", "200ms", "--resync", "200ms", "--webhook-secret", "s3cret", "--log-format", "text"}, extra...)
	if !slices.Contains(extra, "--tokens") {
		args = append(args, "--insecure-no-auth")
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "GENESIS_TEST_TOKEN_A=tok-a", "GENESIS_TEST_TOKEN_B=tok-b")
	logs := &syncio.Buffer{}
	cmd.Stderr = logs
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	p := &proc{cmd: cmd, url: "http://" + addr, logs: logs}
	w.t.Cleanup(func() {
		if w.t.Failed() {
			w.t.Logf("reconciler logs (%s):\n%s", addr, tail(logs.String(), 6000))
		}
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, addr) {
		w.t.Fatalf("reconciler did not start: %q %v\n%s", line, err, logs.String())
	}
	go io.Copy(io.Discard, stdout)
	return p
}

// dropletsByName counts droplets per name across both accounts.
func (w *world) dropletsByName() map[string]int {
	w.t.Helper()
	out := map[string]int{}
	for _, tok := range []string{"tok-a", "tok-b"} {
		c := w.sim.Client(tok)
		for page := 1; ; page++ {
			ds, resp, err := c.Droplets.List(context.Background(), &godo.ListOptions{Page: page, PerPage: 200})
			if err != nil {
				w.t.Fatal(err)
			}
			for _, d := range ds {
				out[d.Name]++
			}
			if resp.Links == nil || resp.Links.IsLastPage() {
				break
			}
		}
	}
	return out
}

type fleetDoc struct {
	Tenants []struct {
		Workspace string `json:"workspace"`
		Lifecycle string `json:"lifecycle"`
	} `json:"tenants"`
	Orphans []any `json:"orphans"`
	Leader  bool  `json:"leader"`
}

func getFleet(t *testing.T, url string) (fleetDoc, error) {
	var doc fleetDoc
	resp, err := http.Get(url + "/v1/fleet")
	if err != nil {
		return doc, err
	}
	defer resp.Body.Close()
	return doc, json.NewDecoder(resp.Body).Decode(&doc)
}

// waitFor polls cond until it holds or the (generous) deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func allInitialized(t *testing.T, url string, n int) bool {
	doc, err := getFleet(t, url)
	if err != nil {
		return false
	}
	ready := 0
	for _, tv := range doc.Tenants {
		if tv.Lifecycle == "INITIALIZING" {
			ready++
		}
	}
	return ready == n
}

// TestKillDuringCreates: kill -9 the reconciler while creates are in flight;
// after a restart every tenant has exactly one droplet and nothing is
// orphaned.
func TestKillDuringCreates(t *testing.T) {
	const n = 12
	w := newWorld(t, n, 2*time.Second)
	p := w.start()
	waitFor(t, "the first droplets to be created", func() bool { return len(w.dropletsByName()) >= 3 })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	before := len(w.dropletsByName())
	p2 := w.start()
	waitFor(t, "all tenants to boot after the restart", func() bool { return allInitialized(t, p2.url, n) })
	got := w.dropletsByName()
	if len(got) != n {
		t.Errorf("droplets = %d, want %d (%d existed at the kill)", len(got), n, before)
	}
	for name, count := range got {
		if count != 1 {
			t.Errorf("droplet %s exists %d times", name, count)
		}
	}
	doc, err := getFleet(t, p2.url)
	if err != nil || len(doc.Orphans) != 0 {
		t.Errorf("orphans after restart = %v (%v)", doc.Orphans, err)
	}
}

// TestLeaderFailover: two replicas, one leads; kill it and the other takes
// over and onboards a tenant committed afterwards.
func TestLeaderFailover(t *testing.T) {
	w := newWorld(t, 2, 0)
	a := w.start()
	waitFor(t, "the first replica to converge", func() bool { return allInitialized(t, a.url, 2) })
	b := w.start()
	docA, _ := getFleet(t, a.url)
	docB, _ := getFleet(t, b.url)
	if !docA.Leader || docB.Leader {
		t.Fatalf("leaders: a=%v b=%v, want a only", docA.Leader, docB.Leader)
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	os.WriteFile(filepath.Join(w.repo, "tenants", "ws-new.yaml"), []byte(tenantYAML("ws-new")), 0o644)
	w.git("add", "-A")
	w.git("commit", "-q", "-m", "onboard ws-new")
	waitFor(t, "the second replica to lead and onboard ws-new", func() bool {
		doc, err := getFleet(t, b.url)
		return err == nil && doc.Leader && allInitialized(t, b.url, 3)
	})
	if got := w.dropletsByName(); len(got) != 3 {
		t.Errorf("droplets = %v", got)
	}
}

// waitReady waits until the replica's /readyz answers 200.
func (p *proc) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, "readiness", func() bool {
		resp, err := http.Get(p.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

func TestWebhookAndHealth(t *testing.T) {
	w := newWorld(t, 1, 0)
	p := w.start("--poll-interval", "1h")
	p.waitReady(t)
	body := []byte(`{"ref":"refs/heads/main"}`)
	post := func(sig string) int {
		req, _ := http.NewRequest("POST", p.url+"/hooks/git", bytes.NewReader(body))
		if sig != "" {
			req.Header.Set(tenants.SignatureHeader, sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(""); got != 401 {
		t.Errorf("unsigned hook: %d, want 401", got)
	}
	if got := post(tenants.Sign([]byte("wrong"), body)); got != 401 {
		t.Errorf("badly signed hook: %d, want 401", got)
	}
	// A commit plus a signed hook is picked up although polling is hourly.
	os.WriteFile(filepath.Join(w.repo, "tenants", "ws-hook.yaml"), []byte(tenantYAML("ws-hook")), 0o644)
	w.git("add", "-A")
	w.git("commit", "-q", "-m", "onboard ws-hook")
	if got := post(tenants.Sign([]byte("s3cret"), body)); got != 202 {
		t.Errorf("signed hook: %d, want 202", got)
	}
	waitFor(t, "the hook's commit to reach the simulator", func() bool { return w.dropletsByName()["genesis-ws-hook-1"] == 1 })
	resp, err := http.Get(p.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"genesis_reconcile_total", "genesis_actions_total{kind=\"create\",result=\"succeeded\"}", "genesis_do_requests_total", "genesis_leader 1",
		"genesis_heartbeat_age_seconds_bucket", "genesis_agent_version_lag_count", `genesis_git_sync_duration_seconds_count{result="ok"}`,
		"genesis_insecure_no_auth 1"} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if err := promcheck.Check(metrics); err != nil {
		t.Error(err)
	}
	if !strings.Contains(p.logs.String(), "INSECURE: serving without authentication") {
		t.Error("no loud log line for --insecure-no-auth")
	}
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--help"}, 0, "Usage: genesis-reconciler"},
		{[]string{"--state-repo", "x"}, 2, "--database-url"},
		{[]string{"--database-url", "postgres://x"}, 2, "exactly one of --state-repo and --state-dir"},
		{[]string{"--bogus"}, 2, "flag provided but not defined"},
		{[]string{"--database-url", "postgres://x", "--state-dir", "x"}, 2, "refusing to serve without --tokens"},
		{[]string{"--database-url", "postgres://x", "--state-dir", "x", "--tokens", "t", "--insecure-no-auth"}, 2, "contradict"},
		{[]string{"--database-url", "postgres://x", "--state-dir", "x", "--insecure-no-auth", "--metrics-token-required"}, 2, "--metrics-token-required needs --tokens"},
		{[]string{"--database-url", "postgres://x", "--state-dir", "x", "--insecure-no-auth", "--replica-id", "replica a"}, 2, `--replica-id: replica id "replica a"`},
	} {
		cmd := exec.Command(binary, tc.args...)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		out, _ := cmd.CombinedOutput()
		if cmd.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), tc.want) {
			t.Errorf("%v: exit %d, output %q; want exit %d and %q", tc.args, cmd.ProcessState.ExitCode(), out, tc.code, tc.want)
		}
	}
}

// TestAnnounceFlag: --announce-signing-key repeats; without it the
// comma-separated environment variable gives the files (bad files are
// refused by name: reconciler/service's TestLoadAnnounced).
func TestAnnounceFlag(t *testing.T) {
	base := []string{"--database-url", "postgres://x", "--state-dir", "x", "--insecure-no-auth"}
	for _, tc := range []struct {
		args []string
		env  string
		want []string
	}{
		{nil, "", nil},
		{nil, "a.pub, b.pub", []string{"a.pub", "b.pub"}},
		{[]string{"--announce-signing-key", "c.pub", "--announce-signing-key", "d.pub"}, "a.pub", []string{"c.pub", "d.pub"}},
	} {
		getenv := func(k string) string {
			if k == "GENESIS_ANNOUNCE_SIGNING_KEYS" {
				return tc.env
			}
			return ""
		}
		c, err := parseFlags(append(base, tc.args...), getenv, io.Discard)
		if err != nil {
			t.Fatalf("%v %q: %v", tc.args, tc.env, err)
		}
		if strings.Join(c.announce.vals, "|") != strings.Join(tc.want, "|") {
			t.Errorf("%v %q: announce %q, want %q", tc.args, tc.env, c.announce.vals, tc.want)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
