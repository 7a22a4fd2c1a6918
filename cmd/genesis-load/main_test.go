package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/loadstate"
)

// TestMain lets the test binary act as `genesis-load serve` when a
// subprocess run re-executes it.
func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) == "1" {
		os.Exit(cliexit.Status("genesis-load", cliexit.Runner(run), os.Args[1:]))
	}
	os.Exit(m.Run())
}

func noenv(string) string { return "" }

// runTool runs the command and returns its stdout, stderr and error.
func runTool(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	err := run(ctx, args, noenv, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"heartbeat", "--help"}} {
		_, stderr, err := runTool(t, args...)
		if !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%v: err = %v, want flag.ErrHelp", args, err)
		}
		for _, want := range []string{"Usage: genesis-load SCENARIO", "heartbeat", "longpoll", "converge", "http304", "scale", "gobench", "-agents", "-speedup", "-reconciler", "-markdown", "-json", "-replicas", "-agent-procs", "-sources", "-heartbeat-rate", "-time-limit"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v: help lacks %q:\n%s", args, want, stderr)
			}
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "a scenario is required"},
		{[]string{"stampede"}, `unknown scenario "stampede"`},
		{[]string{"heartbeat", "--agents", "-3"}, "--agents must be between"},
		{[]string{"heartbeat", "--speedup", "0"}, "--speedup must be"},
		{[]string{"heartbeat", "--credentials", "9"}, "--credentials must be between"},
		{[]string{"heartbeat", "--server", "cloud"}, "--server must be subprocess or inproc"},
		{[]string{"heartbeat", "extra"}, "unexpected arguments"},
		{[]string{"longpoll", "--reconciler", "http://127.0.0.1:8080", "--database-url", "postgres://127.0.0.1/x"}, "longpoll needs a reconciler the load tool starts"},
		{[]string{"http304", "--reconciler", "http://127.0.0.1:8080", "--database-url", "postgres://127.0.0.1/x"}, "http304 needs a reconciler the load tool starts"},
		{[]string{"heartbeat", "--reconciler", "http://127.0.0.1:8080"}, "--reconciler needs --database-url"},
	} {
		_, _, err := runTool(t, tc.args...)
		if !cliexit.IsUsage(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}
}

func TestRefusesNonLoopbackTargets(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string // "" = accepted
	}{
		{"private address", []string{"--reconciler", "http://10.0.0.7:8080", "--database-url", "postgres://127.0.0.1/x"}, `"10.0.0.7" is not a loopback address`},
		{"public name", []string{"--reconciler", "https://fleet.example.com", "--database-url", "postgres://127.0.0.1/x"}, `"fleet.example.com" is not a loopback address`},
		{"any address", []string{"--reconciler", "http://0.0.0.0:8080", "--database-url", "postgres://127.0.0.1/x"}, `"0.0.0.0" is not a loopback address`},
		{"no host", []string{"--reconciler", "127.0.0.1:8080", "--database-url", "postgres://127.0.0.1/x"}, "not a URL with a host"},
		{"remote database", []string{"--reconciler", "http://127.0.0.1:8080", "--database-url", "postgres://u:p@db.example.com:5432/genesis"}, `--database-url: "db.example.com" is not a loopback address`},
		{"loopback v4", []string{"--reconciler", "http://127.0.0.1:8080", "--database-url", "postgres://127.0.0.1/x"}, ""},
		{"loopback v6", []string{"--reconciler", "http://[::1]:8080", "--database-url", "postgres://localhost/x"}, ""},
		{"localhost", []string{"--reconciler", "http://localhost:8080", "--database-url", "postgres://127.0.0.2:5432/x"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(append([]string{"heartbeat"}, tc.args...), noenv, &bytes.Buffer{})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !cliexit.IsUsage(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a usage error containing %q", err, tc.want)
			}
		})
	}
	// The environment's target is checked the same way.
	_, err := parseFlags([]string{"heartbeat"}, func(k string) string {
		return map[string]string{"GENESIS_LOAD_RECONCILER": "http://192.0.2.1/", "DATABASE_URL": "postgres://127.0.0.1/x"}[k]
	}, &bytes.Buffer{})
	if !cliexit.IsUsage(err) {
		t.Fatalf("GENESIS_LOAD_RECONCILER=192.0.2.1: err = %v, want a usage error", err)
	}
}

// decodeReport runs a scenario with --json and decodes its report.
func decodeReport(t *testing.T, args ...string) report {
	t.Helper()
	stdout, stderr, err := runTool(t, append(args, "--json")...)
	if err != nil {
		t.Fatalf("%v: %v\nstderr:\n%s\nstdout:\n%s", args, err, stderr, stdout)
	}
	var rep report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, stdout)
	}
	if len(rep.Inconsistent) > 0 {
		t.Fatalf("inconsistent: %v", rep.Inconsistent)
	}
	return rep
}

// wantCounts checks the counts named in want, and only those.
func wantCounts(t *testing.T, counts, want map[string]int64) {
	t.Helper()
	got := map[string]int64{}
	for k := range want {
		got[k] = counts[k]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counts (-want +got):\n%s", diff)
	}
}

func figureOf(t *testing.T, rep report, prefix string) figure {
	t.Helper()
	for _, f := range rep.Figures {
		if strings.HasPrefix(f.Measure, prefix) {
			return f
		}
	}
	t.Fatalf("no figure %q in %+v", prefix, rep.Figures)
	return figure{}
}

// TestHeartbeatTinyRun: 20 agents heartbeating for a few seconds against
// the reconciler subprocess; every count must agree, end to end.
func TestHeartbeatTinyRun(t *testing.T) {
	md := filepath.Join(t.TempDir(), "results.md")
	rep := decodeReport(t, "heartbeat", "--agents", "20", "--duration", "3s", "--speedup", "60", "--markdown", md)
	c := rep.Counts
	if c["sent"] < 20 {
		t.Errorf("sent %d heartbeats, want at least one per agent", c["sent"])
	}
	want := map[string]int64{"accepted (202)": c["sent"], "rejected (4xx/5xx)": 0, "network errors": 0, "server queued": c["sent"],
		"server written": c["sent"], "server dropped": 0, "server replays": 0, "server queue full (503)": 0}
	wantCounts(t, c, want)
	// Each agent's seqs run 1..k: their last ones sum to what Postgres holds.
	if c["sum of recorded seqs"] != c["sent"] {
		t.Errorf("sum of recorded seqs = %d, want %d (one per heartbeat sent)", c["sum of recorded seqs"], c["sent"])
	}
	f := figureOf(t, rep, "heartbeat ingest")
	if f.Value <= 0 || f.BaselineValue <= 0 || f.Ratio <= 0 {
		t.Errorf("ingest figure %+v: want positive value, baseline and ratio", f)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "| heartbeat | heartbeat ingest, end to end |") {
		t.Errorf("results file lacks the heartbeat row:\n%s", b)
	}
}

// TestHeartbeatAgainstRunningReconciler targets a reconciler started
// beforehand (--reconciler, --database-url): tokens are minted through its
// database and every heartbeat is written.
func TestHeartbeatAgainstRunningReconciler(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	repo, err := newStateRepo(t.Context(), dir, loadstate.Fleet(1, 0, id.Recipient().String()), id.Recipient(), 0, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := writeKeys(dir, repo.dir, id, key)
	if err != nil {
		t.Fatal(err)
	}
	cfg.WebhookSecret = "s"
	ctx, cancel := context.WithCancel(t.Context())
	ready := make(chan serverInfo, 1)
	done := make(chan error, 1)
	go func() {
		done <- serveFleet(ctx, cfg, slog.New(slog.DiscardHandler), func(i serverInfo) { ready <- i })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serveFleet: %v", err)
		}
	})
	var info serverInfo
	select {
	case info = <-ready:
	case err := <-done:
		t.Fatalf("serveFleet: %v", err)
	}
	rep := decodeReport(t, "heartbeat", "--agents", "10", "--duration", "2s", "--reconciler", info.URL, "--database-url", info.DatabaseURL)
	if c := rep.Counts; c["sent"] < 10 || c["server written"] != c["sent"] || c["sum of recorded seqs"] != c["sent"] {
		t.Errorf("counts %v: want every heartbeat sent written", c)
	}
}

// TestConvergeTinyRun: 20 agents in this process's reconciler; every one
// verifies the new manifest and fleet_status records it applied.
func TestConvergeTinyRun(t *testing.T) {
	rep := decodeReport(t, "converge", "--agents", "20", "--server", "inproc", "--duration", "60s")
	want := map[string]int64{"agents": 20, "long-polls parked (server gauge)": 20, "new manifest received": 20, "verification failures": 0,
		"heartbeat failures": 0, "applied as recorded in fleet_status": 20, "manifests stored for the commit": 20}
	wantCounts(t, rep.Counts, want)
	p99 := figureOf(t, rep, "commit → applied p99")
	p50 := figureOf(t, rep, "commit → applied p50")
	if p50.Value <= 0 || p99.Value < p50.Value {
		t.Errorf("p50 %v ms, p99 %v ms: want 0 < p50 ≤ p99", p50.Value, p99.Value)
	}
}

// TestLongpollTinyRun: 20 agents parked on the reconciler subprocess all get
// the new manifest, and its RSS is measured.
func TestLongpollTinyRun(t *testing.T) {
	rep := decodeReport(t, "longpoll", "--agents", "20", "--duration", "60s")
	want := map[string]int64{"agents": 20, "long-polls parked (server gauge)": 20, "new manifest received": 20,
		"not received within the bound": 0, "manifests stored for the commit": 20}
	wantCounts(t, rep.Counts, want)
	if f := figureOf(t, rep, "RSS with 20 long-polls parked"); f.Value <= 0 || f.BaselineValue <= 0 {
		t.Errorf("RSS figure %+v: want positive values", f)
	}
}

// TestHTTP304TinyRun uses the Go load generator (wrk may be missing): every
// answer is a 304 on both sides.
func TestHTTP304TinyRun(t *testing.T) {
	rep := decodeReport(t, "http304", "--agents", "5", "--duration", "1s", "--connections", "4", "--wrk", "off", "--server", "inproc")
	if rep.Counts["manifest requests (median round)"] == 0 || rep.Counts["bare requests (median round)"] == 0 {
		t.Errorf("counts %v: want requests on both sides", rep.Counts)
	}
	f := figureOf(t, rep, "manifest 304 throughput (go)")
	if f.Ratio <= 0 {
		t.Errorf("figure %+v: want a ratio", f)
	}
}

// TestScaleTinyRun: 40 agents over 2 agent processes and 3 replicas on one
// Postgres: every long-poll parks, every agent gets the template change,
// and every heartbeat sent is written by one of the replicas.
func TestScaleTinyRun(t *testing.T) {
	bin := buildReconciler(t)
	rep := decodeReport(t, "scale", "--agents", "40", "--replicas", "3", "--agent-procs", "2", "--sources", "2",
		"--credentials", "1", "--duration", "3s", "--heartbeat-rate", "40", "--connections", "16", "--time-limit", "170s",
		"--replica-memory-limit", "512MiB", "--edit-phase", "--account-droplets", "15", "--reconciler-bin", bin)
	if !strings.HasSuffix(rep.Command, " --replica-memory-limit 512MiB --edit-phase") {
		t.Errorf("command %q does not say the replicas' memory limit and the edit phase", rep.Command)
	}
	c := rep.Counts
	want := map[string]int64{"long-polls parked": 40, "agents with the new manifest": 40,
		"agents with the edited tenants' manifest": 40, "manifests stored for the edit": 40,
		"heartbeats rejected (4xx/5xx)": 0, "heartbeat network errors": 0, "heartbeats dropped (replicas)": 0,
		"update_manifest operations succeeded for the edit": 40}
	wantCounts(t, c, want)
	// Exactly one per agent: only the leader renders (followers swept the
	// whole fleet at start once, and raced it: 42 were seen for 40).
	if c["manifests stored for the commit"] != 40 {
		t.Errorf("%d manifests stored for the commit, want one per agent", c["manifests stored for the commit"])
	}
	// The leader observed the simulator (droplets, snapshots, the rate
	// budget) and found nothing to change.
	// The edit phase's commit changes every tenant's hash: one
	// update_manifest each, and nothing else.
	if c["DigitalOcean reads (the leader's observations)"] == 0 || c["DigitalOcean writes"] != 0 || c["operations the leader journaled"] != c["update_manifest operations (the edit)"] {
		t.Errorf("DigitalOcean: %d reads, %d writes, %d operations; want the leader's observations, no write and no operation",
			c["DigitalOcean reads (the leader's observations)"], c["DigitalOcean writes"], c["operations the leader journaled"])
	}
	if c["heartbeats sent"] < 40 || c["heartbeats written (replicas)"] != c["heartbeats sent"] {
		t.Errorf("heartbeats: sent %d, written %d: want at least one per agent, all written", c["heartbeats sent"], c["heartbeats written (replicas)"])
	}
	if f := figureOf(t, rep, "fleet-wide template change → all 40 agents"); f.Value <= 0 || f.BaselineValue <= 0 {
		t.Errorf("fan-out figure %+v: want a value and a baseline", f)
	}
	if f := figureOf(t, rep, "a commit editing every tenant file → all 40 agents"); f.Value <= 0 || f.BaselineValue <= 0 || !strings.Contains(f.Note, "40 of 40 agents") {
		t.Errorf("edit figure %+v: want a value, a baseline and every agent", f)
	}
	// Three accounts of 15 droplets (the last holds 10), each listed by
	// the leader with its own token: the edit's 40 hashes recorded.
	if f := figureOf(t, rep, "a commit editing every tenant file → the leader has recorded all 40 tenants' new hash"); f.Value <= 0 || f.Verdict != "" || !strings.Contains(f.Note, "40 of 40 succeeded") || !strings.Contains(f.Note, "3 DigitalOcean accounts of 15 droplets") {
		t.Errorf("journal figure %+v: want every tenant's update_manifest over 3 accounts", f)
	}
	if f := figureOf(t, rep, "a commit editing every tenant file: largest replica's peak RSS"); f.Value <= 0 || f.Value < f.BaselineValue || !strings.HasPrefix(f.Note, "peak RSS (VmHWM, reset through") {
		t.Errorf("edit peak figure %+v: want a peak no lower than the RSS at the commit, measured from the commit", f)
	}
	if f := figureOf(t, rep, "40 agents parked across 3 replicas"); f.Value <= 0 || f.BaselineValue <= 0 || !strings.Contains(f.Note, "every replica is the genesis-reconciler binary, r0 --role full") {
		t.Errorf("RSS figure %+v: want positive values, and a note saying which replicas are the genesis-reconciler binary", f)
	} else {
		// Agent i talks to replica i mod 3: each holds 13 or 14 polls.
		for _, want := range []string{"r0 14 parked", "r1 13 parked", "r2 13 parked"} {
			if !strings.Contains(f.Note, want) {
				t.Errorf("RSS figure's note lacks %q: %s", want, f.Note)
			}
		}
		// Each replica's runtime says where its memory is.
		if n := strings.Count(f.Note, "goroutine stacks"); n != 3 || !strings.Contains(f.Note, "heap in use") {
			t.Errorf("RSS figure's note gives the Go memory of %d replicas, want 3: %s", n, f.Note)
		}
	}
}

// buildReconciler builds genesis-reconciler, the binary a scale run's
// replicas are.
func buildReconciler(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "genesis-reconciler")
	if out, err := exec.Command("go", "build", "-o", bin, "genesis.dev/fleet/cmd/genesis-reconciler").CombinedOutput(); err != nil {
		t.Fatalf("build genesis-reconciler: %v\n%s", err, out)
	}
	return bin
}

// TestScaleTinyRunTLS: with --tls the replicas serve TLS and every agent
// speaks HTTP/2 over a connection of its own (no response over HTTP/1.x),
// parks, gets the template change and heartbeats as without it; the
// figures go under their own scenario, so a TLS run and a plain one keep
// their rows side by side in bench/results.md.
func TestScaleTinyRunTLS(t *testing.T) {
	bin := buildReconciler(t)
	rep := decodeReport(t, "scale", "--tls", "--agents", "12", "--replicas", "2", "--agent-procs", "2", "--sources", "2",
		"--credentials", "1", "--duration", "2s", "--heartbeat-rate", "12", "--connections", "8", "--time-limit", "150s",
		"--account-droplets", "15", "--reconciler-bin", bin)
	if rep.Scenario != "scale-tls" || !strings.HasSuffix(rep.Command, " --tls") {
		t.Errorf("scenario %q, command %q: want scale-tls and the command saying --tls", rep.Scenario, rep.Command)
	}
	c := rep.Counts
	want := map[string]int64{"long-polls parked": 12, "agents with the new manifest": 12, "heartbeat network errors": 0,
		"heartbeats rejected (4xx/5xx)": 0, "agent responses over HTTP/1.x (enrolment and first manifest)": 0,
		"agent responses over HTTP/1.x (the whole run)": 0}
	wantCounts(t, c, want)
	// Each agent fetched its first manifest over HTTP/2; later, its new
	// manifest and every heartbeat came the same way.
	if h2, h2all, sent := c["agent responses over HTTP/2 (enrolment and first manifest)"], c["agent responses over HTTP/2 (the whole run)"], c["heartbeats sent"]; h2 < 12 || h2all < h2+12+sent || sent < 12 {
		t.Errorf("HTTP/2 responses: %d at enrolment, %d in all with %d heartbeats sent; want one first manifest, one new manifest and every heartbeat per agent", h2, h2all, sent)
	}
	if c["heartbeats written (replicas)"] != c["heartbeats sent"] {
		t.Errorf("heartbeats: sent %d, written %d", c["heartbeats sent"], c["heartbeats written (replicas)"])
	}
	if f := figureOf(t, rep, "12 agents parked across 2 replicas"); f.Value <= 0 || !strings.Contains(f.Note, "agents over TLS with HTTP/2 offered") {
		t.Errorf("RSS figure %+v: want a value and a note naming the transport", f)
	}
}

func TestScaleUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"scale", "--replicas", "0"}, "--replicas must be between"},
		{[]string{"scale", "--sources", "0"}, "--sources must be between"},
		{[]string{"scale", "--heartbeat-rate", "0"}, "--heartbeat-rate must be"},
		{[]string{"scale", "--time-limit", "0s"}, "--time-limit must be positive"},
		{[]string{"scale", "--replica-memory-limit", "lots"}, `--replica-memory-limit "lots": want a GOMEMLIMIT value`},
		{[]string{"scale", "--reconciler", "http://127.0.0.1:8080", "--database-url", "postgres://127.0.0.1/x"}, "scale starts its own replicas"},
		{[]string{"longpoll", "--tls"}, "--tls is for the scale scenario"},
	} {
		_, _, err := runTool(t, tc.args...)
		if !cliexit.IsUsage(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want a usage error containing %q", tc.args, err, tc.want)
		}
	}
	c, err := parseFlags([]string{"scale", "--agents", "100000"}, noenv, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.agentProcs != 7 || c.agents/c.agentProcs >= 20_000 || c.duration != 30*time.Second {
		t.Errorf("100,000 agents: %d agent processes, heartbeat phase %s: want 7 (each under 20,000 open files), 30s", c.agentProcs, c.duration)
	}
}

// TestImportAll: importAll commits every tenant's next round onto the
// branch, as changeAll would, without the work tree; a commit through the
// work tree afterwards is refused rather than undoing it.
func TestImportAll(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	repo, err := newStateRepo(ctx, t.TempDir(), loadstate.Fleet(3, 0, id.Recipient().String()), id.Recipient(), 3, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := repo.head(ctx)
	if err := repo.importAll(ctx, 1); err != nil {
		t.Fatal(err)
	}
	after, _ := repo.head(ctx)
	if parent, err := repo.gitOut(ctx, "rev-parse", "HEAD^"); err != nil || strings.TrimSpace(parent) != before || after == before {
		t.Fatalf("head %s, its parent %q (%v); want a new commit on %s", after, parent, err, before)
	}
	for i := range 3 {
		got, err := repo.gitOut(ctx, "show", "HEAD:tenants/"+tenantID(i)+".yaml")
		if err != nil || got != string(repo.tenantFile(i, 1)) {
			t.Errorf("tenant %d at HEAD (%v):\n%s\nwant round 1:\n%s", i, err, got, repo.tenantFile(i, 1))
		}
	}
	if n, _ := repo.gitOut(ctx, "diff", "--name-only", "HEAD^", "HEAD"); len(strings.Fields(n)) != 3 {
		t.Errorf("changed files %q, want the 3 tenants", n)
	}
	if err := repo.changeTemplate(ctx, 2); err == nil || !strings.Contains(err.Error(), "behind its branch") {
		t.Errorf("a commit through the stale work tree: %v, want it refused", err)
	}
}

// TestFannedNoteSaysWhenPeakNotReset: a kernel that refuses the VmHWM
// reset leaves each replica's lifetime peak; the figure must say so
// rather than pass it off as the phase's.
func TestFannedNoteSaysWhenPeakNotReset(t *testing.T) {
	o := fanned{before: []int64{100 << 20}, peaks: []int64{300 << 20}, resetErr: errors.New("permission denied")}
	for _, s := range []string{o.peakSince(), o.note(1, 1000)} {
		if !strings.Contains(s, "NOT since the commit (resetting it failed: permission denied)") {
			t.Errorf("note %q does not say the peak is not the phase's", s)
		}
	}
	o.resetErr = nil
	if s := o.note(1, 1000); strings.Contains(s, "NOT since") || !strings.Contains(s, "r0 100 → 300 MiB") {
		t.Errorf("note %q: want the phase's peak per replica", s)
	}
}
