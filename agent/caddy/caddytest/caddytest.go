// Package caddytest runs the real, pinned Caddy binary for tests: Binary
// builds it from its Go module into the cache directory the first time
// (scripts/build-caddy does the same), Start runs it with a config in a
// private home directory (its data, including the internal CA's root
// certificate under data/caddy/pki/authorities/local/root.crt) until the
// test ends.
package caddytest

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
)

// Version is the Caddy release the tests run against.
const Version = "v2.11.9"

// Binary returns the pinned Caddy binary, building it into the cache
// directory the first time (scripts/build-caddy does the same): the binary is
// $GENESIS_CACHE/caddy/<version>/caddy, or <repo>/.cache/caddy/<version>/caddy.
// A failed build fails the test: Caddy is a real part of this suite, not an
// optional one.
func Binary(t testing.TB) string {
	t.Helper()
	cache := os.Getenv("GENESIS_CACHE")
	if cache == "" {
		root, err := repoRoot()
		if err != nil {
			t.Fatalf("find the repository root for the caddy cache: %v", err)
		}
		cache = filepath.Join(root, ".cache")
	}
	dir := filepath.Join(cache, "caddy", Version)
	bin := filepath.Join(dir, "caddy")
	if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("building caddy %s into %s (first time: minutes)", Version, dir)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/caddyserver/caddy/v2/cmd/caddy@"+Version)
	cmd.Dir = dir // outside our module: go.mod and go.sum stay untouched
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		proxy, _ := exec.Command("go", "env", "GOPROXY").Output()
		t.Fatalf("building caddy %s failed (is the Go module proxy %s reachable? run scripts/build-caddy to pre-build): %v\n%s",
			Version, strings.TrimSpace(string(proxy)), err, tail(out, 4000))
	}
	t.Logf("built caddy in %s", time.Since(start).Round(time.Second))
	return bin
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort(t testing.TB) int { return testkit.FreePort(t) }

// Start runs `caddy run` with config (which must listen its admin API
// on admin) in a private home directory, waits for the admin API, and stops
// Caddy when the test ends. Caddy's log is printed if the test failed.
func Start(t testing.TB, admin string, config []byte) (home string) {
	t.Helper()
	bin := Binary(t)
	home = t.TempDir()
	cfgPath := filepath.Join(home, "caddy.json")
	if err := os.WriteFile(cfgPath, config, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Env = []string{"HOME=" + home, "XDG_DATA_HOME=" + filepath.Join(home, "data"),
		"XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "PATH=" + os.Getenv("PATH")}
	logs := &syncio.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start caddy: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("caddy log:\n%s", tail([]byte(logs.String()), 8000))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, "http://"+admin+"/config/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return home
			}
		}
		select {
		case err := <-done:
			t.Fatalf("caddy exited at start: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy admin api on %s not up after 15s (last: %v)\n%s", admin, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
