package main

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// TestRefusesPlainHTTP starts the agent binary with an http:// reconciler
// URL (carrying a user name and password) and without --insecure-http: it
// exits 2 at start with a message naming the URL's origin and nothing of
// the credential, and never contacts the reconciler.
func TestRefusesPlainHTTP(t *testing.T) {
	w := newWorld(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(rw, "no", http.StatusTeapot)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	tests := []struct {
		name string
		args []string
		env  []string
	}{
		{"no flag", nil, nil},
		{"env says false", nil, []string{"GENESIS_AGENT_INSECURE_HTTP=false"}},
		{"flag set false", []string{"--insecure-http=false"}, []string{"GENESIS_AGENT_INSECURE_HTTP=true"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, _ := json.Marshal(schema.AgentConfig{
				ReconcilerURL: "http://enroller:pw-s3cret@" + host + "/base",
				SigningKeys:   []string{string(dsse.MarshalPublicKeyPEM(w.signer.Public()))},
				Workspace:     w.workspace, DropletName: "genesis-ws-acme", Token: "one-time-token-abc",
			})
			cfgPath := filepath.Join(dir, "agent.json")
			if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, append([]string{"run", "--converge=false", "--config", cfgPath, "--droplet-id", w.droplet,
				"--state-dir", filepath.Join(dir, "state")}, tc.args...)...)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, tc.env...)
			out, _ := cmd.CombinedOutput()
			if got := cmd.ProcessState.ExitCode(); got != 2 {
				t.Errorf("exit %d, want 2; output:\n%s", got, out)
			}
			if want := "reconciler_url http://" + host + " is plain http"; !strings.Contains(string(out), want) {
				t.Errorf("output %q, want it to contain %q", out, want)
			}
			for _, secret := range []string{"pw-s3cret", "enroller", "one-time-token-abc"} {
				if strings.Contains(string(out), secret) {
					t.Errorf("output names %q: %s", secret, out)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
				t.Error("a state directory was made before the refusal")
			}
			if n := hits.Load(); n != 0 {
				t.Errorf("the reconciler got %d requests", n)
			}
		})
	}
}

// TestEnrollsOverTLS runs the agent binary against an https reconciler
// without --insecure-http: trusting the test CA through SSL_CERT_FILE it
// enrolls and applies its manifest; without it the handshake fails, the
// agent says why and the reconciler never sees the token.
func TestEnrollsOverTLS(t *testing.T) {
	tests := []struct {
		name     string
		trustCA  bool
		wantLogs string
	}{
		{"test CA in SSL_CERT_FILE", true, ""},
		{"certificate not trusted", false, "certificate signed by unknown authority"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			ps := &protocolServer{t: t, w: w, token: "one-time-token-abc"}
			var requests atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				ps.ServeHTTP(rw, r)
			}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
			srv.StartTLS()
			defer srv.Close()
			dir := t.TempDir()
			ca := filepath.Join(dir, "ca.pem")
			if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, _ := json.Marshal(schema.AgentConfig{
				ReconcilerURL: srv.URL,
				SigningKeys:   []string{string(dsse.MarshalPublicKeyPEM(w.signer.Public()))},
				Workspace:     w.workspace, DropletName: "genesis-ws-acme", Token: ps.token,
			})
			cfgPath := filepath.Join(dir, "agent.json")
			if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
				t.Fatal(err)
			}
			env := []string{"PATH=" + os.Getenv("PATH")}
			if tc.trustCA {
				env = append(env, "SSL_CERT_FILE="+ca)
			} else {
				// No roots at all: nothing on this machine vouches for the test server.
				env = append(env, "SSL_CERT_FILE="+filepath.Join(dir, "none.pem"), "SSL_CERT_DIR="+t.TempDir())
			}
			cmd := exec.Command(bin, "run", "--converge=false", "--config", cfgPath, "--droplet-id", w.droplet,
				"--state-dir", filepath.Join(dir, "state"), "--heartbeat-interval", "200ms", "--poll-wait", "1s", "--retry-max", "200ms")
			stderr, _ := startProc(t, cmd, env)
			deadline := time.Now().Add(15 * time.Second)
			for time.Now().Before(deadline) {
				if tc.trustCA && applied(ps.beats()) {
					break
				}
				if !tc.trustCA && strings.Contains(stderr.String(), tc.wantLogs) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if tc.trustCA {
				if !applied(ps.beats()) {
					t.Fatalf("no heartbeat with version 1 applied over https; stderr:\n%s", stderr.String())
				}
				return
			}
			if !strings.Contains(stderr.String(), tc.wantLogs) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantLogs, stderr.String())
			}
			if n := requests.Load(); n != 0 {
				t.Errorf("the reconciler answered %d requests over an untrusted certificate", n)
			}
		})
	}
}

func applied(beats []schema.Heartbeat) bool {
	for _, hb := range beats {
		if hb.AppliedVersion == 1 {
			return true
		}
	}
	return false
}
