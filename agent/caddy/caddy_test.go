package caddy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/agent/caddy"
	"genesis.dev/fleet/internal/testkit"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestRenderGolden(t *testing.T) {
	tests := []struct {
		name string
		cfg  caddy.Config
	}{
		{"production", caddy.Config{
			Hosts:     []string{"track.acme.com", "203-0-113-7.sslip.io", "Go.Acme.com."},
			AskURL:    "http://127.0.0.1:8089/ask",
			ACMEEmail: "ops@genesis.dev",
		}},
		{"test", caddy.Config{
			Hosts: []string{"track.acme.test"}, Upstream: "127.0.0.1:40001", AskURL: "http://127.0.0.1:40002/ask",
			HTTPPort: 40080, HTTPSPort: 40443, BindHost: "127.0.0.1", Internal: true,
			AdminListen: "127.0.0.1:40019", GracePeriod: 2 * time.Second,
		}},
		{"no hosts", caddy.Config{AskURL: "http://127.0.0.1:8089/ask"}},
		{"private acme", caddy.Config{
			Hosts: []string{"ws-a.t.genesis.test"}, Upstream: "127.0.0.1:40001", AskURL: "http://127.0.0.1:40002/ask",
			HTTPPort: 40080, HTTPSPort: 40443, BindHost: "127.1.0.5",
			ACMECA: "https://127.0.0.1:14000/dir", ACMECARoots: "/var/lib/genesis/acme-ca.pem", ACMEEmail: "ops@genesis.dev",
			AdminListen: "127.0.0.1:40019", GracePeriod: 2 * time.Second,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, digest, err := caddy.Render(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if d, err := caddy.DigestOf(got); err != nil || d != digest {
				t.Errorf("DigestOf(rendered) = %s, %v; Render said %s", d, err, digest)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, got, "", "  "); err != nil {
				t.Fatal(err)
			}
			pretty.WriteByte('\n')
			path := filepath.Join("testdata", strings.ReplaceAll(tt.name, " ", "-")+".golden.json")
			if *update {
				if err := os.WriteFile(path, pretty.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), pretty.String()); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRenderDigest(t *testing.T) {
	base := caddy.Config{Hosts: []string{"a.example.com", "b.example.com"}, AskURL: "http://127.0.0.1:1/ask"}
	_, d1, _ := caddy.Render(base)
	same := base
	same.Hosts = []string{"B.example.com", "a.example.com", "b.example.com."}
	_, d2, _ := caddy.Render(same)
	if d1 != d2 {
		t.Errorf("host order, case or duplicates changed the digest")
	}
	other := base
	other.Hosts = []string{"a.example.com"}
	_, d3, _ := caddy.Render(other)
	if d1 == d3 {
		t.Errorf("removing a host kept the digest")
	}
	spaced, _ := caddy.DigestOf([]byte("{ \"b\": 1,\n \"a\": [1, 2] }"))
	compact, _ := caddy.DigestOf([]byte(`{"a":[1,2],"b":1}`))
	if spaced != compact {
		t.Errorf("formatting changed the digest")
	}
}

func TestRenderErrors(t *testing.T) {
	ok := caddy.Config{AskURL: "http://127.0.0.1:1/ask"}
	tests := []struct {
		name string
		edit func(*caddy.Config)
		want string
	}{
		{"no ask url", func(c *caddy.Config) { c.AskURL = "" }, `render caddy config: ask url "": want an http(s) URL`},
		{"ip host", func(c *caddy.Config) { c.Hosts = []string{"10.0.0.1"} }, `render caddy config: host "10.0.0.1" is not a DNS name`},
		{"single label", func(c *caddy.Config) { c.Hosts = []string{"localhost"} }, `render caddy config: host "localhost" is not a DNS name`},
		{"wildcard", func(c *caddy.Config) { c.Hosts = []string{"*.acme.com"} }, `render caddy config: host "*.acme.com" is not a DNS name`},
		{"path", func(c *caddy.Config) { c.Hosts = []string{"acme.com/x"} }, `render caddy config: host "acme.com/x" is not a DNS name`},
		{"bad upstream", func(c *caddy.Config) { c.Upstream = "n8n" }, `render caddy config: upstream "n8n": want host:port`},
		{"bad port", func(c *caddy.Config) { c.HTTPSPort = 70000 }, `render caddy config: port 70000 out of range`},
		{"bad admin", func(c *caddy.Config) { c.AdminListen = "2019" }, `render caddy config: admin listen "2019": want host:port`},
		{"acme ca with internal", func(c *caddy.Config) { c.Internal, c.ACMECARoots = true, "/ca.pem" }, `render caddy config: an ACME CA with the internal issuer`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			_, _, err := caddy.Render(cfg)
			if err == nil {
				t.Fatal("rendered")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAsk(t *testing.T) {
	ask := caddy.NewAsk(nil, "track.acme.com", "Go.Acme.com")
	srv := httptest.NewServer(ask)
	defer srv.Close()
	status := func(query string) int {
		resp, err := http.Get(srv.URL + "/ask" + query)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	tests := []struct {
		query string
		want  int
	}{
		{"?domain=track.acme.com", 200},
		{"?domain=TRACK.acme.com.", 200},
		{"?domain=go.acme.com", 200},
		{"?domain=evil.com", 403},
		{"?domain=acme.com", 403},
		{"", 400},
	}
	for _, tt := range tests {
		if got := status(tt.query); got != tt.want {
			t.Errorf("GET /ask%s = %d, want %d", tt.query, got, tt.want)
		}
	}
	ask.Set([]string{"evil.com"})
	if status("?domain=track.acme.com") != 403 || status("?domain=evil.com") != 200 {
		t.Error("Set did not replace the domains")
	}

	// Set and Allowed race-free under -race.
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				ask.Set([]string{fmt.Sprintf("d%d-%d.example.com", i, j)})
				_ = ask.Allowed("d0-0.example.com")
			}
		})
	}
	wg.Wait()
}

// harness is one real Caddy with a backend standing in for n8n and the ask
// endpoint, on free 127.0.0.1 ports.
type harness struct {
	admin               string
	httpPort, httpsPort int
	ask                 *caddy.Ask
	askURL              string
	asked               sync.Map // domain → true, every name Caddy asked about
	backendURL          string
	backendHits         atomic.Int64
	client              *caddy.Client
	upstream            string
	askSrv, backendSrv  *httptest.Server
}

func newHarness(t *testing.T) *harness {
	h := &harness{admin: fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), httpPort: testkit.FreePort(t), httpsPort: testkit.FreePort(t)}
	h.ask = caddy.NewAsk(nil)
	h.askSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.asked.Store(r.URL.Query().Get("domain"), true)
		h.ask.ServeHTTP(w, r)
	}))
	t.Cleanup(h.askSrv.Close)
	h.askURL = h.askSrv.URL + "/ask"
	h.backendSrv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.backendHits.Add(1)
		fmt.Fprintf(w, "n8n says hello to %s via %s", r.Host, r.Header.Get("X-Forwarded-Proto"))
	}))
	t.Cleanup(h.backendSrv.Close)
	h.upstream = strings.TrimPrefix(h.backendSrv.URL, "http://")
	h.client = caddy.NewClient(h.admin, caddy.ClientOptions{})
	return h
}

func (h *harness) render(t *testing.T, hosts ...string) ([]byte, caddy.Digest) {
	t.Helper()
	cfg, d, err := caddy.Render(caddy.Config{
		Hosts: hosts, Upstream: h.upstream, AskURL: h.askURL, HTTPPort: h.httpPort, HTTPSPort: h.httpsPort,
		BindHost: "127.0.0.1", Internal: true, AdminListen: h.admin, GracePeriod: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, d
}

// get requests https://host/path through Caddy's HTTPS port with host as SNI
// and Host, trusting any certificate (Caddy's internal CA).
func (h *harness) get(ctx context.Context, host, path string) (int, string, error) {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, "127.0.0.1:"+strconv.Itoa(h.httpsPort))
		},
		TLSClientConfig:   &tls.Config{ServerName: host, InsecureSkipVerify: true},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+path, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

func TestRealCaddy(t *testing.T) {
	ctx := t.Context()
	h := newHarness(t)
	const (
		bootstrap = "127-0-0-1.sslip.io"
		track     = "track.acme.test"
		other     = "go.acme.test"
	)
	// Caddy starts with a config that serves nothing yet, like a fresh droplet.
	initial, _ := h.render(t)
	startCaddy(t, h.admin, initial)

	t.Run("running config is recognised without a post", func(t *testing.T) {
		c := caddy.NewClient(h.admin, caddy.ClientOptions{})
		changed, err := c.Load(ctx, initial)
		if err != nil || changed || c.Loads() != 0 {
			t.Fatalf("Load of the running config: changed=%v loads=%d err=%v", changed, c.Loads(), err)
		}
	})

	cfg, digest := h.render(t, bootstrap, track)
	h.ask.Set([]string{bootstrap, track})
	t.Run("declared domain reaches n8n", func(t *testing.T) {
		changed, err := h.client.Load(ctx, cfg)
		if err != nil || !changed {
			t.Fatalf("Load: changed=%v err=%v", changed, err)
		}
		if running, err := h.client.Running(ctx); err != nil || running != digest {
			t.Fatalf("running digest %s (%v), rendered %s", running, err, digest)
		}
		for _, host := range []string{track, bootstrap} {
			status, body, err := h.get(ctx, host, "/webhook/o/1")
			if err != nil {
				t.Fatalf("GET https://%s: %v", host, err)
			}
			want := "n8n says hello to " + host + " via https"
			if status != 200 || body != want {
				t.Errorf("GET https://%s = %d %q, want 200 %q", host, status, body, want)
			}
		}
	})

	t.Run("http redirects to https", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/x", h.httpPort), nil)
		req.Host = track
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect || !strings.HasPrefix(resp.Header.Get("Location"), "https://"+track) {
			t.Errorf("http: %d Location %q, want 308 to https://%s", resp.StatusCode, resp.Header.Get("Location"), track)
		}
	})

	t.Run("identical config is not posted", func(t *testing.T) {
		before := h.client.Loads()
		changed, err := h.client.Load(ctx, cfg)
		if err != nil || changed || h.client.Loads() != before {
			t.Errorf("second Load: changed=%v loads=%d→%d err=%v", changed, before, h.client.Loads(), err)
		}
		// A restarted agent (a new client) finds it running.
		fresh := caddy.NewClient(h.admin, caddy.ClientOptions{})
		if changed, err := fresh.Load(ctx, cfg); err != nil || changed || fresh.Loads() != 0 {
			t.Errorf("Load from a new client: changed=%v loads=%d err=%v", changed, fresh.Loads(), err)
		}
	})

	t.Run("undeclared domain fails the handshake", func(t *testing.T) {
		hits := h.backendHits.Load()
		_, _, err := h.get(ctx, "evil.acme.test", "/")
		if err == nil {
			t.Fatal("an undeclared domain got an answer")
		}
		if _, asked := h.asked.Load("evil.acme.test"); !asked {
			t.Errorf("caddy did not ask about evil.acme.test (err %v)", err)
		}
		if h.backendHits.Load() != hits {
			t.Error("the backend saw the request")
		}
	})

	t.Run("invalid config is refused and the old one keeps serving", func(t *testing.T) {
		var doc map[string]any
		if err := json.Unmarshal(cfg, &doc); err != nil {
			t.Fatal(err)
		}
		// A handler module Caddy doesn't have.
		doc["apps"].(map[string]any)["http"].(map[string]any)["servers"].(map[string]any)["genesis"].(map[string]any)["routes"] =
			[]any{map[string]any{"handle": []any{map[string]any{"handler": "no_such_handler"}}}}
		bad, _ := json.Marshal(doc)
		changed, err := h.client.Load(ctx, bad)
		var e *caddy.Error
		if changed || !errors.As(err, &e) || e.Status != 400 || !strings.Contains(e.Message, "no_such_handler") || e.Retryable() {
			t.Fatalf("Load of a bad config: changed=%v err=%v, want a non-retryable 400 naming the module", changed, err)
		}
		if running, err := h.client.Running(ctx); err != nil || running != digest {
			t.Errorf("running digest %s (%v) after a refused load, want the old %s", running, err, digest)
		}
		if status, _, err := h.get(ctx, track, "/"); err != nil || status != 200 {
			t.Errorf("old config no longer serves: %d %v", status, err)
		}
		// The good config is still the applied one: no post.
		before := h.client.Loads()
		if changed, err := h.client.Load(ctx, cfg); err != nil || changed || h.client.Loads() != before {
			t.Errorf("Load of the running config after a refusal: changed=%v err=%v", changed, err)
		}
	})

	t.Run("added domain gets a certificate on demand", func(t *testing.T) {
		h.ask.Set([]string{bootstrap, track, other})
		next, _ := h.render(t, bootstrap, track, other)
		start := time.Now()
		if changed, err := h.client.Load(ctx, next); err != nil || !changed {
			t.Fatalf("Load: changed=%v err=%v", changed, err)
		}
		status, body, err := h.get(ctx, other, "/")
		if err != nil {
			// A connection accepted at the moment the reload swaps its
			// servers may be closed (seen once in CI as EOF); a client
			// tries again, and so does this one, once.
			t.Logf("first GET https://%s: %v; once more", other, err)
			status, body, err = h.get(ctx, other, "/")
		}
		if err != nil || status != 200 || !strings.Contains(body, other) {
			t.Fatalf("GET https://%s = %d %q %v", other, status, body, err)
		}
		t.Logf("load + first HTTPS request through a new host: %s", time.Since(start).Round(time.Millisecond))
	})

	t.Run("removed domain no longer reaches n8n", func(t *testing.T) {
		h.ask.Set([]string{bootstrap, other})
		next, _ := h.render(t, bootstrap, other)
		if changed, err := h.client.Load(ctx, next); err != nil || !changed {
			t.Fatalf("Load: changed=%v err=%v", changed, err)
		}
		hits := h.backendHits.Load()
		status, body, err := h.get(ctx, track, "/")
		// Caddy may still hold the certificate it issued; either the
		// handshake fails or the catch-all answers 404. n8n never sees it.
		t.Logf("after removal: status %d, err %v", status, err)
		if err == nil && status != http.StatusNotFound {
			t.Errorf("GET https://%s after removal = %d %q, want 404 or a failed handshake", track, status, body)
		}
		if h.backendHits.Load() != hits {
			t.Error("the backend saw a request for a removed domain")
		}
		if status, _, err := h.get(ctx, other, "/"); err != nil || status != 200 {
			t.Errorf("remaining domain: %d %v", status, err)
		}
	})
}

func TestLoadCaddyDown(t *testing.T) {
	c := caddy.NewClient(fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t)), caddy.ClientOptions{})
	cfg, _, err := caddy.Render(caddy.Config{AskURL: "http://127.0.0.1:1/ask"})
	if err != nil {
		t.Fatal(err)
	}
	changed, err := c.Load(t.Context(), cfg)
	var e *caddy.Error
	if err == nil || changed || errors.As(err, &e) {
		t.Fatalf("Load with caddy down: changed=%v err=%v, want a transport error", changed, err)
	}
	if _, err := c.Load(t.Context(), []byte("{")); err == nil {
		t.Error("Load of invalid JSON accepted")
	}
}
