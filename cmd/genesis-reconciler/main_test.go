package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
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
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/promcheck"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/service"
	"genesis.dev/fleet/schema"
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

// testFleet has two accounts in nyc3 whose tokens the tests put in
// GENESIS_TEST_TOKEN_A and _B.
func testFleet() *schema.Fleet {
	f := testkit.Fleet()
	f.Spec.Accounts = []schema.Account{
		{Name: "acct-a", Regions: []string{"nyc3"}, MaxDroplets: 50, TokenEnv: "GENESIS_TEST_TOKEN_A"},
		{Name: "acct-b", Regions: []string{"nyc3"}, MaxDroplets: 50, TokenEnv: "GENESIS_TEST_TOKEN_B"},
	}
	f.Spec.Safety.MaxDestroyPerRun = 5
	f.Spec.Sizes = map[string]schema.Size{"s-1vcpu-1gb": {MonthlyUSD: 6}}
	return f
}

// tenant is a pro tenant in nyc3, in state.
func tenant(id string, state schema.State) *schema.Tenant {
	t := testkit.Tenant(id, "nyc3")
	t.Spec.State = state
	return t
}

type world struct {
	t     *testing.T
	state *testkit.StateRepo
	repo  string
	db    string
	sim   *dosimtest.Server
}

func newWorld(t *testing.T, tenantsN int, boot time.Duration) *world {
	repo := testkit.NewStateRepo(t)
	w := &world{t: t, state: repo, repo: repo.Dir, db: pgtest.New(t)}
	os.MkdirAll(filepath.Join(w.repo, "tenants"), 0o755)
	os.WriteFile(filepath.Join(w.repo, "genesis.yaml"), []byte(testkit.FleetYAML(testFleet())), 0o644)
	for i := range tenantsN {
		id := fmt.Sprintf("ws-%03d", i)
		os.WriteFile(filepath.Join(w.repo, "tenants", id+".yaml"), []byte(testkit.TenantYAML(tenant(id, schema.StateRunning))), 0o644)
	}
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "fleet")
	w.sim = dosimtest.Start(t, dosim.Config{
		Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 100}, {Name: "acct-b", Token: "tok-b", DropletLimit: 100}},
		Limits:   dosim.Limits{BootDelay: dosim.Duration(boot)},
	})
	return w
}

// proc is a running genesis-reconciler.
type proc struct {
	cmd  *exec.Cmd
	url  string
	logs *syncio.Buffer
}

func (w *world) start(extra ...string) *proc {
	w.t.Helper()
	addr := testkit.FreeAddr(w.t)
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

// getFleet is GET /v1/fleet of a reconciler run with --insecure-no-auth.
func getFleet(t *testing.T, url string) (api.Fleet, error) {
	return client.New(url, "", nil).Fleet(t.Context())
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
	testkit.WaitFor(t, "the first droplets to be created", func() bool { return len(w.dropletsByName()) >= 3 })
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
	before := len(w.dropletsByName())
	p2 := w.start()
	testkit.WaitFor(t, "all tenants to boot after the restart", func() bool { return allInitialized(t, p2.url, n) })
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
	testkit.WaitFor(t, "the first replica to converge", func() bool { return allInitialized(t, a.url, 2) })
	b := w.start()
	docA, _ := getFleet(t, a.url)
	docB, _ := getFleet(t, b.url)
	if !docA.Leader || docB.Leader {
		t.Fatalf("leaders: a=%v b=%v, want a only", docA.Leader, docB.Leader)
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	os.WriteFile(filepath.Join(w.repo, "tenants", "ws-new.yaml"), []byte(testkit.TenantYAML(tenant("ws-new", schema.StateRunning))), 0o644)
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "onboard ws-new")
	testkit.WaitFor(t, "the second replica to lead and onboard ws-new", func() bool {
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
	testkit.WaitFor(t, "readiness", func() bool {
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
	os.WriteFile(filepath.Join(w.repo, "tenants", "ws-hook.yaml"), []byte(testkit.TenantYAML(tenant("ws-hook", schema.StateRunning))), 0o644)
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "onboard ws-hook")
	if got := post(tenants.Sign([]byte("s3cret"), body)); got != 202 {
		t.Errorf("signed hook: %d, want 202", got)
	}
	testkit.WaitFor(t, "the hook's commit to reach the simulator", func() bool { return w.dropletsByName()["genesis-ws-hook-1"] == 1 })
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
		{[]string{"--database-url", "postgres://x", "--state-dir", "x", "--insecure-no-auth", "--role", "leader"}, 2, `--role: want full or serve, got "leader"`},
		{[]string{"--database-url", "postgres://x", "--state-dir", "x", "--insecure-no-auth", "--debug-listen", "6060"}, 2, `--debug-listen "6060": want host:port`},
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

// TestFlagDefaultsAreServiceDefaults: with no flag and no environment, the
// flags give service.Defaults() (what localfleet and genesis-load start
// from), field for field where Defaults sets one.
func TestFlagDefaultsAreServiceDefaults(t *testing.T) {
	c, err := parseFlags([]string{"--database-url", "postgres://x", "--state-dir", "x", "--insecure-no-auth"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	d := service.Defaults()
	got := c.Config
	got.DatabaseURL, got.StateDir, got.InsecureNoAuth = "", "", false
	got.ReplicaID, got.Listen, got.CacheDir, got.GitUser, got.GitToken = "", "", "", "", ""
	d.Listen, d.CacheDir = "", ""
	// Two defaults are the flags' own: DigitalOcean's public API (callers
	// of New pass the simulator's) and 5 × --resync, derived after parsing.
	got.DOAPIURL, got.ObservedMaxAge = "", 0
	if diff := cmp.Diff(d, got, cmpopts.IgnoreFields(service.Config{}, "Getenv")); diff != "" {
		t.Errorf("flag defaults differ from service.Defaults() (-defaults +flags):\n%s", diff)
	}
}
