package probe_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/agent/probe"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// Compose v2.21+ prints one object a line (keys sorted, most values
// strings); earlier v2 releases one array (lists and maps). Both from
// docker's own output.
const (
	psV221 = `{"Command":"\"docker-entrypoint.s…\"","CreatedAt":"2024-05-02 12:21:53 +0400 +04","ExitCode":0,"Health":"healthy","ID":"d2763e024a10","Image":"postgres:16-alpine","Labels":"com.docker.compose.project=genesis,com.docker.compose.service=postgres","LocalVolumes":"1","Mounts":"ae6fbf221bbbee…","Name":"genesis-postgres-1","Names":"genesis-postgres-1","Networks":"genesis_stack","Ports":"5432/tcp","Project":"genesis","Publishers":[{"URL":"","TargetPort":5432,"PublishedPort":0,"Protocol":"tcp"}],"RunningFor":"2 minutes ago","Service":"postgres","Size":"0B","State":"running","Status":"Up 2 minutes (healthy)"}
{"Command":"\"tini -- /docker-ent…\"","CreatedAt":"2024-05-02 12:21:54 +0400 +04","ExitCode":137,"Health":"","ID":"e2763e024a11","Image":"docker.n8n.io/n8nio/n8n:1.123.81","Labels":"","LocalVolumes":"1","Mounts":"","Name":"genesis-n8n-1","Names":"genesis-n8n-1","Networks":"genesis_stack","Ports":"","Project":"genesis","Publishers":[],"RunningFor":"2 minutes ago","Service":"n8n","Size":"0B","State":"exited","Status":"Exited (137) 5 seconds ago"}
`
	psArray = `[{"ID":"aba85f638641","Name":"genesis-caddy-1","Command":"caddy run --resume","Project":"genesis","Service":"caddy","State":"running","Health":"","ExitCode":0,"Publishers":null},
 {"ID":"001f54b33d9b","Name":"genesis-postgres-1","Command":"docker-entrypoint.sh postgres","Project":"genesis","Service":"postgres","State":"restarting","Health":"","ExitCode":1,"Publishers":[{"URL":"","TargetPort":5432,"PublishedPort":0,"Protocol":"tcp"}]}]`
)

func TestParsePS(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		want []probe.Container
		err  string
	}{
		{"compose v2.21 lines", psV221, []probe.Container{
			{Service: "postgres", Name: "genesis-postgres-1", State: "running", Health: "healthy"},
			{Service: "n8n", Name: "genesis-n8n-1", State: "exited", ExitCode: 137}}, ""},
		{"compose v2.20 array", psArray, []probe.Container{
			{Service: "caddy", Name: "genesis-caddy-1", State: "running"},
			{Service: "postgres", Name: "genesis-postgres-1", State: "restarting", ExitCode: 1}}, ""},
		{"no containers", "", nil, ""},
		{"no containers, array", "[]\n", []probe.Container{}, ""},
		{"not JSON", "Cannot connect to the Docker daemon", nil, "docker compose ps: entry 1: invalid character 'C'"},
		{"a string", `"running"`, nil, "entry 1: not a JSON object"},
		{"array of strings", `["a"]`, nil, "entry 1: not a JSON object"},
		{"data after the array", `[] {}`, nil, "data after the JSON array"},
		{"no service", `{"State":"running","ExitCode":0}`, nil, "entry 1: no Service"},
		{"bad service", `{"Service":"../x","State":"running","ExitCode":0}`, nil, `entry 1: Service "../x" is not a service name`},
		{"service not a string", `{"Service":1,"State":"running","ExitCode":0}`, nil, "entry 1: field Service: want a string, got a JSON number"},
		{"no state", `{"Service":"n8n","ExitCode":0}`, nil, "entry 1: service n8n: no State"},
		{"unknown state", `{"Service":"n8n","State":"Up 2 minutes","ExitCode":0}`, nil, `service n8n: State "Up 2 minutes" is not a container state`},
		{"unknown health", `{"Service":"n8n","State":"running","Health":"meh","ExitCode":0}`, nil, `service n8n: Health "meh" is not a health state`},
		{"no exit code", `{"Service":"n8n","State":"running"}`, nil, "entry 1: service n8n: no ExitCode"},
		{"exit code a string", `{"Service":"n8n","State":"exited","ExitCode":"1"}`, nil, "entry 1: field ExitCode: want a int, got a JSON string"},
		{"exit code a fraction", `{"Service":"n8n","State":"exited","ExitCode":1.5}`, nil, "entry 1: field ExitCode: want a int, got a JSON number 1.5"},
		{"second entry bad", `{"Service":"n8n","State":"running","ExitCode":0}` + "\n" + `{"Service":"caddy"}`, nil, "entry 2: service caddy: no State"},
		{"truncated", `{"Service":"n8n","State":"run`, nil, "entry 1: unexpected EOF"},
		{"too many", strings.Repeat(`{"Service":"n8n","State":"running","ExitCode":0}`+"\n", probe.MaxContainers+1), nil, "more than 256 containers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := probe.ParsePS([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("containers (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParsePS: any output is parsed or refused with an error, never a
// panic; what is accepted has a service name and a known state.
func FuzzParsePS(f *testing.F) {
	f.Add([]byte(psV221))
	f.Add([]byte(psArray))
	f.Add([]byte(`{"Service":"n8n","State":"running","ExitCode":0}{"Service":"n8n"}`))
	f.Add([]byte(`[{"Service":"n8n","State":"exited","ExitCode":-1,"Health":"unhealthy"}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cs, err := probe.ParsePS(data)
		if err != nil {
			return
		}
		for _, c := range cs {
			if c.Service == "" || !slicesContains(probe.States, c.State) {
				t.Fatalf("accepted %+v", c)
			}
		}
		h := probe.Judge([]string{"n8n", "postgres"}, cs, nil)
		if h.OK && h.Detail != "2 of 2 services running" {
			t.Fatalf("ok with detail %q", h.Detail)
		}
	})
}

func slicesContains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func TestJudge(t *testing.T) {
	services := []string{"caddy", "n8n", "postgres"}
	up := func(s string) probe.Container { return probe.Container{Service: s, State: "running"} }
	asleep := func(s string) (string, bool) { return "hibernation", s == "n8n" }
	for _, tc := range []struct {
		name     string
		cs       []probe.Container
		expected func(string) (string, bool)
		want     schema.ComponentHealth
	}{
		{"all running", []probe.Container{up("caddy"), up("n8n"), up("postgres")}, nil,
			schema.ComponentHealth{OK: true, Detail: "3 of 3 services running"}},
		{"postgres exited", []probe.Container{up("caddy"), up("n8n"), {Service: "postgres", State: "exited", ExitCode: 1}}, nil,
			schema.ComponentHealth{OK: false, Detail: "postgres exited (1); 2 of 3 services running"}},
		{"no container, restarting, unhealthy", []probe.Container{{Service: "n8n", State: "restarting", ExitCode: 1}, {Service: "postgres", State: "running", Health: "unhealthy"}}, nil,
			schema.ComponentHealth{OK: false, Detail: "caddy has no container; n8n restarting; postgres running (unhealthy); 0 of 3 services running"}},
		{"health starting is running", []probe.Container{up("caddy"), {Service: "n8n", State: "running", Health: "starting"}, up("postgres")}, nil,
			schema.ComponentHealth{OK: true, Detail: "3 of 3 services running"}},
		{"n8n down on purpose", []probe.Container{up("caddy"), {Service: "n8n", State: "exited"}, up("postgres")}, asleep,
			schema.ComponentHealth{OK: true, Detail: "n8n exited (0): down on purpose (hibernation); 2 of 3 services running"}},
		{"only n8n down on purpose", []probe.Container{{Service: "n8n", State: "exited"}, up("postgres")}, asleep,
			schema.ComponentHealth{OK: false, Detail: "caddy has no container; n8n exited (0): down on purpose (hibernation); 1 of 3 services running"}},
		{"an orphan is not judged", []probe.Container{up("caddy"), up("n8n"), up("postgres"), {Service: "old", State: "dead"}}, nil,
			schema.ComponentHealth{OK: true, Detail: "3 of 3 services running"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, probe.Judge(services, tc.cs, tc.expected)); diff != "" {
				t.Errorf("health (-want +got):\n%s", diff)
			}
		})
	}
}

// TestContainersProbe runs the probe against the docker CLI emulator
// (fakes/dockersim, this test binary): two n8n services running, then one
// killed and one stopped, and a postgres service never started.
func TestContainersProbe(t *testing.T) {
	dir := t.TempDir()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var svc strings.Builder
	for _, name := range []string{"n8n", "worker"} {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&svc, "  %s:\n    image: docker.n8n.io/n8nio/n8n:1.123.81\n    environment:\n      N8N_PORT: %d\n      N8N_LISTEN_ADDRESS: 127.0.0.1\n      N8N_USER_FOLDER: %s\n",
			name, freePort(t), filepath.Join(dir, name))
	}
	file := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(file, []byte("name: genesis\nservices:\n"+svc.String()+"  postgres:\n    image: postgres:16-alpine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "engine")
	t.Setenv("DOCKERSIM_TEST_AS", "docker")
	t.Setenv("DOCKERSIM_STATE", state)
	t.Setenv("DOCKERSIM_N8N_BIN", exe)
	compose := func(args ...string) {
		t.Helper()
		out, err := exec.Command(exe, append([]string{"compose", "-p", "genesis", "-f", file}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker compose %v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() { os.RemoveAll(state) }) // ends the containers
	p := probe.Containers{Docker: exe, Project: "genesis", File: file}
	probeNow := func() schema.ComponentHealth {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return p.Probe(ctx)
	}
	if h := probeNow(); h.OK || h.Detail != "n8n has no container; postgres has no container; worker has no container; 0 of 3 services running" {
		t.Errorf("nothing started: %+v", h)
	}
	compose("up", "-d", "n8n")
	compose("up", "-d", "worker")
	if h := probeNow(); h.OK || h.Detail != "postgres has no container; 2 of 3 services running" {
		t.Errorf("n8n and worker up: %+v", h)
	}
	// Killed behind compose's back (an OOM kill, kill -9), and stopped.
	data, err := os.ReadFile(filepath.Join(state, "genesis", "worker.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rec struct {
		PID int `json:"pid"`
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.PID == 0 {
		t.Fatalf("worker's record %s: %v", data, err)
	}
	if err := syscall.Kill(rec.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "worker gone", func() bool { return syscall.Kill(rec.PID, 0) != nil })
	compose("stop", "n8n")
	if h := probeNow(); h.OK || h.Detail != "n8n exited (0); postgres has no container; worker exited (137); 0 of 3 services running" {
		t.Errorf("worker killed, n8n stopped: %+v", h)
	}
	p.Expected = func(s string) (string, bool) { return "hibernation", s == "n8n" }
	if h := probeNow(); h.OK || !strings.HasPrefix(h.Detail, "postgres has no container; worker exited (137); n8n exited (0): down on purpose (hibernation)") {
		t.Errorf("n8n down on purpose: %+v", h)
	}
	// docker itself fails: the detail says so.
	p.File = filepath.Join(dir, "missing.yaml")
	if h := probeNow(); h.OK || !strings.Contains(h.Detail, "docker compose config --services: exit status 1; stderr: open") {
		t.Errorf("missing compose file: %+v", h)
	}
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
