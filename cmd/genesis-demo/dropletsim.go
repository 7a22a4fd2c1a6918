package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"genesis.dev/fleet/agent"
	"genesis.dev/fleet/agent/converge"
	"genesis.dev/fleet/fakes/n8nemu"
	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/logflag"
	"genesis.dev/fleet/internal/procgroup"
	"genesis.dev/fleet/internal/supervise"
)

const dropletSimUsage = `Usage: genesis-demo droplet --caddy-bin PATH [--agent-bin PATH] [--disk DIR] [--bind IP] [--pid-log FILE]
       [--acme-ca URL [--acme-ca-roots FILE]] [--http-port N] [--https-port N] [-- AGENT-RUN-FLAGS...]

The "init" of a droplet simulated by the DigitalOcean simulator: the demo
runs it as the simulator's boot command ('exec genesis-demo droplet ...'), once
per booted droplet. It runs what a real droplet runs, on loopback:

  - n8n: the n8n emulator (fakes/n8nemu), in this process, on a free
    port of 127.0.0.1. It keeps its data in memory, so every boot starts an
    empty n8n (as if its database were new); the agent's records of the
    previous one are dropped from its state directory so it bootstraps the
    new one and converges everything again;
  - Caddy: the real binary --caddy-bin, its admin API on a free port of
    127.0.0.1, its data (the internal CA, certificates) in DIR/caddy;
  - genesis-agent run --insecure-http --converge=true (the reconciler of
    the demo is plain http on loopback), pointed at both: Caddy's HTTP and
    HTTPS listeners on free ports of --bind (the droplet's 127.1.x.y
    address), certificates from Caddy's internal CA (no ACME), n8n's version
    left alone (--n8n-runtime none), its state in DIR/genesis-agent. Flags
    after -- are added to its command line.

With --acme-ca the droplet's certificates come from that ACME directory
instead (a test CA such as Pebble; the agent's --acme-ca), whose API
Caddy trusts through the PEM file --acme-ca-roots (the agent's
--acme-ca-roots; default: the system's roots). The CA validates a name on
the address it resolves to, at fixed ports: --http-port (HTTP-01) and
--https-port (TLS-ALPN-01) put Caddy's listeners on those ports of --bind
(default: free ports), where its challenge solvers answer too. Several
droplets on distinct 127.1.x.y addresses share the ports.

The droplet's disk DIR is --disk, else $DOSIM_DISK_DIR. --bind defaults to
$DOSIM_DROPLET_IP, else 127.0.0.1. The agent finds its config and droplet id
in the simulator's DOSIM_* variables.

Once everything runs, DIR/droplet-sim.json holds the addresses and process
ids (droplet_id, ip, n8n_url, caddy_admin, http_port, https_port, ask,
caddy_root, pid, caddy_pid, agent_pid), so the demo and tests can send
requests and kill the agent. With --pid-log every process started is
appended to FILE as "PID ROLE DROPLET" (the demo checks they are all gone
at exit).

The agent runs like under systemd's Restart=always: the first boot installs
--agent-bin as slot a of DIR/agent (agent slots: DIR/agent/current ->
slots/a/genesis-agent), and the agent is started from DIR/agent/current
and started again 1s after it exits, so it can upgrade itself (exit status
3 after switching current). Its upgrade watcher runs detached and asks for
a restart with SIGHUP to this process, which restarts the agent. An agent
killed with SIGKILL is not restarted: n8n and Caddy keep running and the
droplet falls silent (the demo's kill-agent step). SIGTERM or SIGINT stops
the agent and Caddy (SIGKILL after --grace) and the emulator, then exits;
the children also get SIGKILL if this process dies. Logs are JSON on
stderr; Caddy's and the agent's go there too.`

// dropletInfoFile names the file droplet-sim writes on the droplet's disk.
const dropletInfoFile = "droplet-sim.json"

// dropletInfo is what droplet-sim.json holds: where a simulated droplet's
// parts listen and their process ids.
type dropletInfo struct {
	DropletID  string `json:"droplet_id"`
	IP         string `json:"ip"`
	N8NURL     string `json:"n8n_url"`
	CaddyAdmin string `json:"caddy_admin"`
	HTTPPort   int    `json:"http_port"`
	HTTPSPort  int    `json:"https_port"`
	Ask        string `json:"ask"`
	CaddyRoot  string `json:"caddy_root"`
	PID        int    `json:"pid"`
	CaddyPID   int    `json:"caddy_pid"`
	AgentPID   int    `json:"agent_pid"`
}

func runDropletSim(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("droplet-sim", dropletSimUsage)
	caddyBin := fs.String("caddy-bin", "", "the Caddy `binary` to run (make caddy builds it)")
	agentBin := fs.String("agent-bin", "", "the genesis-agent `binary` (default: beside this binary)")
	disk := fs.String("disk", "", "the droplet's disk `directory` (default $DOSIM_DISK_DIR)")
	bind := fs.String("bind", "", "`address` Caddy's HTTP and HTTPS listeners bind to (default $DOSIM_DROPLET_IP, else 127.0.0.1)")
	pidLog := fs.String("pid-log", "", "append every process started to this `file`")
	grace := fs.Duration("grace", 5*time.Second, "how long children get after SIGTERM before SIGKILL")
	logFormat := fs.String("log-format", "json", "log `format`: text or json")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	pgURL := fs.String("pg-url", "", "admin `URL` of a Postgres for the droplet's n8n database, which the agent backs up (default $GENESIS_FLEET_PG_URL; none: no database, no backups)")
	pgBin := fs.String("pg-bin", "", "`directory` of pg_dump and pg_restore (default $GENESIS_FLEET_PG_BIN)")
	acmeCA := fs.String("acme-ca", "", "ACME directory `URL` the droplet's certificates come from (default: Caddy's internal CA)")
	acmeCARoots := fs.String("acme-ca-roots", "", "PEM `file` of the CA certificates to trust for --acme-ca's API (default: the system's roots)")
	httpPort := fs.Int("http-port", 0, "`port` of Caddy's HTTP listener on --bind, where HTTP-01 is answered (default: a free port)")
	httpsPort := fs.Int("https-port", 0, "`port` of Caddy's HTTPS listener on --bind, where TLS-ALPN-01 is answered (default: a free port)")
	n8nRuntime := fs.String("n8n-runtime", "emulator", "how n8n runs: emulator (in this process, empty at every boot, version left alone) or compose (through docker compose and the docker emulator: the agent switches its version; state kept in its database)")
	var agentArgs []string
	if i := slices.Index(args, "--"); i >= 0 {
		args, agentArgs = args[:i], args[i+1:]
	}
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cliexit.Usage("droplet-sim: unexpected arguments %q (agent flags go after --)", pos)
	}
	base, err := logflag.New(e.Stderr, *logFormat, *logLevel)
	if err != nil {
		return cliexit.Usage("droplet-sim: %v", err)
	}
	log := base.With("component", "droplet-sim")
	if *caddyBin == "" {
		return cliexit.Usage("droplet-sim: --caddy-bin is required")
	}
	if *agentBin == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		*agentBin = filepath.Join(filepath.Dir(exe), "genesis-agent")
	}
	if *disk == "" {
		*disk = e.Getenv("DOSIM_DISK_DIR")
	}
	if *disk == "" {
		return cliexit.Usage("droplet-sim: --disk or $DOSIM_DISK_DIR is required")
	}
	if *bind == "" {
		*bind = firstNonEmpty(e.Getenv("DOSIM_DROPLET_IP"), "127.0.0.1")
	}
	if *n8nRuntime != "emulator" && *n8nRuntime != "compose" {
		return cliexit.Usage("droplet-sim: --n8n-runtime: want emulator or compose, got %q", *n8nRuntime)
	}
	if ip := net.ParseIP(*bind); ip == nil || !ip.IsLoopback() {
		return cliexit.Usage("droplet-sim: --bind %q: want a loopback IP address", *bind)
	}
	if *acmeCA != "" {
		if u, err := url.Parse(*acmeCA); err != nil || u.Scheme != "https" || u.Host == "" {
			return cliexit.Usage("droplet-sim: --acme-ca %q: want an https URL", *acmeCA)
		}
	}
	if *acmeCARoots != "" {
		if *acmeCA == "" {
			return cliexit.Usage("droplet-sim: --acme-ca-roots needs --acme-ca")
		}
		if fi, err := os.Stat(*acmeCARoots); err != nil || !fi.Mode().IsRegular() {
			return cliexit.Usage("droplet-sim: --acme-ca-roots %s: not a file", *acmeCARoots)
		}
	}
	for _, p := range []struct {
		flag string
		port int
	}{{"--http-port", *httpPort}, {"--https-port", *httpsPort}} {
		if p.port < 0 || p.port > 65535 {
			return cliexit.Usage("droplet-sim: %s: %d is not a port (1-65535, 0: a free one)", p.flag, p.port)
		}
	}
	if *httpPort != 0 && *httpPort == *httpsPort {
		return cliexit.Usage("droplet-sim: --http-port and --https-port are both %d", *httpPort)
	}
	for _, b := range []struct{ flag, path string }{{"--caddy-bin", *caddyBin}, {"--agent-bin", *agentBin}} {
		if fi, err := os.Stat(b.path); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
			return cliexit.Usage("droplet-sim: %s %s: not an executable file", b.flag, b.path)
		}
	}
	s := &dropletSim{log: log, stderr: e.Stderr, grace: *grace, pidLog: *pidLog,
		acmeCA: *acmeCA, acmeCARoots: *acmeCARoots,
		info: dropletInfo{DropletID: e.Getenv("DOSIM_DROPLET_ID"), IP: *bind, PID: os.Getpid(),
			HTTPPort: *httpPort, HTTPSPort: *httpsPort}}
	if s.pidLog != "" {
		if err := appendLine(s.pidLog, fmt.Sprintf("%d droplet-sim %s", s.info.PID, s.info.DropletID)); err != nil {
			log.Warn("pid log", "err", err)
		}
	}
	// Like cloud-init, keep the user data on the droplet's disk
	// (/var/lib/cloud/instance/user-data.txt on a real one; 0600).
	if ud := e.Getenv("DOSIM_USER_DATA_FILE"); ud != "" {
		if b, err := os.ReadFile(ud); err == nil {
			if err := os.WriteFile(filepath.Join(*disk, "user-data.txt"), b, 0o600); err != nil {
				log.Warn("keep user data on the disk", "err", err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(*disk, brokenFile)); err == nil {
		log.Error("droplet broken: its disk refuses to boot", "droplet", s.info.DropletID)
		return fmt.Errorf("droplet %s is broken (%s on its disk)", s.info.DropletID, brokenFile)
	}
	defer s.stop()
	if *pgURL = firstNonEmpty(*pgURL, e.Getenv("GENESIS_FLEET_PG_URL")); *pgURL != "" {
		db, err := openDropletDB(ctx, *pgURL, firstNonEmpty(*pgBin, e.Getenv("GENESIS_FLEET_PG_BIN")), s.info.DropletID)
		if err != nil {
			log.Error("droplet start failed", "err", err)
			return err
		}
		data := filepath.Join(*disk, "n8n-data")
		if err := os.MkdirAll(data, 0o700); err != nil {
			return err
		}
		// n8n makes its encryption key on its first start; a restore
		// brings the backed-up one back.
		if _, err := os.Stat(filepath.Join(data, "config")); os.IsNotExist(err) {
			if err := os.WriteFile(filepath.Join(data, "config"), []byte(`{"encryptionKey":"droplet-`+s.info.DropletID+`"}`+"\n"), 0o600); err != nil {
				return err
			}
		}
		agentArgs = append(db.agentArgs(data), agentArgs...)
		go db.write(ctx, s.info.DropletID, log)
		log.Info("n8n database", "droplet", s.info.DropletID, "database", "n8n_"+s.info.DropletID)
	} else {
		agentArgs = append([]string{"--backups=false"}, agentArgs...)
	}
	if *n8nRuntime == "compose" {
		// n8n's state is a file in its data directory on the droplet's
		// disk (not the droplet's database, which droplet-sim's writer
		// owns): a snapshot carries it to the woken droplet, as the
		// Postgres volume does on a real droplet, and the agent's
		// backups (database and data directory) cover it.
		if s.compose, err = newComposeN8N(*disk, ""); err != nil {
			return err
		}
	}
	if err := s.start(ctx, *disk, *caddyBin, *agentBin, agentArgs); err != nil {
		log.Error("droplet start failed", "err", err)
		return err
	}
	return s.wait(ctx)
}

// dropletSim is one running simulated droplet.
type dropletSim struct {
	log    *slog.Logger
	stderr io.Writer
	grace  time.Duration
	pidLog string
	info   dropletInfo
	// acmeCA and acmeCARoots are --acme-ca and --acme-ca-roots: ACME
	// instead of Caddy's internal CA when acmeCA is set.
	acmeCA, acmeCARoots string

	n8n     *http.Server
	compose *composeN8N // with --n8n-runtime compose, instead of n8n
	caddy   *child
	// agent supervises genesis-agent; agentDone closes when it stopped
	// restarting it (agentErr is why).
	agent     *supervise.Supervisor
	agentStop context.CancelFunc
	agentDone chan struct{}
	agentErr  error
}

// child is a process droplet-sim started; done closes when it was reaped.
type child struct {
	role string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (s *dropletSim) start(ctx context.Context, disk, caddyBin, agentBin string, agentArgs []string) error {
	state := filepath.Join(disk, "genesis-agent")
	n8nArgs, agentEnv := []string{"--n8n-runtime", "none"}, os.Environ()
	if s.compose != nil {
		// n8n keeps its state in its database: the agent's records stay.
		// Like cloud-init, a new droplet leaves n8n to the agent, which
		// starts it at its first manifest's version; a rebooted one runs
		// the version its agent committed.
		if _, err := os.Stat(filepath.Join(state, "n8n-version")); err == nil {
			if err := s.compose.compose(ctx, "up", "-d", "n8n"); err != nil {
				return err
			}
		}
		s.info.N8NURL = s.compose.url
		n8nArgs, agentEnv = s.compose.agentArgs(), s.compose.env
		s.log.Info("n8n container started", "url", s.info.N8NURL, "compose_file", s.compose.file)
	} else {
		// The emulator below starts empty: the agent must not use the login and
		// ids it recorded for an earlier boot's n8n.
		if err := converge.Forget(state); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("n8n emulator listen: %w", err)
		}
		s.n8n = &http.Server{Handler: n8nemu.New(seedOf(s.info.DropletID)), ReadHeaderTimeout: 10 * time.Second}
		go s.n8n.Serve(ln)
		s.info.N8NURL = "http://" + ln.Addr().String()
		s.log.Info("n8n emulator started", "url", s.info.N8NURL, "version", n8nemu.Version)
		n8nArgs = append(n8nArgs, "--n8n-url", s.info.N8NURL)
	}

	admin, err := freePortOn("127.0.0.1")
	if err != nil {
		return err
	}
	s.info.CaddyAdmin = net.JoinHostPort("127.0.0.1", strconv.Itoa(admin))
	// Fixed ports (--http-port, --https-port) or free ones of the
	// droplet's address.
	if s.info.HTTPPort == 0 {
		if s.info.HTTPPort, err = freePortOn(s.info.IP); err != nil {
			return err
		}
	}
	if s.info.HTTPSPort == 0 {
		if s.info.HTTPSPort, err = freePortOn(s.info.IP); err != nil {
			return err
		}
	}
	ask, err := freePortOn("127.0.0.1")
	if err != nil {
		return err
	}
	s.info.Ask = net.JoinHostPort("127.0.0.1", strconv.Itoa(ask))

	home := filepath.Join(disk, "caddy")
	data := filepath.Join(home, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return err
	}
	s.info.CaddyRoot = filepath.Join(data, "caddy", "pki", "authorities", "local", "root.crt")
	initial := filepath.Join(home, "initial.json")
	// Like a fresh droplet: only the admin API, until the agent loads the
	// whole config.
	body := fmt.Sprintf(`{"admin":{"listen":%q,"config":{"persist":false}}}`, s.info.CaddyAdmin)
	if err := os.WriteFile(initial, []byte(body), 0o600); err != nil {
		return err
	}
	caddyEnv := []string{"HOME=" + home, "XDG_DATA_HOME=" + data, "XDG_CONFIG_HOME=" + filepath.Join(home, "config"), "PATH=" + os.Getenv("PATH")}
	if s.caddy, err = s.spawn("caddy", caddyBin, []string{"run", "--config", initial}, caddyEnv); err != nil {
		return err
	}
	s.info.CaddyPID = s.caddy.cmd.Process.Pid
	if err := waitHTTP(ctx, "http://"+s.info.CaddyAdmin+"/config/", s.caddy.done, 30*time.Second); err != nil {
		return fmt.Errorf("caddy admin API: %w", err)
	}
	s.log.Info("caddy started", "admin", s.info.CaddyAdmin, "pid", s.info.CaddyPID)

	tlsArgs := []string{"--caddy-internal-tls"}
	if s.acmeCA != "" {
		tlsArgs = []string{"--acme-ca", s.acmeCA}
		if s.acmeCARoots != "" {
			tlsArgs = append(tlsArgs, "--acme-ca-roots", s.acmeCARoots)
		}
	}
	runArgs := append([]string{"run", "--insecure-http", "--converge=true"}, n8nArgs...)
	runArgs = append(runArgs, "--caddy-admin", s.info.CaddyAdmin, "--ask-listen", s.info.Ask,
		"--caddy-bind", s.info.IP, "--caddy-http-port", strconv.Itoa(s.info.HTTPPort),
		"--caddy-https-port", strconv.Itoa(s.info.HTTPSPort))
	runArgs = append(append(append(runArgs, tlsArgs...), "--state-dir", state), agentArgs...)
	if err := s.superviseAgent(disk, agentBin, runArgs, agentEnv); err != nil {
		return err
	}
	s.log.Info("droplet up", "droplet", s.info.DropletID, "ip", s.info.IP, "https_port", s.info.HTTPSPort,
		"http_port", s.info.HTTPPort)
	return nil
}

// superviseAgent installs agentBin as slot a of DIR/agent on the first
// boot and runs DIR/agent/current under a supervisor: restarted after
// every exit but a SIGKILL, each start's pid recorded in droplet-sim.json
// (written first when the first agent starts).
func (s *dropletSim) superviseAgent(disk, agentBin string, runArgs, env []string) error {
	root := filepath.Join(disk, "agent")
	if err := agent.Install(root, agentBin); err != nil {
		return err
	}
	runArgs = append(runArgs, "--agent-root", root, "--upgrade-watcher", "detached",
		"--upgrade-restart", "kill -HUP "+strconv.Itoa(os.Getpid()))
	started := make(chan error, 1)
	var mu sync.Mutex
	s.agent = supervise.New(supervise.Config{
		Path: filepath.Join(root, "current"), Args: runArgs, Env: env, Stdout: s.stderr, Stderr: s.stderr,
		Delay: time.Second, Grace: s.grace, Attr: childAttr, Logger: s.log,
		RestartIf: func(err error) bool {
			var ee *exec.ExitError
			ws, ok := syscall.WaitStatus(0), false
			if errors.As(err, &ee) {
				ws, ok = ee.Sys().(syscall.WaitStatus)
			}
			return !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL
		},
		OnStart: func(pid int) {
			mu.Lock()
			defer mu.Unlock()
			s.info.AgentPID = pid
			if s.pidLog != "" {
				if err := appendLine(s.pidLog, fmt.Sprintf("%d agent %s", pid, s.info.DropletID)); err != nil {
					s.log.Warn("pid log", "err", err)
				}
			}
			info, err := json.MarshalIndent(s.info, "", "  ")
			if err == nil {
				err = writeFileAtomic(filepath.Join(disk, dropletInfoFile), append(info, '\n'))
			}
			s.log.Info("agent started", "droplet", s.info.DropletID, "agent_pid", pid)
			select {
			case started <- err:
			default:
			}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	s.agentStop, s.agentDone = cancel, make(chan struct{})
	go func() {
		s.agentErr = s.agent.Run(ctx)
		close(s.agentDone)
	}()
	select {
	case err := <-started:
		return err
	case <-s.agentDone:
		return fmt.Errorf("start agent: %v", s.agentErr)
	}
}

// wait runs until ctx ends (SIGTERM/SIGINT) or Caddy dies. An agent that
// exits leaves the droplet up and silent.
func (s *dropletSim) wait(ctx context.Context) error {
	agentDone := s.agentDone
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			s.log.Info("stopping", "droplet", s.info.DropletID)
			return nil
		case <-hup:
			s.log.Info("restart of the agent asked (its upgrade watcher)", "droplet", s.info.DropletID)
			s.agent.Restart()
		case <-agentDone:
			s.log.Warn("agent exited; n8n and caddy keep running", "droplet", s.info.DropletID, "err", errString(s.agentErr))
			agentDone = nil
		case <-s.caddy.done:
			s.log.Error("caddy exited", "droplet", s.info.DropletID, "err", errString(s.caddy.err))
			return fmt.Errorf("caddy exited: %v", s.caddy.err)
		}
	}
}

// stop ends the agent, then Caddy (SIGTERM, SIGKILL after the grace
// period), then the emulator.
func (s *dropletSim) stop() {
	if s.agentStop != nil {
		s.agentStop()
		<-s.agentDone
	}
	if s.caddy != nil {
		procgroup.Stop(s.caddy.cmd, s.caddy.done, s.grace)
	}
	if s.compose != nil {
		if err := s.compose.stop(); err != nil {
			s.log.Warn("stop n8n container", "err", err)
		}
	}
	if s.n8n != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.n8n.Shutdown(sctx)
		cancel()
		_ = s.n8n.Close()
	}
	s.log.Info("stopped", "droplet", s.info.DropletID)
}

func (s *dropletSim) spawn(role, bin string, args, env []string) (*child, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = s.stderr, s.stderr
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", role, err)
	}
	c := &child{role: role, cmd: cmd, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	if s.pidLog != "" {
		if err := appendLine(s.pidLog, fmt.Sprintf("%d %s %s", cmd.Process.Pid, role, s.info.DropletID)); err != nil {
			s.log.Warn("pid log", "err", err)
		}
	}
	return c, nil
}

// seedOf makes the emulator's ids repeatable per droplet.
func seedOf(droplet string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(droplet))
	return h.Sum64()
}

// freePortOn returns a TCP port that was free on host a moment ago.
func freePortOn(host string) (int, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find a free port on %s: %w", host, err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitHTTP waits until url answers 200, the process behind it exits
// (exited closes), or the timeout passes.
func waitHTTP(ctx context.Context, url string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-exited:
			return errors.New("the process exited")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func appendLine(path, line string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// parseDropletInfo reads droplet-sim.json strictly: unknown fields, a
// missing address or a bad port or pid are errors naming the field.
func parseDropletInfo(data []byte) (dropletInfo, error) {
	var in dropletInfo
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return dropletInfo{}, fmt.Errorf("%s: %w", dropletInfoFile, err)
	}
	if dec.More() {
		return dropletInfo{}, fmt.Errorf("%s: trailing data after the object", dropletInfoFile)
	}
	bad := func(field string, v any) error {
		return fmt.Errorf("%s: %s: invalid value %v", dropletInfoFile, field, v)
	}
	if net.ParseIP(in.IP) == nil {
		return dropletInfo{}, bad("ip", strconv.Quote(in.IP))
	}
	for _, a := range []struct{ field, addr string }{{"caddy_admin", in.CaddyAdmin}, {"ask", in.Ask}} {
		if _, p, err := net.SplitHostPort(a.addr); err != nil || p == "" {
			return dropletInfo{}, bad(a.field, strconv.Quote(a.addr))
		}
	}
	if !strings.HasPrefix(in.N8NURL, "http://") {
		return dropletInfo{}, bad("n8n_url", strconv.Quote(in.N8NURL))
	}
	for _, p := range []struct {
		field string
		port  int
	}{{"http_port", in.HTTPPort}, {"https_port", in.HTTPSPort}} {
		if p.port < 1 || p.port > 65535 {
			return dropletInfo{}, bad(p.field, p.port)
		}
	}
	for _, p := range []struct {
		field string
		pid   int
	}{{"pid", in.PID}, {"caddy_pid", in.CaddyPID}, {"agent_pid", in.AgentPID}} {
		if p.pid < 2 {
			return dropletInfo{}, bad(p.field, p.pid)
		}
	}
	return in, nil
}
