package main

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"genesis.dev/fleet/internal/gitserve"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/auth"
)

// TestGitTokenStaysSecret runs the binary on a state repository served over
// HTTP behind basic auth, with a planted token either in the --state-repo URL
// or in $GENESIS_GIT_TOKEN. The reconciler syncs and the tenant API pushes a
// commit (so the token is really sent); then the server refuses fetches and
// pushes, so the sync error reaches GET /v1/fleet and the API's 503. The
// token is in no log line, no response body and no file under --cache-dir.
func TestGitTokenStaysSecret(t *testing.T) {
	const token = "ghp_PLANTED0TOKEN0c0ffee42"
	tests := []struct {
		name     string
		userinfo string // in the URL, before "@"
		env      bool   // GENESIS_GIT_TOKEN
		login    gitserve.Login
	}{
		{name: "token as the URL's user name", userinfo: token + "@", login: gitserve.Login{User: token}},
		{name: "user and token in the URL", userinfo: "deploy:" + token + "@", login: gitserve.Login{User: "deploy", Password: token}},
		{name: "token in GENESIS_GIT_TOKEN", env: true, login: gitserve.Login{User: "git", Password: token}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env {
				t.Setenv("GENESIS_GIT_TOKEN", token)
			}
			w := newWorld(t, 1, 0)
			root := t.TempDir()
			bare := filepath.Join(root, "state.git")
			w.state.Git("clone", "-q", "--bare", w.repo, bare)
			srv := gitserve.Start(t, root, tt.login)
			repo := "http://" + tt.userinfo + strings.TrimPrefix(srv.URL, "http://") + "/state.git"
			toks := filepath.Join(t.TempDir(), "tokens")
			os.WriteFile(toks, []byte(`{"name":"dash","sha256":"`+auth.Hash("tok-dash")+`","scopes":["dashboard"]}`+"\n"), 0o600)
			cache := t.TempDir()
			p := w.start("--state-repo", repo, "--cache-dir", cache, "--tokens", toks)
			var bodies []string
			api := apiClient(t, p.url)
			call := func(method, path, body string, hdr ...string) (*http.Response, string) {
				t.Helper()
				resp, b := api(method, path, "tok-dash", body, hdr...)
				bodies = append(bodies, string(b))
				return resp, string(b)
			}
			testkit.WaitFor(t, "the fleet to list ws-000", func() bool {
				_, body := call("GET", "/v1/fleet", "")
				return strings.Contains(body, `"ws-000"`)
			})
			testkit.WaitFor(t, "the tenant API", func() bool {
				resp, _ := call("GET", "/v1/tenants/ws-000", "")
				return resp.StatusCode == 200
			})
			resp, body := call("POST", "/v1/tenants", `{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-api","name":"API","tier":"pro"},"spec":{"state":"running","droplet":{"region":"nyc3"}}}`)
			if resp.StatusCode != 201 {
				t.Fatalf("onboard through the authenticated remote: %d %s", resp.StatusCode, body)
			}

			srv.Refuse(1<<30, "")
			testkit.WaitFor(t, "a sync error on /v1/fleet", func() bool {
				_, body := call("GET", "/v1/fleet", "")
				var doc struct {
					SyncError string `json:"sync_error"`
				}
				json.Unmarshal([]byte(body), &doc)
				return doc.SyncError != ""
			})
			resp, _ = call("GET", "/v1/tenants/ws-000", "")
			if resp.StatusCode != 200 {
				t.Fatalf("read ws-000: %d", resp.StatusCode)
			}
			resp, body = call("PATCH", "/v1/tenants/ws-000", `{"spec":{"state":"hibernated"}}`, "If-Match", resp.Header.Get("ETag"))
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "state repository unavailable: fetch http://") {
				t.Errorf("patch while the remote refuses: %d %s", resp.StatusCode, body)
			}
			srv.Refuse(0, "")

			logs := p.logs.String()
			if !strings.Contains(logs, "sync desired state failed") {
				t.Errorf("the logs do not show the failed sync:\n%s", tail(logs, 3000))
			}
			leaks := func(where, text string) {
				t.Helper()
				if strings.Contains(text, token) {
					t.Errorf("%s holds the planted token:\n%s", where, tail(text, 3000))
				}
			}
			leaks("the reconciler's logs", logs)
			for _, b := range bodies {
				leaks("a response body", b)
			}
			err := filepath.WalkDir(cache, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				leaks(path, string(b))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
