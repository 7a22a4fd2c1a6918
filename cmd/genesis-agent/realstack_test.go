package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/agent/caddy/caddytest"
	"genesis.dev/fleet/fakes/n8ntest"
	"genesis.dev/fleet/schema"
)

// TestRealStack is a droplet made of real parts: the genesis-agent binary
// converges n8n (a real n8n 1.123.x under make e2e-n8n, which sets
// GENESIS_N8N_BIN; the emulator otherwise) and the real, pinned Caddy from
// a signed manifest; then an HTTPS request for the tenant's tracking
// domain, sent to Caddy, reaches n8n, and one for an undeclared domain is
// refused at the TLS handshake (Caddy's on-demand TLS asks the agent).
func TestRealStack(t *testing.T) {
	w := newWorld(t)
	n8nURL, _ := n8ntest.Start(t)
	admin := fmt.Sprintf("127.0.0.1:%d", caddytest.FreePort(t))
	caddyHome := caddytest.Start(t, admin, []byte(`{"admin":{"listen":"`+admin+`"}}`))
	httpsPort, httpPort := caddytest.FreePort(t), caddytest.FreePort(t)
	askAddr := fmt.Sprintf("127.0.0.1:%d", caddytest.FreePort(t))

	ps := &protocolServer{t: t, w: w, token: "one-time-token-real", build: w.slackManifest}
	dir, cfgPath := startProtocol(t, ps)
	state := filepath.Join(dir, "state")
	cmd := exec.Command(bin, "run", "--insecure-http", "--config", cfgPath, "--droplet-id", w.droplet, "--state-dir", state,
		"--n8n-url", n8nURL, "--n8n-runtime", "none",
		"--caddy-admin", admin, "--caddy-bind", "127.0.0.1", "--caddy-internal-tls",
		"--caddy-http-port", strconv.Itoa(httpPort), "--caddy-https-port", strconv.Itoa(httpsPort), "--ask-listen", askAddr,
		"--heartbeat-interval", "500ms", "--poll-wait", "1s", "--log-format", "json")
	stderr, _ := startProc(t, cmd, []string{"PATH=" + os.Getenv("PATH")})

	// Converged: a heartbeat with version 1 applied, n8n and Caddy ok, and
	// the version n8n reports (a real n8n's first start takes a while).
	deadline := time.Now().Add(3 * time.Minute)
	var applied *schema.Heartbeat
	for applied == nil && time.Now().Before(deadline) {
		for _, hb := range ps.beats() {
			if hb.AppliedVersion == 1 && hb.Components["n8n"].OK && hb.Components["caddy"].OK && hb.N8NVersion != "" {
				applied = &hb
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if applied == nil {
		t.Fatalf("no heartbeat with version 1 applied and n8n, caddy healthy; beats %+v; agent log:\n%s", ps.beats(), tailString(stderr.String(), 6000))
	}
	if applied.ApplyError != "" || !strings.HasPrefix(applied.N8NVersion, "1.123.") {
		t.Errorf("heartbeat %+v", applied)
	}

	// n8n holds the workflow, active, pointing at the credential's real id.
	var access struct {
		APIKey string `json:"api_key"`
	}
	if b, err := os.ReadFile(filepath.Join(state, "n8n.json")); err != nil || json.Unmarshal(b, &access) != nil || access.APIKey == "" {
		t.Fatalf("the agent's n8n access in %s: %v", state, err)
	}
	req, _ := http.NewRequest(http.MethodGet, n8nURL+"/api/v1/workflows", nil)
	req.Header.Set("X-N8N-API-KEY", access.APIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Data []struct {
			Name   string          `json:"name"`
			Active bool            `json:"active"`
			Nodes  json.RawMessage `json:"nodes"`
		} `json:"data"`
	}
	json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	if len(list.Data) != 1 || !list.Data[0].Active || bytes.Contains(list.Data[0].Nodes, []byte("TEMPLATE_SLACK_UUID")) {
		t.Errorf("n8n workflows: %+v", list.Data)
	}

	// Through Caddy: the tracking domain reaches n8n over HTTPS with a
	// certificate from Caddy's internal CA; an undeclared one is refused.
	get := func(host string) (int, string, error) {
		roots := x509.NewCertPool()
		pem, err := os.ReadFile(filepath.Join(caddyHome, "data", "caddy", "pki", "authorities", "local", "root.crt"))
		if err != nil {
			return 0, "", err
		}
		roots.AppendCertsFromPEM(pem)
		hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: host},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, fmt.Sprintf("127.0.0.1:%d", httpsPort))
			},
		}}
		resp, err := hc.Get("https://" + host + "/healthz")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body), nil
	}
	var code int
	var body string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if code, body, err = get("track.acme.com"); err == nil && code == http.StatusOK {
			break
		}
	}
	if err != nil || code != http.StatusOK || !strings.Contains(body, "ok") {
		t.Errorf("https://track.acme.com/healthz through Caddy: %d %q %v", code, body, err)
	}
	if code, _, err := get("evil.example.com"); err == nil {
		t.Errorf("an undeclared domain was served through Caddy: %d", code)
	}
	if s := stderr.String(); strings.Contains(s, "s3cret") || strings.Contains(s, ps.cred) {
		t.Errorf("a secret in the agent's log")
	}
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
