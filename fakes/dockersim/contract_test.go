package dockersim_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/agent/probe"
	"genesis.dev/fleet/fakes/dockersim"
)

// TestMain lets the test binary play the docker CLI (DOCKERSIM_TEST_AS=docker)
// and the n8n container (argument n8n-container), as genesis-demo does.
func TestMain(m *testing.M) {
	if code, ok := dockersim.AsChild(); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// stack is a compose project under test: the emulator, or with
// GENESIS_DOCKER_CONTRACT=1 the real docker CLI and engine (which must be
// able to pull or have n8nio/n8n images).
type stack struct {
	t       *testing.T
	docker  []string // argv prefix
	env     []string
	file    string
	project string
	url     string
	setups  int // owner setups n8n accepted: more than one means its state was lost
}

func newStack(t *testing.T) *stack {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	compose := fmt.Sprintf(`name: contract
services:
  n8n:
    image: docker.n8n.io/n8nio/n8n:${N8N_VERSION:-1.123.81}
    restart: unless-stopped
    ports: ["127.0.0.1:%d:5678"]
    environment:
      N8N_PORT: %d
      N8N_LISTEN_ADDRESS: 127.0.0.1
      N8N_USER_FOLDER: %s
      N8N_DIAGNOSTICS_ENABLED: "false"
`, port, port, filepath.Join(dir, "n8n"))
	if err := os.MkdirAll(filepath.Join(dir, "n8n"), 0o700); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(file, []byte(compose), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &stack{t: t, file: file, project: "contract", url: "http://127.0.0.1:" + strconv.Itoa(port)}
	if os.Getenv("GENESIS_DOCKER_CONTRACT") == "1" {
		if err := exec.Command("docker", "info").Run(); err != nil {
			t.Skipf("GENESIS_DOCKER_CONTRACT=1 but docker info fails (%v): no engine", err)
		}
		s.docker = []string{"docker"}
	} else {
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		s.docker = []string{exe}
		s.env = []string{"DOCKERSIM_TEST_AS=docker", "DOCKERSIM_STATE=" + filepath.Join(dir, "engine"), "DOCKERSIM_N8N_BIN=" + exe}
	}
	t.Cleanup(func() { s.run("", "stop", "n8n") })
	return s
}

// run runs docker compose verb args with N8N_VERSION=version (when not
// empty) and returns the exit status and stderr.
func (s *stack) run(version string, verb ...string) (int, string) {
	args := append(append(s.docker[1:], "compose", "-p", s.project, "-f", s.file), verb...)
	cmd := exec.Command(s.docker[0], args...)
	cmd.Env = append(append(os.Environ(), s.env...), "N8N_VERSION="+version)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	return code, stderr.String() + stdout.String()
}

func (s *stack) id() string {
	args := append(append(s.docker[1:], "compose", "-p", s.project, "-f", s.file), "ps", "-q", "n8n")
	cmd := exec.Command(s.docker[0], args...)
	cmd.Env = append(os.Environ(), s.env...)
	out, err := cmd.Output()
	if err != nil {
		s.t.Fatalf("ps: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// ready waits until n8n answers readiness and returns the version it
// reports to its owner (set up on first use).
func (s *stack) version() string {
	s.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.url + "/healthz/readiness")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("n8n at %s not ready: %v", s.url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	body := `{"email":"o@example.com","firstName":"O","lastName":"W","password":"Passw0rd!x"}`
	resp, err := http.Post(s.url+"/rest/owner/setup", "application/json", strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		s.setups++
	}
	resp, err = http.Post(s.url+"/rest/login", "application/json", strings.NewReader(`{"emailOrLdapLoginId":"o@example.com","password":"Passw0rd!x"}`))
	if err != nil {
		s.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		s.t.Fatalf("login after the owner setup: %s (the owner did not survive?)", resp.Status)
	}
	req, _ := http.NewRequest("GET", s.url+"/rest/settings", nil)
	for _, c := range resp.Cookies() {
		req.AddCookie(c)
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Data struct {
			VersionCli string `json:"versionCli"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		s.t.Fatal(err)
	}
	return st.Data.VersionCli
}

// down reports whether nothing answers on n8n's port.
func (s *stack) down() bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(s.url + "/healthz")
	if err == nil {
		resp.Body.Close()
	}
	return err != nil
}

// TestComposeContract checks the docker compose semantics the agent
// relies on, step by step on one project: up creates, leaves an unchanged
// running container alone, starts an unchanged stopped one and recreates a
// changed one; stop keeps the container; start without one fails; state
// survives all of it. Run against the emulator; GENESIS_DOCKER_CONTRACT=1
// runs the same table against the real docker CLI and engine (skipped
// without an engine: none exists on the development machines).
func TestComposeContract(t *testing.T) {
	s := newStack(t)
	var ids []string
	for _, step := range []struct {
		name     string
		version  string
		verb     []string
		wantCode int
		wantOut  string
		// after: "up" (answers at version), "down"
		after  string
		atVer  string
		sameID int // index into ids the container must equal (-1: a new one)
	}{
		{"start without a container fails", "1.123.81", []string{"start", "n8n"}, 1, `service "n8n" has no container to start`, "down", "", -2},
		{"stop without a container succeeds", "1.123.81", []string{"stop", "n8n"}, 0, "", "down", "", -2},
		{"up creates", "1.123.81", []string{"up", "-d", "n8n"}, 0, "", "up", "1.123.81", -1},
		{"up unchanged leaves it", "1.123.81", []string{"up", "-d", "n8n"}, 0, "", "up", "1.123.81", 0},
		{"stop keeps it", "1.123.81", []string{"stop", "n8n"}, 0, "", "down", "", -2},
		{"up unchanged starts the stopped one", "1.123.81", []string{"up", "-d", "n8n"}, 0, "", "up", "1.123.81", 0},
		{"stop again", "", []string{"stop", "n8n"}, 0, "", "down", "", -2},
		{"start starts it", "", []string{"start", "n8n"}, 0, "", "up", "1.123.81", 0},
		{"up another image recreates", "1.124.0", []string{"up", "-d", "n8n"}, 0, "", "up", "1.124.0", -1},
		{"unknown service", "1.124.0", []string{"up", "-d", "nope"}, 1, "no such service: nope", "up", "1.124.0", 1},
	} {
		t.Run(step.name, func(t *testing.T) {
			s.t = t
			code, out := s.run(step.version, step.verb...)
			if code != step.wantCode || !strings.Contains(out, step.wantOut) {
				t.Fatalf("exit %d %q, want %d and %q", code, out, step.wantCode, step.wantOut)
			}
			switch step.after {
			case "up":
				if v := s.version(); v != step.atVer {
					t.Errorf("n8n reports %q, want %q", v, step.atVer)
				}
			case "down":
				if !s.down() {
					t.Error("n8n still answers")
				}
			}
			if step.sameID == -2 {
				return
			}
			id := s.id()
			if id == "" {
				t.Fatal("no running container")
			}
			if step.sameID == -1 {
				for _, old := range ids {
					if id == old {
						t.Errorf("container %s was not recreated", id)
					}
				}
				ids = append(ids, id)
			} else if id != ids[step.sameID] {
				t.Errorf("container %s, want %s", id, ids[step.sameID])
			}
		})
	}
	if s.setups != 1 {
		t.Errorf("n8n accepted %d owner setups, want 1 (its state must survive stop, start and recreation)", s.setups)
	}
	t.Run("missing compose file", func(t *testing.T) {
		s.t = t
		old := s.file
		s.file = filepath.Join(t.TempDir(), "none.yaml")
		defer func() { s.file = old }()
		if code, out := s.run("1.124.0", "up", "-d", "n8n"); code != 1 || !strings.Contains(out, "no such file") {
			t.Errorf("exit %d %q", code, out)
		}
	})
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestComposePSContract: ps --all --format json lists a project's
// containers, running or not, in the format the agent's containers probe
// parses (agent/probe.ParsePS), and config --services its services. Like
// TestComposeContract, GENESIS_DOCKER_CONTRACT=1 runs it against the real
// docker CLI and engine.
func TestComposePSContract(t *testing.T) {
	s := newStack(t)
	ps := func() []probe.Container {
		t.Helper()
		// stdout only: a real docker may warn on stderr.
		args := append(append(s.docker[1:], "compose", "-p", s.project, "-f", s.file), "ps", "--all", "--format", "json")
		cmd := exec.Command(s.docker[0], args...)
		cmd.Env = append(os.Environ(), s.env...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("ps: %v", err)
		}
		cs, err := probe.ParsePS(out)
		if err != nil {
			t.Fatalf("ps output %q: %v", out, err)
		}
		for i := range cs {
			cs[i].Name = ""
		}
		return cs
	}
	if code, out := s.run("1.123.81", "config", "--services"); code != 0 || strings.TrimSpace(out) != "n8n" {
		t.Errorf("config --services: exit %d %q", code, out)
	}
	if cs := ps(); len(cs) != 0 {
		t.Errorf("before up: %+v", cs)
	}
	if code, out := s.run("1.123.81", "up", "-d", "n8n"); code != 0 {
		t.Fatalf("up: %d %s", code, out)
	}
	if cs := ps(); len(cs) != 1 || cs[0] != (probe.Container{Service: "n8n", State: "running"}) {
		t.Errorf("after up: %+v", cs)
	}
	if code, out := s.run("1.123.81", "stop", "n8n"); code != 0 {
		t.Fatalf("stop: %d %s", code, out)
	}
	if cs := ps(); len(cs) != 1 || cs[0].State != "exited" {
		t.Errorf("after stop: %+v", cs)
	}
}
