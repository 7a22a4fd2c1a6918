package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// TestTenantAPIAndWebhook runs the binary on a bare state repository with a
// tokens file: a tenant onboarded through the API, and one committed by an
// admin and announced by a signed push webhook (polling is hourly), both
// reach the simulator. The latencies are logged, not asserted.
func TestTenantAPIAndWebhook(t *testing.T) {
	w := newWorld(t, 1, 0)
	bare := filepath.Join(t.TempDir(), "state.git")
	w.state.Git("clone", "-q", "--bare", w.repo, bare)
	toks := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(toks, []byte(`{"name":"dash","sha256":"`+auth.Hash("tok-dash")+`","scopes":["dashboard"]}`+"\n"), 0o600)
	p := w.start("--state-repo", "file://"+bare, "--cache-dir", t.TempDir(), "--tokens", toks, "--poll-interval", "1h", "--resync", "1h")
	call := apiClient(t, p.url)
	testkit.WaitFor(t, "the tenant API", func() bool {
		resp, _ := call("GET", "/v1/tenants/ws-000", "tok-dash", "")
		return resp.StatusCode == 200
	})
	if resp, _ := call("GET", "/v1/fleet", "", ""); resp.StatusCode != 401 {
		t.Errorf("/v1/fleet without a token: %d", resp.StatusCode)
	}
	if resp, _ := call("GET", "/v1/fleet", "tok-dash", ""); resp.StatusCode != 200 {
		t.Errorf("/v1/fleet with a token: %d", resp.StatusCode)
	}
	testkit.WaitFor(t, "ws-000's droplet", func() bool { return w.dropletsByName()["genesis-ws-000-1"] == 1 })

	// Through the API.
	resp, body := call("POST", "/v1/tenants", "tok-dash", `{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-api","name":"API","tier":"pro"},"spec":{"state":"running","droplet":{"region":"nyc3"}}}`)
	committed := time.Now()
	if resp.StatusCode != 201 {
		t.Fatalf("onboard: %d %s", resp.StatusCode, body)
	}
	var res api.WriteResult
	json.Unmarshal(body, &res)
	if got := gitOut(t, bare, "rev-parse", "main"); got != res.Commit {
		t.Errorf("main %s, API commit %s", got, res.Commit)
	}
	testkit.WaitForFast(t, "the API's tenant to reach the simulator", func() bool { return w.dropletsByName()["genesis-ws-api-1"] == 1 })
	t.Logf("API commit -> droplet create seen in the simulator: %v", time.Since(committed).Round(time.Millisecond))

	// An admin's commit and a signed push webhook.
	admin := filepath.Join(t.TempDir(), "admin")
	gitOut(t, filepath.Dir(admin), "clone", "-q", bare, admin)
	os.WriteFile(filepath.Join(admin, "tenants", "ws-hook.yaml"), []byte(testkit.TenantYAML(tenant("ws-hook", schema.StateRunning))), 0o644)
	gitOut(t, admin, "add", "-A")
	gitOut(t, admin, "commit", "-q", "-m", "onboard ws-hook")
	gitOut(t, admin, "push", "-q", "origin", "main")
	pushed := time.Now()
	hook := []byte(`{"ref":"refs/heads/main"}`)
	if resp, _ := call("POST", "/hooks/git", "", string(hook), tenants.SignatureHeader, tenants.Sign([]byte("wrong"), hook)); resp.StatusCode != 401 {
		t.Errorf("badly signed hook: %d", resp.StatusCode)
	}
	if resp, _ := call("POST", "/hooks/git", "", string(hook), tenants.SignatureHeader, tenants.Sign([]byte("s3cret"), hook)); resp.StatusCode != 202 {
		t.Fatalf("signed hook: %d", resp.StatusCode)
	}
	testkit.WaitForFast(t, "the hook's commit to reach the simulator", func() bool { return w.dropletsByName()["genesis-ws-hook-1"] == 1 })
	t.Logf("git push + webhook -> droplet create seen in the simulator: %v", time.Since(pushed).Round(time.Millisecond))

	// The API sees the admin's commit (the hook refreshed it) and rebases on it.
	testkit.WaitFor(t, "the API to see ws-hook", func() bool {
		resp, _ := call("GET", "/v1/tenants/ws-hook", "tok-dash", "")
		return resp.StatusCode == 200
	})
	resp, _ = call("GET", "/v1/tenants/ws-000", "tok-dash", "")
	resp, body = call("PATCH", "/v1/tenants/ws-000", "tok-dash", `{"spec":{"state":"hibernated"}}`, "If-Match", resp.Header.Get("ETag"))
	if resp.StatusCode != 200 {
		t.Fatalf("patch: %d %s", resp.StatusCode, body)
	}
	if got, want := gitOut(t, bare, "log", "--format=%an: %s", "-3", "main"), "dash: patch ws-000: \"spec.state\"\nt: onboard ws-hook\ndash: onboard ws-api"; got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
}

// apiClient returns a function that calls the reconciler's HTTP API at base
// with a bearer token ("" for none) and a JSON body, and returns the
// response and its body.
func apiClient(t *testing.T, base string) func(method, path, token, body string, hdr ...string) (*http.Response, []byte) {
	return func(method, path, token, body string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		req.Header.Set("Content-Type", "application/json")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp, b.Bytes()
	}
}

func gitOut(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}
