package converge_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/agent/caddy"
	"genesis.dev/fleet/agent/converge"
	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/internal/testkit"
)

// caddyBinary returns the pinned Caddy the agent/caddy tests build into
// $GENESIS_CACHE/caddy/v2.11.9/caddy or <repo>/.cache/caddy/v2.11.9/caddy,
// building it the same way when missing (scripts/build-caddy).
func caddyBinary(t *testing.T) string {
	t.Helper()
	const version = "v2.11.9"
	cache := os.Getenv("GENESIS_CACHE")
	if cache == "" {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			t.Fatal(err)
		}
		cache = filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), ".cache")
	}
	dir := filepath.Join(cache, "caddy", version)
	bin := filepath.Join(dir, "caddy")
	if fi, err := os.Stat(bin); err == nil && fi.Mode()&0o111 != 0 {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "install", "github.com/caddyserver/caddy/v2/cmd/caddy@"+version)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build caddy %s (run scripts/build-caddy): %v\n%s", version, err, out)
	}
	return bin
}

// startRealCaddy runs Caddy with only its admin API, like a fresh droplet.
// startRealCaddy runs the real Caddy with only its admin API on admin,
// until the test ends or the returned stop is called.
func startRealCaddy(t *testing.T, admin string) (stop func()) {
	t.Helper()
	home := t.TempDir()
	cfg := filepath.Join(home, "caddy.json")
	os.WriteFile(cfg, []byte(`{"admin":{"listen":"`+admin+`","config":{"persist":false}}}`), 0o600)
	cmd := exec.Command(caddyBinary(t), "run", "--config", cfg)
	cmd.Env = []string{"HOME=" + home, "XDG_DATA_HOME=" + filepath.Join(home, "data"), "XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "PATH=" + os.Getenv("PATH")}
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop = func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if _, err := caddy.NewClient(admin, caddy.ClientOptions{}).Running(context.Background()); err == nil {
			return stop
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy admin on %s not up after 15s", admin)
		}
	}
}

// caddyRig is a converger in front of the real Caddy: the rig's n8n
// emulator and ask endpoint, Caddy's HTTPS on a free port of 127.0.0.1
// with its internal CA, and a backend standing in for n8n's port that
// answers "n8n for <host>".
type caddyRig struct {
	c     *converge.Converger
	cc    *caddy.Client
	admin string
	// ask is the on-demand TLS endpoint Caddy asks.
	ask *caddy.Ask
	// stop stops the Caddy it started.
	stop func()
	// get fetches https://host/ through Caddy: "<status> <body>".
	get func(host string) (string, error)
}

func newCaddyRig(t *testing.T) *caddyRig {
	t.Helper()
	r := newRig(t)
	admin, httpPort, httpsPort := testkit.FreeAddr(t), testkit.FreePort(t), testkit.FreePort(t)
	stop := startRealCaddy(t, admin)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		fmt.Fprintf(w, "n8n for %s", req.Host)
	}))
	t.Cleanup(backend.Close)
	askSrv := httptest.NewServer(r.ask)
	t.Cleanup(askSrv.Close)
	client, _ := n8n.New(r.n8n.url, n8n.Options{})
	cc := caddy.NewClient(admin, caddy.ClientOptions{})
	c, err := converge.New(converge.Config{Dir: r.dir, N8N: client, Caddy: cc, Ask: r.ask,
		CaddyConfig: caddy.Config{Upstream: strings.TrimPrefix(backend.URL, "http://"), AskURL: askSrv.URL + "/ask",
			HTTPPort: httpPort, HTTPSPort: httpsPort, BindHost: "127.0.0.1", Internal: true, AdminListen: admin, GracePeriod: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	get := func(host string) (string, error) {
		tr := &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(httpsPort))
			},
			TLSClientConfig: &tls.Config{ServerName: host, InsecureSkipVerify: true}, DisableKeepAlives: true,
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + host + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, body), nil
	}
	return &caddyRig{c: c, cc: cc, admin: admin, ask: r.ask, stop: stop, get: get}
}

// TestDomainsReachRealCaddy: a declared domain reaches n8n through the real
// Caddy, a removed one no longer does, and re-applying loads nothing.
func TestDomainsReachRealCaddy(t *testing.T) {
	cr := newCaddyRig(t)
	c, cc, get := cr.c, cr.cc, cr.get
	ctx := context.Background()

	m, plain := manifest(1, creds5, workflows4, "track.acme.test", "127.0.0.1.sslip.io")
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"track.acme.test", "127.0.0.1.sslip.io"} {
		if got, err := get(host); err != nil || got != "200 n8n for "+host {
			t.Errorf("GET https://%s = %q, %v", host, got, err)
		}
	}
	// (Not go.acme.test: Caddy remembers a refused name for a while, so a
	// domain asked about before it was declared gets its certificate late.)
	if got, err := get("evil.acme.test"); err == nil {
		t.Errorf("undeclared evil.acme.test answered %q", got)
	}

	m2, plain2 := manifest(2, creds5, workflows4, "go.acme.test", "127.0.0.1.sslip.io")
	if err := c.Apply(ctx, m2, plain2); err != nil {
		t.Fatal(err)
	}
	// Within a few seconds of the reload, not necessarily at the first
	// handshake: once in CI the handshake right after Apply ended in EOF
	// (Caddy swapping its servers on /load; not reproduced since).
	var got string
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if got, err = get("go.acme.test"); (err == nil && got == "200 n8n for go.acme.test") || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || got != "200 n8n for go.acme.test" {
		t.Errorf("added go.acme.test, 5 s after the reload: %q, %v", got, err)
	}
	// The removed domain keeps its certificate but no longer reaches n8n.
	if got, err := get("track.acme.test"); err == nil && strings.HasPrefix(got, "200") {
		t.Errorf("removed track.acme.test still answered %q", got)
	}
	loads := cc.Loads()
	if err := c.Apply(ctx, m2, plain2); err != nil {
		t.Fatal(err)
	}
	if cc.Loads() != loads {
		t.Errorf("re-apply posted /load %d more times", cc.Loads()-loads)
	}
}

// TestCaddyLostConfigRepaired: Caddy restarted with its initial config
// (a crash, the droplet's restart policy) answers on its admin API but
// routes nothing; the agent's probe finds the running config is not the
// one the manifest asked for, loads it again and says so, and the tenant's
// domain reaches n8n again. A Caddy running the right config is left
// alone.
func TestCaddyLostConfigRepaired(t *testing.T) {
	cr := newCaddyRig(t)
	c, cc, get, admin, stop := cr.c, cr.cc, cr.get, cr.admin, cr.stop
	ctx := context.Background()
	m, plain := manifest(1, creds5, workflows4, "track.acme.test")
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	if got, err := get("track.acme.test"); err != nil || got != "200 n8n for track.acme.test" {
		t.Fatalf("before: %q %v", got, err)
	}
	if h := c.ProbeCaddy(ctx); !h.OK || h.Detail != "" || c.CaddyRepairs() != 0 {
		t.Errorf("a Caddy running the right config: %+v, %d repairs", h, c.CaddyRepairs())
	}
	loads := cc.Loads()

	// Caddy restarts with its initial config.
	stop()
	startRealCaddy(t, admin)
	if _, err := get("track.acme.test"); err == nil {
		t.Fatal("a restarted Caddy still routes the domain: the test restarts nothing")
	}
	// Applying the same manifest again loads nothing: the client remembers
	// the digest it loaded (the bug the probe repairs).
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	if cc.Loads() != loads {
		t.Fatalf("re-apply loaded %d configs", cc.Loads()-loads)
	}
	h := c.ProbeCaddy(ctx)
	if !h.OK || !strings.Contains(h.Detail, "repaired") || c.CaddyRepairs() != 1 || cc.Loads() != loads+1 {
		t.Errorf("probe of a Caddy that lost its config: %+v, %d repairs, %d loads", h, c.CaddyRepairs(), cc.Loads()-loads)
	}
	if got, err := get("track.acme.test"); err != nil || got != "200 n8n for track.acme.test" {
		t.Errorf("after the repair: %q %v", got, err)
	}
	if h := c.ProbeCaddy(ctx); !h.OK || h.Detail != "" || c.CaddyRepairs() != 1 {
		t.Errorf("probe after the repair: %+v, %d repairs", h, c.CaddyRepairs())
	}
}

// TestCaddyProbeStableNameCertificate: the caddy component is down until
// Caddy serves a certificate for the manifest's stable name (a TLS
// handshake with the name, which also makes Caddy get it), so a new
// droplet is not healthy while a visitor through the name would fail.
func TestCaddyProbeStableNameCertificate(t *testing.T) {
	cr := newCaddyRig(t)
	c := cr.c
	ctx := context.Background()
	m, plain := manifest(1, creds5, workflows4, "track.acme.test", "ws-acme.t.genesis.test")
	m.StableName = "ws-acme.t.genesis.test"
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	h := c.ProbeCaddy(pctx)
	cancel()
	if !h.OK || h.Detail != "" {
		t.Fatalf("Caddy serving the stable name: %+v", h)
	}

	// A stable name Caddy will not get a certificate for (here its ask
	// refuses it; in life the CA is down or the record points elsewhere).
	m2, plain2 := manifest(2, creds5, workflows4, "track.acme.test", "ws-other.t.genesis.test")
	m2.StableName = "ws-other.t.genesis.test"
	if err := c.Apply(ctx, m2, plain2); err != nil {
		t.Fatal(err)
	}
	cr.ask.Set([]string{"track.acme.test"})
	pctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	h = c.ProbeCaddy(pctx)
	cancel()
	if h.OK || !strings.HasPrefix(h.Detail, "no certificate for ws-other.t.genesis.test yet: ") {
		t.Errorf("Caddy without the stable name's certificate: %+v", h)
	}
}
