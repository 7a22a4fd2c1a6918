package activator

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/agent/caddy/caddytest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/lifecycle"
)

// TestFrontThroughRealCaddy: the rendered front runs in the real Caddy with
// its internal CA; a client resolving a hibernated tenant's names to Caddy
// gets a certificate and, through Caddy and the Handler, its tenant's woken
// droplet's answer with the original Host and X-Forwarded-*; a refused
// name (unknown, or a running tenant's) gets no certificate.
func TestFrontThroughRealCaddy(t *testing.T) {
	w := newWorld(t)
	w.add("ws-hib", lifecycle.Hibernated, true)
	w.add("ws-up", lifecycle.ActiveHealthy, true)
	gate := make(chan struct{})
	w.gate["ws-hib"] = gate
	h, err := New(w.config(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, h)
	ask := serveAsk(t, h)
	testkit.WaitFor(t, "the status table", func() bool { return h.statuses.Load() != nil })

	listen, admin := testkit.FreeAddr(t), testkit.FreeAddr(t)
	cfg, err := RenderFront(Front{Listen: listen, Upstream: srv.Listener.Addr().String(), AskURL: ask.URL + "/ask",
		Internal: true, AdminListen: admin, GracePeriod: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	home := caddytest.Start(t, admin, cfg)
	rootPEM, err := os.ReadFile(filepath.Join(home, "data", "caddy", "pki", "authorities", "local", "root.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(rootPEM)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		// DNS of the tenants' names points at the activator's Caddy.
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, listen)
		},
	}}
	// Both names get their certificate while the tenant sleeps (once it
	// is up, Ask refuses them: its droplet serves them), and their
	// requests are held until the wake.
	type answer struct {
		host, body string
		code       int
		err        error
	}
	answers := make(chan answer, 2)
	for _, host := range []string{stable("ws-hib"), domain("ws-hib")} {
		go func() {
			resp, err := c.Get("https://" + host + "/hello")
			if err != nil {
				answers <- answer{host: host, err: err}
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answers <- answer{host, string(b), resp.StatusCode, nil}
		}()
	}
	testkit.WaitFor(t, "both requests held", func() bool { return testutil.ToFloat64(h.m.held) == 2 })
	close(gate)
	for range 2 {
		a := <-answers
		if a.err != nil || a.code != http.StatusOK || a.body != "ws-hib GET /hello " {
			t.Errorf("%s through caddy: %d %q %v", a.host, a.code, a.body, a.err)
		}
	}
	w.mu.Lock()
	seen := w.received["ws-hib"]
	w.mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("droplet saw %d requests, want 2", len(seen))
	}
	for _, r := range seen {
		if (r.Host != stable("ws-hib") && r.Host != domain("ws-hib")) || r.Header.Get("X-Forwarded-Proto") != "https" ||
			r.Header.Get("X-Forwarded-Host") != r.Host || !strings.HasPrefix(r.Header.Get("X-Forwarded-For"), "127.0.0.1") {
			t.Errorf("droplet saw Host %q, X-Forwarded-* %q %q %q", r.Host, r.Header.Get("X-Forwarded-Proto"),
				r.Header.Get("X-Forwarded-Host"), r.Header.Get("X-Forwarded-For"))
		}
	}
	for _, host := range []string{"nobody.example", stable("ws-up")} {
		resp, err := c.Get("https://" + host + "/")
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: got a certificate and %d, want a failed handshake", host, resp.StatusCode)
		}
	}
}

func TestRenderFront(t *testing.T) {
	good := Front{Listen: ":443", Upstream: "127.0.0.1:8090", AskURL: "http://127.0.0.1:8091/ask",
		ACMECA: "https://acme.example/dir", ACMEEmail: "ops@example.com", ACMERoots: "/etc/genesis/acme-root.pem"}
	out, err := RenderFront(good)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"admin":{"listen":"127.0.0.1:2019","config":{"persist":false}}`, `"grace_period":"10s"`,
		`"permission":{"module":"http","endpoint":"http://127.0.0.1:8091/ask"}`, `"trusted_roots_pem_files":["/etc/genesis/acme-root.pem"]`,
		`"ca":"https://acme.example/dir"`, `"dial":"127.0.0.1:8090"`, `"on_demand":true`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("config lacks %s:\n%s", want, out)
		}
	}
	for name, mod := range map[string]func(*Front){
		"no listen port": func(f *Front) { f.Listen = "0.0.0.0" },
		"no upstream":    func(f *Front) { f.Upstream = "" },
		"ask not a URL":  func(f *Front) { f.AskURL = "127.0.0.1:8091/ask" },
		"admin":          func(f *Front) { f.AdminListen = "nowhere" },
		"grace":          func(f *Front) { f.GracePeriod = -time.Second },
	} {
		t.Run(name, func(t *testing.T) {
			f := good
			mod(&f)
			if _, err := RenderFront(f); err == nil {
				t.Error("rendered it")
			}
		})
	}
}
