package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"filippo.io/age"

	"genesis.dev/fleet/internal/acmetest"
	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/s3server/s3test"
	"genesis.dev/fleet/localfleet"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
)

// cli runs genesis-demo in-process and returns its exit status and output.
func cli(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := program.Run(context.Background(), args, cliexit.Env{Getenv: func(string) string { return "" }, Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb})
	return cliexit.Code("genesis-demo", err, &errb), out.String(), errb.String()
}

// badTenant is invalid at line 5, column 10 (state: sleeping).
const badTenant = `apiVersion: genesis.dev/v1
kind: Tenant
metadata: {id: ws-bad, name: Bad, tier: pro}
spec:
  state: sleeping
  droplet: {region: nyc3}
`

// TestHelp: every command answers --help on stdout with status 0.
func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"run", "--help"}, {"droplet", "--help"}, {"devdb", "--help"}} {
		code, out, errOut := cli(t, "", args...)
		if code != 0 || !strings.Contains(out, "Usage") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	if code, _, errOut := cli(t, "", "bogus"); code != 2 || !strings.Contains(errOut, `unknown command "bogus"`) {
		t.Errorf("bogus: exit %d, stderr %q", code, errOut)
	}
}

// TestDemoOnce is the end-to-end test: the whole demo as make demo
// DEMO_ARGS=--once runs it, with Postgres, the simulator and the reconciler
// of the local fleet, git, and a real genesis-agent on every simulated
// droplet, at short delays.
// Then every process's log is scanned for credential plaintext and secrets.
func TestDemoOnce(t *testing.T) {
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", ".", "../genesis-agent")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	caddyBin := buildCaddy(t)
	work := t.TempDir()
	code, out, errOut := cli(t, "", "run", "--state", "../../state-example", "--bin", bin, "--caddy", caddyBin, "--weed", s3test.Bin(t), "--pebble", acmetest.Binary(t), "--once",
		"--boot-delay", "300ms", "--action-delay", "200ms", "--heartbeat", "1s", "--workdir", work)
	if code != 0 {
		logs, _ := exec.Command("sh", "-c", "tail -n 30 "+work+"/*.log").CombinedOutput()
		t.Fatalf("demo --once: exit %d\n%s\n%s\n%s", code, out, errOut, logs)
	}
	for _, want := range []string{
		"ws-acme", "$60.00", // the declared fleet and its cost
		"all 5 running tenants ACTIVE_HEALTHY",
		"step 1 done", "step 2 done", "step 3 done", "step 4 done", "step 5 done", "step 6 done", "step 7 done", "step 8 done", "step 9 done",
		"step 10 done", "step 11 done", "step 12 done",
		// Stable names: a click on a hibernated tenant's link wakes it.
		"stable names: zone t.genesis.example served over DNS at 127.0.0.1:", "certificates from Pebble (ACME)",
		"track.demo-inc.example → ws-demo.t.genesis.example → [127.0.9.1] (the activator)",
		"/healthz → 200 OK", "held by the activator while ws-demo woke", "track.demo-inc.example now → [127.1.",
		// A broken n8n release stopped at the canary and undone there,
		// then the fix through every wave.
		"paused: wave canary: 1 of 1 droplets failed (budget 0): ", "the agent rejected the change: n8n 1.123.82-broken",
		"is back on n8n 1.123.81 with its database restored; the other 2 waves released nobody",
		"n8n 1.123.81 -> 1.123.82", "reports n8n 1.123.82, a tenant pinning its own version kept it",
		// Backups: declared, taken, and a broken droplet rebuilt from one.
		"backups declared (genesis.yaml spec.backup)", "its n8n database had", "rebuilt as genesis-ws-", "the new droplet restored backup b-",
		"was retired: stopped, snapshotted",
		"HIBERNATING → HIBERNATED", "→ DESTROYED",
		// Never created: nothing to do, not PENDING; a removed file's row.
		"ws-hooli     hibernated  NOT_CREATED", "ws-soylent   absent      NOT_CREATED", "ws-stark     undeclared  ORPHANED",
		// The live progress line (plain lines: stdout is not a terminal).
		"manifests applied 5/5 | heartbeats last minute:",
		// Change a domain: the old one reached n8n through Caddy before,
		// the new one does after, the old one no longer.
		"before: https://track.acme.com via Caddy 127.1.", "→ 200 from n8n (its public settings)",
		"after:  https://new-track.acme.com via Caddy 127.1.", "(domain routed: true)", "(domain routed: false)",
		// Kill an agent: its heartbeats stop.
		"killed genesis-agent (pid ", "ACTIVE_CRITICAL  after", "ACTIVE_HEALTHY   after", "the watchdog rebooted droplet",
		// Wake through the API: a commit by the token's name, correlated.
		"PATCH /v1/tenants/ws-demo", "by demo-dashboard, correlation id demo-wake-1",
		"orphan: ws-stark genesis-ws-stark-1",
		"/v1/fleet", "/metrics",
		"processes the demo and its droplets started are gone",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	// The wake leaves HIBERNATED for WAKING, or for BOOTING when the poll
	// misses a short WAKING (the droplet is made within the wake's first
	// second).
	if !strings.Contains(out, "HIBERNATED → WAKING") && !strings.Contains(out, "HIBERNATED → BOOTING") {
		t.Errorf("demo output lacks HIBERNATED → WAKING or BOOTING:\n%s", out)
	}
	logs := ""
	for _, name := range []string{"genesis-dosim.log", "genesis-reconciler.log"} {
		b, err := os.ReadFile(filepath.Join(work, name))
		if err != nil {
			t.Fatal(err)
		}
		logs += string(b)
	}
	// The API wake's correlation id follows the change through the
	// reconciler: the plan, the wake action, the manifest and the
	// heartbeat reporting it applied.
	for _, want := range []string{`"msg":"plan computed"`, `"msg":"action started"`, `"msg":"manifest issued"`, `"msg":"manifest applied"`} {
		found := false
		for _, line := range strings.Split(logs, "\n") {
			found = found || (strings.Contains(line, want) && strings.Contains(line, `"correlation_id":"demo-wake-1"`))
		}
		if !found {
			t.Errorf("no %s log line with correlation_id demo-wake-1", want)
		}
	}
	// Every droplet ran droplet-sim with Caddy and a converging agent:
	// credentials created in n8n (opened with the droplet's identity),
	// workflows activated, Caddy configs loaded.
	for _, want := range []string{`"component":"droplet-sim"`, `"msg":"droplet up"`, `"msg":"admin endpoint started"`,
		`"msg":"n8n credential created"`, `"msg":"n8n workflow activated"`, `"msg":"manifest converged"`, `"msg":"agent exited; n8n and caddy keep running"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the logs lack %s", want)
		}
	}
	// No process the demo or a droplet started is left (the demo checks
	// it too; this checks the demo's check).
	pids, err := os.ReadFile(filepath.Join(work, "pids.log"))
	if err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(pids)), "\n") {
		var pid int
		var role string
		if _, err := fmt.Sscanf(line, "%d %s", &pid, &role); err != nil {
			t.Fatalf("pids.log line %q: %v", line, err)
		}
		roles[role]++
		if !localfleet.ProcessGone(pid) {
			t.Errorf("process %q still runs after the demo", line)
		}
	}
	// 6 droplets of state-example's 5 running tenants and ws-demo, plus
	// ws-demo's droplet after its wake: 7 boots at least. The simulator and
	// the reconciler run in the demo's process (package localfleet).
	// The broken droplet's boots (the watchdog's reboot and power cycle)
	// start droplet-sim, which refuses to start anything.
	broken := strings.Count(logs, `"msg":"droplet broken: its disk refuses to boot"`)
	if broken < 2 || roles["genesis-dosim"] != 0 || roles["genesis-reconciler"] != 0 || roles["droplet-sim"] < 7 ||
		roles["caddy"] != roles["droplet-sim"]-broken || roles["agent"] != roles["caddy"] {
		t.Errorf("processes started by role: %v (%d boots of the broken droplet)", roles, broken)
	}
	// The woken droplet's agent enrolled again with the identity its disk
	// kept through the snapshot.
	var recipients []string
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, `"msg":"enrolled"`) && strings.Contains(line, `"workspace":"ws-demo"`) {
			var l struct {
				Recipient string `json:"age_recipient"`
			}
			json.Unmarshal([]byte(line), &l)
			recipients = append(recipients, l.Recipient)
		}
	}
	// Three: created, woken through the API, woken by a click.
	if len(recipients) != 3 || recipients[0] != recipients[1] || recipients[1] != recipients[2] || recipients[0] == "" {
		t.Errorf("ws-demo enrollments (created, woken by the API, woken by a click) = %q; want three with one identity", recipients)
	}
	// No credential plaintext, signing key or token in any log: the API
	// token and every droplet's one-time provisioning token (from the
	// user data the simulator kept) are looked for too.
	secrets := demoSecrets(t)
	apiToken, err := os.ReadFile(filepath.Join(work, "api-token"))
	if err != nil || len(strings.TrimSpace(string(apiToken))) < 20 {
		t.Fatalf("the demo's API token: %q, %v", apiToken, err)
	}
	secrets = append(secrets, strings.TrimSpace(string(apiToken)))
	provisioning := provisioningTokens(t, work)
	if len(provisioning) < 6 {
		t.Errorf("found %d provisioning tokens in the droplets' user data, want one per droplet (6+)", len(provisioning))
	}
	secrets = append(secrets, provisioning...)
	for _, secret := range secrets {
		if strings.Contains(logs, secret) {
			t.Errorf("a log holds the secret %q", secret)
		}
	}
	if strings.Contains(logs, "PRIVATE KEY") || strings.Contains(logs, "AGE-SECRET-KEY") {
		t.Errorf("a log holds a private key")
	}
	bad := t.TempDir()
	if err := copyTree("../../schema/testdata/context", bad); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(bad, "tenants"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "tenants", "ws-bad.yaml"), []byte(badTenant), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := cli(t, "", "--state", bad, "--bin", bin); code != 1 || !strings.Contains(errOut, "ws-bad.yaml:5:10") {
		t.Errorf("demo on an invalid repo: exit %d, stderr %q", code, errOut)
	}
}

// provisioningTokens returns the one-time enrollment tokens in the user
// data every droplet-sim kept on its droplet's disk (a woken droplet's
// disk holds the latest).
func provisioningTokens(t *testing.T, work string) []string {
	t.Helper()
	re := regexp.MustCompile(`token\\?"\s*:\s*\\?"([A-Za-z0-9_.~-]{16,})`)
	var out []string
	filepath.WalkDir(work, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "user-data.txt" {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, m := range re.FindAllSubmatch(b, -1) {
			out = append(out, string(m[1]))
		}
		return nil
	})
	return out
}

// buildCaddy returns the pinned Caddy, building it when missing
// (scripts/build-caddy prints its path).
func buildCaddy(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("../../scripts/build-caddy").Output()
	if err != nil {
		t.Fatalf("scripts/build-caddy: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// demoSecrets opens every sealed credential of state-example with its demo
// key and returns the string values inside.
func demoSecrets(t *testing.T) []string {
	t.Helper()
	keyData, err := os.ReadFile("../../state-example/demo-keys/age.key")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(keyData))
	if err != nil {
		t.Fatal(err)
	}
	repo := schema.LoadDir(os.DirFS("../../state-example"))
	var out []string
	for _, id := range repo.IDs() {
		for _, c := range repo.Tenants[id].Spec.Credentials {
			plain, err := sealing.Decrypt(c.Sealed, ids...)
			if err != nil {
				t.Fatalf("%s/%s: %v", id, c.Name, err)
			}
			var data map[string]any
			if err := json.Unmarshal(plain, &data); err != nil {
				t.Fatalf("%s/%s: %v", id, c.Name, err)
			}
			for _, v := range data {
				if s, ok := v.(string); ok && len(s) >= 8 {
					out = append(out, s)
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("no secrets found in state-example to look for")
	}
	return out
}
