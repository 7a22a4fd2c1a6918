package dockersim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StopTimeout is how long stop waits after SIGTERM before SIGKILL
// (compose's default).
const StopTimeout = 10 * time.Second

// projectRE is what compose accepts as a project name.
var projectRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// Main runs the docker CLI subset (see the package doc) with args (without
// the program name) and environ (KEY=VALUE) and returns docker's exit
// status.
func Main(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v // later entries win, like the kernel's getenv
		}
	}
	c, err := parseArgs(args)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	state := env["DOCKERSIM_STATE"]
	if state == "" {
		fmt.Fprintln(stderr, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running? (dockersim: DOCKERSIM_STATE is not set)")
		return 1
	}
	data, err := os.ReadFile(c.file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// Interpolation reads the project directory's .env, the calling
	// process's environment winning over it (compose's precedence).
	dotenv, err := readDotEnv(filepath.Join(filepath.Dir(c.file), ".env"))
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	lookup := func(k string) (string, bool) {
		if v, ok := env[k]; ok {
			return v, true
		}
		v, ok := dotenv[k]
		return v, ok
	}
	services, err := ParseCompose(data, lookup)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	switch c.verb {
	case "config":
		// config --services: the services, one a line.
		for _, name := range slices.Sorted(maps.Keys(services)) {
			fmt.Fprintln(stdout, name)
		}
		return 0
	case "ps-json":
		if err := psJSON(state, c, services, stdout); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	svc, ok := services[c.service]
	if !ok {
		fmt.Fprintf(stderr, "no such service: %s\n", c.service)
		return 1
	}
	e := newEngine(state, c.project, c.service, env["DOCKERSIM_N8N_BIN"], stderr)
	unlock, err := e.lock()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	defer unlock()
	switch c.verb {
	case "up":
		err = e.up(ctx, svc)
	case "stop":
		err = e.stop()
	case "start":
		err = e.start(svc)
	case "ps":
		err = e.ps(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

type command struct {
	project, file, verb, service string
}

// parseArgs accepts exactly: compose -p P -f F (up -d [--no-deps] | stop |
// start | ps -q) S, compose -p P -f F ps --all --format json [S] and compose -p P
// -f F config --services.
func parseArgs(args []string) (command, error) {
	var c command
	if len(args) == 0 || args[0] != "compose" {
		return c, fmt.Errorf("dockersim: only \"docker compose\" is emulated, got %q", args)
	}
	rest := args[1:]
	for len(rest) >= 2 && strings.HasPrefix(rest[0], "-") {
		switch rest[0] {
		case "-p", "--project-name":
			c.project = rest[1]
		case "-f", "--file":
			c.file = rest[1]
		default:
			return c, fmt.Errorf("unknown flag: %s", rest[0])
		}
		rest = rest[2:]
	}
	if c.project == "" || c.file == "" {
		return c, errors.New("dockersim: -p and -f are required")
	}
	if !projectRE.MatchString(c.project) {
		return c, fmt.Errorf("invalid project name %q: must consist only of lowercase alphanumeric characters, hyphens, and underscores as well as start with a letter or number", c.project)
	}
	if len(rest) == 0 {
		return c, errors.New("dockersim: no compose command")
	}
	c.verb, rest = rest[0], rest[1:]
	switch c.verb {
	case "up":
		// up -d [--no-deps] SERVICE: this emulator starts no dependencies
		// either way.
		if len(rest) == 3 && rest[1] == "--no-deps" {
			rest = append(rest[:1:1], rest[2])
		}
		if len(rest) != 2 || rest[0] != "-d" {
			return c, errors.New("dockersim: want up -d [--no-deps] SERVICE")
		}
		rest = rest[1:]
	case "stop", "start":
		if len(rest) != 1 {
			return c, fmt.Errorf("dockersim: want %s SERVICE", c.verb)
		}
	case "ps":
		if len(rest) == 2 && rest[0] == "-q" {
			rest = rest[1:]
			break
		}
		// ps --all --format json [SERVICE]: every container of the
		// project (or of SERVICE), one JSON object a line.
		all, format := false, ""
		for len(rest) > 0 && strings.HasPrefix(rest[0], "-") {
			switch {
			case rest[0] == "-a" || rest[0] == "--all":
				all, rest = true, rest[1:]
			case rest[0] == "--format" && len(rest) > 1:
				format, rest = rest[1], rest[2:]
			case strings.HasPrefix(rest[0], "--format="):
				format, rest = strings.TrimPrefix(rest[0], "--format="), rest[1:]
			default:
				return c, fmt.Errorf("unknown flag: %s", rest[0])
			}
		}
		if !all || format != "json" || len(rest) > 1 {
			return c, errors.New("dockersim: want ps -q SERVICE or ps --all --format json [SERVICE]")
		}
		c.verb = "ps-json"
		if len(rest) == 0 {
			return c, nil
		}
	case "config":
		if len(rest) != 1 || rest[0] != "--services" {
			return c, errors.New("dockersim: want config --services")
		}
		return c, nil
	default:
		return c, fmt.Errorf("unknown docker command: \"compose %s\"", c.verb)
	}
	c.service = rest[0]
	if c.service == "" || strings.ContainsAny(c.service, "/\\.") {
		return c, fmt.Errorf("no such service: %s", c.service)
	}
	return c, nil
}

// engine acts on one service's container.
type engine struct {
	dir, name, service string
	project            string
	bin                string
	stderr             io.Writer
}

func newEngine(state, project, service, bin string, stderr io.Writer) *engine {
	return &engine{dir: filepath.Join(state, project), name: project + "-" + service + "-1", service: service,
		project: project, stderr: stderr, bin: bin}
}

func (e *engine) recordPath() string { return filepath.Join(e.dir, e.service+".json") }

func (e *engine) lock() (func(), error) {
	if err := os.MkdirAll(e.dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(e.dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// load returns the container's record (ok false: no container).
func (e *engine) load() (record, bool, error) {
	data, err := os.ReadFile(e.recordPath())
	if errors.Is(err, fs.ErrNotExist) {
		return record{}, false, nil
	}
	if err != nil {
		return record{}, false, err
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return record{}, false, fmt.Errorf("container %s: %w", e.name, err)
	}
	if r.PID != 0 && !alive(r.PID) {
		r.PID = 0 // exited by itself
	}
	return r, true, nil
}

func (e *engine) save(r record) error {
	tmp := e.recordPath() + ".tmp"
	if err := os.WriteFile(tmp, r.marshal(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, e.recordPath())
}

func (e *engine) say(action string) { fmt.Fprintf(e.stderr, " Container %s  %s\n", e.name, action) }

func (e *engine) up(_ context.Context, svc Service) error {
	r, ok, err := e.load()
	if err != nil {
		return err
	}
	if ok && r.Hash == svc.hash() {
		if r.PID != 0 {
			e.say("Running")
			return nil
		}
		return e.run(r, svc)
	}
	if ok {
		e.say("Recreate")
		if err := e.kill(&r); err != nil {
			return err
		}
		if err := os.Remove(e.recordPath()); err != nil {
			return err
		}
		e.say("Recreated")
	} else {
		e.say("Creating")
		e.say("Created")
	}
	r = record{Name: e.name, Hash: svc.hash(), Image: svc.Image, Log: filepath.Join(e.dir, e.service+".log"),
		Created: time.Now().UTC().Format(time.RFC3339Nano)}
	return e.run(r, svc)
}

func (e *engine) start(svc Service) error {
	r, ok, err := e.load()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("service %q has no container to start", e.service)
	}
	if r.PID != 0 {
		return nil
	}
	// start runs the container as it was created, whatever the file says now.
	_ = svc
	return e.run(r, Service{})
}

func (e *engine) stop() error {
	r, ok, err := e.load()
	if err != nil || !ok {
		return err
	}
	e.say("Stopping")
	if r.PID == 0 && r.Finished != "" {
		e.say("Stopped")
		return nil // stopped already: keeps its exit
	}
	if err := e.kill(&r); err != nil {
		return err
	}
	if err := e.save(r); err != nil {
		return err
	}
	e.say("Stopped")
	return nil
}

// ps prints the id of the running container (nothing when none runs).
func (e *engine) ps(stdout io.Writer) error {
	r, ok, err := e.load()
	if err != nil || !ok || r.PID == 0 {
		return err
	}
	sum := sha256.Sum256([]byte(r.Name + "\x00" + r.Created))
	fmt.Fprintln(stdout, hex.EncodeToString(sum[:]))
	return nil
}

// kill stops r's process: SIGTERM, SIGKILL after StopTimeout. It records
// the exit as docker shows it: 0 for a container that stopped on SIGTERM,
// 137 (128+SIGKILL) for one that had to be killed or had already ended by
// itself (the CLI is not its parent and cannot see its status; tests end
// containers with SIGKILL).
func (e *engine) kill(r *record) error {
	if r.PID == 0 {
		if r.Started != "" && r.Finished == "" {
			r.ExitCode, r.Finished = 137, time.Now().UTC().Format(time.RFC3339Nano)
		}
		return nil
	}
	_ = syscall.Kill(r.PID, syscall.SIGTERM)
	deadline := time.Now().Add(StopTimeout)
	code := 0
	for alive(r.PID) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(r.PID, syscall.SIGKILL)
			code = 137
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.PID, r.ExitCode, r.Finished = 0, code, time.Now().UTC().Format(time.RFC3339Nano)
	return nil
}

// run starts r's container process. env is the service's environment for
// a new container; a container started again keeps the one it was
// created with (kept in its env file).
func (e *engine) run(r record, svc Service) error {
	envFile := filepath.Join(e.dir, e.service+".env.json")
	var env map[string]string
	if svc.Environment != nil || svc.Image != "" {
		data, _ := json.Marshal(svc.Environment)
		if err := os.WriteFile(envFile, data, 0o600); err != nil {
			return err
		}
		env = svc.Environment
	} else {
		data, err := os.ReadFile(envFile)
		if err != nil {
			return fmt.Errorf("container %s: %w", e.name, err)
		}
		if err := json.Unmarshal(data, &env); err != nil {
			return fmt.Errorf("container %s: %w", e.name, err)
		}
	}
	if !strings.Contains(r.Image, "n8nio/n8n:") {
		return fmt.Errorf("Error response from daemon: dockersim runs only n8n images, not %q", r.Image)
	}
	bin := e.bin
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		bin = exe
	}
	logf, err := os.OpenFile(r.Log, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "n8n-container")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DOCKERSIM_IMAGE=" + r.Image, "DOCKERSIM_RECORD=" + e.recordPath()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	e.say("Starting")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("Error response from daemon: %w", err)
	}
	r.PID = cmd.Process.Pid
	r.Started, r.Finished, r.ExitCode = time.Now().UTC().Format(time.RFC3339Nano), "", 0
	_ = cmd.Process.Release()
	if err := e.save(r); err != nil {
		return err
	}
	e.say("Started")
	return nil
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // no /proc: trust kill
	}
	// pid (comm) S ...: the state follows the last ')'.
	if i := strings.LastIndexByte(string(data), ')'); i >= 0 && i+2 < len(data) {
		return data[i+2] != 'Z'
	}
	return true
}

// AsChild runs this process as what the emulator started it as, if it was:
// the docker CLI when $DOCKERSIM_TEST_AS is "docker" (a test binary
// standing in for docker), or an n8n container when the first argument is
// "n8n-container". It returns false for any other process. Test binaries
// call it first thing in TestMain.
func AsChild() (exitCode int, ok bool) {
	switch {
	case os.Getenv("DOCKERSIM_TEST_AS") == "docker":
		return Main(context.Background(), os.Args[1:], os.Environ(), os.Stdout, os.Stderr), true
	case len(os.Args) > 1 && os.Args[1] == "n8n-container":
		if err := RunContainer(context.Background(), os.Getenv, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

// readDotEnv reads a compose .env file (none: empty): KEY=VALUE lines,
// blank lines and # comments skipped, a value in matching single or
// double quotes unquoted (without escapes).
func readDotEnv(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(strings.TrimPrefix(k, "export "))
		if !ok || k == "" {
			return nil, fmt.Errorf("failed to read %s: line %d: unexpected character in variable name", path, n+1)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out[k] = v
	}
	return out, nil
}
