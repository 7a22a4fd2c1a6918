package cloudinit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/deploy/droplet"
	"genesis.dev/fleet/schema"
)

// TestAgentInstall renders user data and runs its genesis-agent-install for
// real (sh, curl, sha256sum) against binaries served on 127.0.0.1: a
// download whose SHA-256 is the pinned one is installed; a tampered one, a
// plain http:// URL without the insecure setting and a missing pin are
// refused with a message naming the reason, and nothing is installed (no
// binary, no temporary file).
func TestAgentInstall(t *testing.T) {
	for _, tool := range []string{"sh", "curl", "sha256sum"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed: the test runs the droplet's install script for real", tool)
		}
	}
	good := []byte("#!/bin/sh\necho genesis-agent good\n")
	tampered := []byte("#!/bin/sh\necho genesis-agent tampered\n")
	sum := sha256.Sum256(good)
	goodSum := hex.EncodeToString(sum[:])
	var hits atomic.Int32
	serve := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/good":
			rw.Write(good)
		case "/tampered":
			rw.Write(tampered)
		default:
			http.NotFound(rw, r)
		}
	})
	tlsSrv := httptest.NewTLSServer(serve)
	defer tlsSrv.Close()
	plainSrv := httptest.NewServer(serve)
	defer plainSrv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: tlsSrv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	agent := schema.AgentConfig{ReconcilerURL: "https://r.example", SigningKeys: []string{"k"}, Workspace: "ws-a", DropletName: "d", Token: "t"}
	tests := []struct {
		name string
		in   Input
		// edit changes a rendered file (path -> new content) before
		// the script runs: what an old snapshot or a hand edit leaves.
		edit       map[string]string
		wantOK     bool
		wantStderr string
	}{
		{"https, pinned sum", Input{Agent: agent, AgentURL: tlsSrv.URL + "/good", AgentSHA256: goodSum}, nil, true, ""},
		{"https, tampered binary", Input{Agent: agent, AgentURL: tlsSrv.URL + "/tampered", AgentSHA256: goodSum}, nil, false,
			"genesis-agent-install: the download's SHA-256 is "},
		{"plain http without insecure", Input{Agent: agent, AgentURL: tlsSrv.URL + "/good", AgentSHA256: goodSum},
			map[string]string{AgentURLPath: plainSrv.URL + "/good\n"}, false, "the download URL is plain http"},
		{"plain http with insecure", Input{Agent: agent, AgentURL: plainSrv.URL + "/good", AgentSHA256: goodSum, InsecureHTTP: true}, nil, true, ""},
		{"no pinned sum", Input{Agent: agent, AgentURL: tlsSrv.URL + "/good", AgentSHA256: goodSum},
			map[string]string{AgentSHA256Path: "\n"}, false, "holds no lowercase hex SHA-256"},
		{"download fails", Input{Agent: agent, AgentURL: tlsSrv.URL + "/missing", AgentSHA256: goodSum}, nil, false, "download failed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ud, err := Render(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			var cc struct {
				WriteFiles []File `yaml:"write_files"`
			}
			if err := yaml.Unmarshal(ud, &cc); err != nil {
				t.Fatal(err)
			}
			etc, binDir := t.TempDir(), t.TempDir()
			var script string
			for _, f := range cc.WriteFiles {
				if v, ok := tc.edit[f.Path]; ok {
					f.Content = v
				}
				switch {
				case f.Path == "/usr/local/sbin/genesis-agent-install":
					script = filepath.Join(etc, "genesis-agent-install")
					err = os.WriteFile(script, []byte(f.Content), 0o755)
				case strings.HasPrefix(f.Path, "/etc/genesis/"):
					err = os.WriteFile(filepath.Join(etc, filepath.Base(f.Path)), []byte(f.Content), 0o600)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if script == "" {
				t.Fatal("no genesis-agent-install in the user data")
			}
			before := hits.Load()
			bin := filepath.Join(binDir, "slots", "a", "genesis-agent")
			cmd := exec.Command("sh", script, binDir, etc, filepath.Join(etc, "no-image-binary"))
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "CURL_CA_BUNDLE=" + ca, "HOME=" + t.TempDir()}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err = cmd.Run()
			if got := err == nil; got != tc.wantOK {
				t.Fatalf("script succeeded = %v, want %v; stderr:\n%s", got, tc.wantOK, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.wantStderr)
			}
			entries, _ := os.ReadDir(binDir)
			if !tc.wantOK {
				if len(entries) != 0 {
					t.Errorf("refused, yet %s holds %v", binDir, entries)
				}
				if strings.Contains(stderr.String(), "://") {
					t.Errorf("the message names the URL: %q", stderr.String())
				}
				if strings.Contains(tc.wantStderr, "plain http") && hits.Load() != before {
					t.Error("a refused plain http URL was fetched")
				}
				return
			}
			got, err := os.ReadFile(bin)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(good) {
				t.Errorf("installed %q, want %q", got, good)
			}
			if fi, _ := os.Stat(bin); fi.Mode().Perm() != 0o755 {
				t.Errorf("mode %v, want 0755", fi.Mode().Perm())
			}
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if strings.Join(names, " ") != "current slots" {
				t.Errorf("%s holds %v, want current and slots", binDir, names)
			}
			if target, err := os.Readlink(filepath.Join(binDir, "current")); err != nil || target != "slots/a/genesis-agent" {
				t.Errorf("current -> %q (%v), want slots/a/genesis-agent", target, err)
			}
			// Installed once: a second boot leaves it alone.
			before = hits.Load()
			if out, err := exec.Command("sh", script, binDir, etc).CombinedOutput(); err != nil || hits.Load() != before {
				t.Errorf("second run: err %v, downloads %d; %s", err, hits.Load()-before, out)
			}
		})
	}
}

// TestAgentUnitTransport: the agent's unit never allows plain http itself;
// only the environment file cloud-init writes (GENESIS_AGENT_INSECURE_HTTP,
// false unless the reconciler runs with --agent-insecure-http) may.
func TestAgentUnitTransport(t *testing.T) {
	var envFiles []string
	for _, line := range strings.Split(string(droplet.AgentUnit()), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "#") {
			continue
		}
		if strings.Contains(line, "insecure") {
			t.Errorf("the agent unit allows plain http: %q", line)
		}
		if v, ok := strings.CutPrefix(line, "EnvironmentFile="); ok {
			envFiles = append(envFiles, v)
		}
	}
	if want := []string{"-" + AgentEnvPath}; !slices.Equal(envFiles, want) {
		t.Errorf("EnvironmentFile = %q, want %q", envFiles, want)
	}
}
