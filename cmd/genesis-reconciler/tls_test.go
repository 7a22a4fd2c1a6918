package main

import (
	"crypto/tls"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/certreload/certtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// TestTLSWithAgents runs the real reconciler with --tls-cert/--tls-key (a
// self-signed certificate made here) and, on the simulated droplet, the
// real genesis-agent without --insecure-http, trusting the test CA through
// SSL_CERT_FILE: /healthz answers over HTTPS, a plain HTTP request gets no
// API, the default public URL in user data is https, the agent enrolls and
// applies its manifest over TLS, and a new pair renamed over the files is
// served without a restart.
func TestTLSWithAgents(t *testing.T) {
	agentBin := agentBinary(t)
	keys, fleetID := fleetKeys(t)
	cert := certtest.New(t, keys, "reconciler")

	repo := testkit.NewStateRepo(t)
	w := &world{t: t, state: repo, repo: repo.Dir, db: pgtest.New(t)}
	f := testFleet()
	f.Spec.Recipients = []string{fleetID.Recipient().String()}
	fleet := testkit.FleetYAML(f)
	os.WriteFile(filepath.Join(w.repo, "genesis.yaml"), []byte(fleet), 0o644)
	os.MkdirAll(filepath.Join(w.repo, "tenants"), 0o755)
	os.WriteFile(filepath.Join(w.repo, "tenants", "ws-acme.yaml"), []byte(testkit.TenantYAML(tenant("ws-acme", schema.StateRunning))), 0o644)
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "fleet")
	work := t.TempDir()
	bootCmd := `cp "$DOSIM_USER_DATA_FILE" "$DOSIM_DISK_DIR/user_data"; exec env SSL_CERT_FILE=` + cert.CertFile + " " + agentBin +
		" run --converge=false --heartbeat-interval 1s --poll-wait 5s --retry-max 500ms --log-format text"
	hookOut := &syncio.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("droplet output:\n%s", tail(hookOut.String(), 6000))
		}
	})
	w.sim = dosimtest.Start(t, dosim.Config{WorkDir: work, DiskRoot: filepath.Join(work, "disks"), BootCmd: bootCmd, HookGrace: time.Second, HookOutput: hookOut,
		Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 100}, {Name: "acct-b", Token: "tok-b", DropletLimit: 100}},
		Limits:   dosim.Limits{BootDelay: dosim.Duration(500 * time.Millisecond)}})
	p := w.start("--insecure-no-auth", "--signing-key", filepath.Join(keys, "signing.pem"), "--age-identity", filepath.Join(keys, "age.key"),
		"--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile)
	base := strings.Replace(p.url, "http://", "https://", 1)

	pool := cert.Pool()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz over https: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 {
		t.Errorf("/healthz over https: %d, tls %+v; want 200 over TLS 1.2+", resp.StatusCode, resp.TLS)
	}
	// Plain HTTP to the TLS port: Go's server answers 400 and nothing else.
	if resp, err := http.Get(p.url + "/v1/fleet"); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || strings.Contains(string(body), "tenants") {
			t.Errorf("plain http to the TLS port: %d %q, want 400", resp.StatusCode, body)
		}
	}

	var last api.FleetTenant
	testkit.WaitFor(t, "ws-acme's agent to enroll and apply over https", func() bool {
		resp, err := client.Get(base + "/v1/fleet")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var doc api.Fleet
		json.NewDecoder(resp.Body).Decode(&doc)
		for _, r := range doc.Tenants {
			if r.Workspace == "ws-acme" {
				last = r
			}
		}
		return last.Lifecycle == "ACTIVE_HEALTHY" && last.ManifestIssued > 0 && last.ManifestApplied == last.ManifestIssued
	})
	// The user data the droplet booted with points at https.
	var uds []string
	filepath.WalkDir(work, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == "user_data" && !d.IsDir() {
			uds = append(uds, path)
		}
		return nil
	})
	if len(uds) == 0 {
		t.Fatalf("the boot command copied no user data under %s", work)
	}
	for _, f := range uds {
		b, _ := os.ReadFile(f)
		if !strings.Contains(string(b), `"reconciler_url": "`+base+`"`) {
			t.Errorf("%s does not point agents at %s:\n%s", f, base, b)
		}
	}
	// Rotation: a new pair renamed over the files is served to new
	// connections without a restart (checked at most every 5 s).
	next := certtest.New(t, t.TempDir(), "reconciler-next")
	pool.AddCert(next.Cert)
	for _, f := range [][2]string{{next.KeyFile, cert.KeyFile}, {next.CertFile, cert.CertFile}} {
		if err := os.Rename(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
	testkit.WaitFor(t, "the rotated certificate to be served", func() bool {
		resp, err := fresh.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Subject.CommonName == "reconciler-next"
	})
	if !strings.Contains(p.logs.String(), "tls certificate reloaded") {
		t.Errorf("no reload logged:\n%s", p.logs.String())
	}
	if strings.Contains(p.logs.String(), "agents on droplets refuse it") {
		t.Errorf("a plain-http warning with TLS on:\n%s", p.logs.String())
	}
}

// TestTransportFlags: TLS files come in pairs; an agent download URL needs
// its SHA-256 and https; each mistake is a usage error (exit 2) naming the
// flag.
func TestTransportFlags(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"--tls-cert", "a.crt"}, "give both --tls-cert and --tls-key"},
		{"key without cert", []string{"--tls-key", "a.key"}, "give both --tls-cert and --tls-key"},
		{"download without sha256", []string{"--agent-binary-url", "https://dl.example/genesis-agent"}, "--agent-binary-url needs --agent-binary-sha256"},
		{"sha256 without download", []string{"--agent-binary-sha256", sum}, "--agent-binary-sha256 without --agent-binary-url"},
		{"sha256 not hex", []string{"--agent-binary-url", "https://dl.example/a", "--agent-binary-sha256", strings.Repeat("zz", 32)}, "--agent-binary-sha256: sha256: want 64"},
		{"plain http download", []string{"--agent-binary-url", "http://user:pw@dl.example/a", "--agent-binary-sha256", sum},
			"--agent-binary-url http://dl.example is plain http"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, append([]string{"--database-url", "postgres://x", "--state-dir", t.TempDir(), "--insecure-no-auth"}, tc.args...)...)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
			out, _ := cmd.CombinedOutput()
			if got := cmd.ProcessState.ExitCode(); got != 2 || !strings.Contains(string(out), tc.want) {
				t.Errorf("exit %d, output %q; want exit 2 and %q", got, out, tc.want)
			}
			if strings.Contains(string(out), "pw@") {
				t.Errorf("the output names a credential: %q", out)
			}
		})
	}
	// Accepted: an https download with its sum (upper case is folded);
	// plain http with --agent-insecure-http.
	for _, args := range [][]string{
		{"--agent-binary-url", "https://dl.example/a", "--agent-binary-sha256", strings.ToUpper(sum)},
		{"--agent-binary-url", "http://dl.example/a", "--agent-binary-sha256", sum, "--agent-insecure-http"},
	} {
		c, err := parseFlags(append([]string{"--database-url", "postgres://x", "--state-dir", "x", "--insecure-no-auth"}, args...), func(string) string { return "" }, io.Discard)
		if err != nil || c.AgentBinarySHA256 != sum {
			t.Errorf("%v: %v, sha256 %q", args, err, c.AgentBinarySHA256)
		}
	}
}
