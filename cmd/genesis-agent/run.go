package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/agent"
	"genesis.dev/fleet/agent/backup"
	"genesis.dev/fleet/agent/caddy"
	"genesis.dev/fleet/agent/converge"
	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/agent/probe"
	"genesis.dev/fleet/internal/logflag"
	"genesis.dev/fleet/schema"

	"genesis.dev/fleet/internal/cliexit"
)

const runUsage = `Usage: genesis-agent run [flags]

Enrolls this droplet with the reconciler (once per droplet id), then
long-polls its signed manifest, verifies and applies each new one, and sends
a heartbeat every --heartbeat-interval. A rejected manifest leaves the last
good one running; the reason goes out with the next heartbeat. Logs go to
stderr. SIGINT/SIGTERM stop it.

The agent config (reconciler URL, signing keys, workspace, droplet name,
one-time token) is the JSON file --config, or the write_files entry for
` + schema.AgentConfigPath + ` in the cloud-config file --user-data.
Without either flag: $GENESIS_AGENT_CONFIG, then $GENESIS_AGENT_USER_DATA,
then $DOSIM_USER_DATA_FILE (the DigitalOcean simulator's boot hook), then
` + schema.AgentConfigPath + `.

The droplet id is --droplet-id, else $GENESIS_AGENT_DROPLET_ID, else
$DOSIM_DROPLET_ID, else the metadata service (--metadata-url).

The state directory is --state-dir, else $GENESIS_AGENT_STATE_DIR, else
$DOSIM_DISK_DIR/genesis-agent under the simulator (a snapshot keeps it),
else /var/lib/genesis-agent.

With --converge (the default) each accepted manifest is applied to this
droplet: n8n at --n8n-url is bootstrapped once (owner and API key kept 0600
in the state directory), its credentials and workflows converged; Caddy's
admin API at --caddy-admin gets the rendered config for the manifest's
domains; the on-demand TLS ask endpoint is served on --ask-listen; n8n is
moved to the manifest's version with docker compose (--compose-file), or
left alone with --n8n-runtime none (an n8n run by something else). Caddy
listens on --caddy-http-port and --caddy-https-port (80 and 443) on every
interface or --caddy-bind, with ACME certificates (from Let's Encrypt, or
from the ACME directory --acme-ca, whose API is trusted through the PEM file
--acme-ca-roots: a private or test CA such as Pebble), or certificates from
its internal CA with --caddy-internal-tls (offline; genesis-demo droplet
uses it).
--converge=false only accepts manifests (no n8n, Caddy or docker needed):
the DigitalOcean simulator's demo runs agents that way.

Every heartbeat reports each part of the droplet as a component: n8n
(ready; an exited container is started again), caddy (runs the loaded
config; a lost one is reloaded), workflows (the manifest's workflows are
active in n8n), swap (down when more than --swap-max-percent of the swap is
in use), and with --n8n-runtime compose: containers (every service of the
compose stack runs: docker compose ps --all --format json) and postgres
(SELECT 1 through psql in the stack's postgres service; --postgres-probe
runs another command, none turns it off).

The reconciler URL must be https: a plain http:// URL is refused at start
(exit status 2) unless --insecure-http (or $GENESIS_AGENT_INSECURE_HTTP=true)
is given, which only the demo and tests should do. The reconciler's
certificate is checked against the system's roots; $SSL_CERT_FILE (a PEM
bundle) or $SSL_CERT_DIR replace them, e.g. with a private CA.

Agent upgrades (A/B): when --agent-root (else $GENESIS_AGENT_ROOT, else
/opt/genesis-agent) holds the slot layout (slots/{a,b}/genesis-agent and the
symlink current, which the service manager executes), an accepted manifest
that pins another agent build is downloaded (at most 256 MiB), checked
against the pinned SHA-256, written to the inactive slot and asked its
version; then the upgrade is recorded (pending.json), the old build's
upgrade-watch started (--upgrade-watcher: systemd-run, or detached), current
switched, and run exits with status 3 so the service manager starts the new
build. The watcher rolls back a build that sends no accepted heartbeat
within --upgrade-deadline, records the rejection and runs --upgrade-restart.
A failed download or check is reported as the heartbeat's apply_error and
retried for the same digest only after a backoff. Without the layout, agent
pins are ignored.`

func runAgent(ctx context.Context, e cliexit.Env, args []string) error {
	fs := newFlags(e, "run", runUsage)
	configPath := fs.String("config", "", "agent config JSON `file` (default "+schema.AgentConfigPath+")")
	userData := fs.String("user-data", "", "cloud-config `file` holding the agent config in write_files")
	dropletID := fs.String("droplet-id", "", "this droplet's DigitalOcean `id`")
	metadataURL := fs.String("metadata-url", agent.DefaultMetadataURL, "`URL` answering the droplet id")
	stateDir := fs.String("state-dir", "", "state `directory` (keys, credential, applied manifest)")
	hbInterval := fs.Duration("heartbeat-interval", envDuration(e, "GENESIS_AGENT_HEARTBEAT_INTERVAL", time.Minute), "time between heartbeats (±10% jitter)")
	pollWait := fs.Duration("poll-wait", 30*time.Second, "long-poll wait of manifest requests")
	skew := fs.Duration("max-clock-skew", agent.DefaultMaxClockSkew, "how far in the future a manifest's issued_at may be")
	retryMax := fs.Duration("retry-max", time.Minute, "longest wait between retries")
	metricsListen := fs.String("metrics-listen", e.Getenv("GENESIS_AGENT_METRICS_LISTEN"), "`address` to serve /metrics on (off when empty)")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	insecureHTTP := fs.Bool("insecure-http", e.Getenv("GENESIS_AGENT_INSECURE_HTTP") == "true",
		"allow a plain http:// reconciler URL (demo and tests only; $GENESIS_AGENT_INSECURE_HTTP=true)")
	doConverge := fs.Bool("converge", true, "apply manifests to n8n, Caddy and docker compose (false: accept them only, e.g. under the simulator)")
	n8nURL := fs.String("n8n-url", "http://127.0.0.1:5678", "n8n's base `URL`")
	caddyAdmin := fs.String("caddy-admin", caddy.DefaultAdminListen, "Caddy admin API `address`")
	askListen := fs.String("ask-listen", "127.0.0.1:9180", "`address` to serve Caddy's on-demand TLS ask endpoint (/ask) on")
	composeFile := fs.String("compose-file", "/opt/genesis/compose.yaml", "the droplet's compose `file` (n8n version switches)")
	acmeEmail := fs.String("acme-email", "", "ACME account e-mail for Caddy's certificates (optional)")
	acmeCA := fs.String("acme-ca", "", "ACME directory `URL` of Caddy's certificates (default: Let's Encrypt)")
	acmeCARoots := fs.String("acme-ca-roots", "", "PEM `file` of the CA certificates Caddy trusts for --acme-ca's API (default: the system's roots)")
	caddyHTTP := fs.Int("caddy-http-port", caddy.DefaultHTTPPort, "`port` of Caddy's HTTP listener (redirects to HTTPS)")
	caddyHTTPS := fs.Int("caddy-https-port", caddy.DefaultHTTPSPort, "`port` of Caddy's HTTPS listener")
	caddyBind := fs.String("caddy-bind", "", "`address` Caddy's listeners bind to (empty: every interface)")
	caddyInternal := fs.Bool("caddy-internal-tls", false, "issue certificates from Caddy's internal CA instead of ACME (offline: the simulator's demo)")
	n8nRuntime := fs.String("n8n-runtime", "compose", "how n8n is moved to the manifest's version: compose (docker compose, --compose-file) or none (n8n is run by something else, e.g. the simulator's emulator; the version is left alone)")
	backups := fs.Bool("backups", true, "take backups and restore them when the manifest asks (false: never)")
	backupDump := fs.String("backup-dump", "", "`command` (space-separated) that writes n8n's database as pg_dump -Fc to stdout (default: pg_dump in the compose stack's postgres service)")
	backupRestore := fs.String("backup-restore", "", "`command` (space-separated) that restores a pg_dump -Fc archive from stdin (default: pg_restore --clean --if-exists --single-transaction in the compose stack's postgres service)")
	dbPasswordSQL := fs.String("db-password-sql", "", "`command` (space-separated) that runs SQL from stdin against n8n's database as a role that may change n8n's password, stopping at the first error, for a secret rotation's database password (default with --n8n-runtime compose: psql -X -q -v ON_ERROR_STOP=1 in the compose stack's postgres service; none: the database password is not rotated)")
	n8nDataDir := fs.String("n8n-data-dir", "/var/lib/docker/volumes/genesis_n8n_data/_data", "n8n's data `directory`, backed up and restored with its database (empty: none)")
	postgresProbe := fs.String("postgres-probe", "", "`command` (space-separated) that reads SQL on stdin and prints the rows unaligned (psql -tA ...), run against n8n's database for the heartbeat's postgres component (default with --n8n-runtime compose: psql -tA in the compose stack's postgres service; none: no postgres component)")
	swapMax := fs.Float64("swap-max-percent", agent.DefaultSwapMaxPercent, "share of the swap in use (percent) past which the heartbeat's swap component is down")
	backupFirst := fs.Duration("backup-first-within", 10*time.Minute, "spread the first backup after a start over up to this `duration` (never more than the schedule)")
	agentRoot := fs.String("agent-root", firstNonEmpty(e.Getenv("GENESIS_AGENT_ROOT"), "/opt/genesis-agent"), "`directory` of the agent's A/B slots and its current symlink ($GENESIS_AGENT_ROOT)")
	upgradeWatcher := fs.String("upgrade-watcher", "systemd-run", "how an upgrade's watcher is started: systemd-run (a transient unit) or detached (a process of its own; the simulator)")
	upgradeRestart := fs.String("upgrade-restart", "systemctl restart genesis-agent.service", "`command` (space-separated) the watcher runs to restart the agent after a rollback")
	upgradeDeadline := fs.Duration("upgrade-deadline", 3*time.Minute, "how long a new agent build has to send a heartbeat the reconciler accepts")
	backupTmp := fs.String("backup-tmp", "", "`directory` for a backup while it uploads or restores (default: <state-dir>/backup-tmp; needs room for one backup)")
	if err := parse(e, fs, args); err != nil {
		return err
	}
	log, err := logflag.New(e.Stderr, *logFormat, *logLevel)
	if err != nil {
		return cliexit.Usage("%v", err)
	}
	if crashAtStart != "" {
		return errors.New("run: this build crashes at start (built with main.crashAtStart, for tests)")
	}
	if *hbInterval <= 0 || *pollWait <= 0 || *skew <= 0 || *retryMax <= 0 || *upgradeDeadline <= 0 {
		return cliexit.Usage("run: durations must be positive")
	}
	if *upgradeWatcher != "systemd-run" && *upgradeWatcher != "detached" {
		return cliexit.Usage("run: --upgrade-watcher: want systemd-run or detached, got %q", *upgradeWatcher)
	}
	if len(strings.Fields(*upgradeRestart)) == 0 {
		return cliexit.Usage("run: --upgrade-restart: empty command")
	}
	if *n8nRuntime != "compose" && *n8nRuntime != "none" {
		return cliexit.Usage("run: --n8n-runtime: want compose or none, got %q", *n8nRuntime)
	}
	if !(*swapMax > 0 && *swapMax <= 100) {
		return cliexit.Usage("run: --swap-max-percent: want a percentage above 0 and at most 100, got %g", *swapMax)
	}
	if *caddyInternal && (*acmeCA != "" || *acmeCARoots != "") {
		return cliexit.Usage("run: --caddy-internal-tls and --acme-ca or --acme-ca-roots: choose one issuer")
	}
	if *acmeCA != "" {
		if u, err := url.Parse(*acmeCA); err != nil || u.Scheme != "https" || u.Host == "" {
			return cliexit.Usage("run: --acme-ca %q: want an https URL", *acmeCA)
		}
	}
	for _, p := range []struct {
		flag string
		port int
	}{{"--caddy-http-port", *caddyHTTP}, {"--caddy-https-port", *caddyHTTPS}} {
		if p.port < 1 || p.port > 65535 {
			return cliexit.Usage("run: %s: %d is not a port (1-65535)", p.flag, p.port)
		}
	}
	cfg, err := loadConfig(e, *configPath, *userData)
	if err != nil {
		return err
	}
	if err := agent.CheckBootstrap(cfg); err != nil {
		return err
	}
	if err := agent.CheckTransport(cfg, *insecureHTTP); err != nil {
		return cliexit.Usage("run: %v", err)
	}
	if *insecureHTTP {
		log.Warn("--insecure-http: a plain http reconciler URL is allowed; token, credential and manifests may cross the network in the clear", "component", "genesis-agent")
	}
	dir := resolveStateDir(e, *stateDir)
	id := firstNonEmpty(*dropletID, e.Getenv("GENESIS_AGENT_DROPLET_ID"), e.Getenv("DOSIM_DROPLET_ID"))
	if id == "" {
		id, err = agent.DropletIDFromMetadata(ctx, nil, *metadataURL, 10)
		if err != nil {
			return err
		}
	}
	if err := agent.CheckDropletID(id); err != nil {
		return cliexit.Usage("run: %v", err)
	}
	st, err := agent.OpenState(dir)
	if err != nil {
		return err
	}
	defer st.Close()
	var upgrader *agent.Upgrader
	if fi, err := os.Lstat(filepath.Join(*agentRoot, "current")); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		upgrader = &agent.Upgrader{
			Slots: agent.Slots{Root: *agentRoot}, StateDir: dir, Version: agent.BareVersion(agentVersion()),
			Deadline: *upgradeDeadline, StartWatcher: watcherStarter(*upgradeWatcher, *logFormat),
			Restart: strings.Fields(*upgradeRestart), Logger: log,
		}
		restart, err := upgrader.Resume()
		if err != nil {
			return fmt.Errorf("resume agent upgrade: %w", err)
		}
		if restart {
			log.Warn("exiting to restart into the previous agent build", "component", "genesis-agent")
			return &cliexit.Error{Code: exitRestart}
		}
	} else {
		log.Info("no agent slot layout; agent pins are ignored", "component", "genesis-agent", "agent_root", *agentRoot)
	}
	// After Resume, which may have recorded a rejection.
	// n8n versions (and agent builds) this droplet gave up on: reported in
	// every heartbeat, not tried again while the manifest asks for them.
	rejections, err := agent.OpenRejections(dir)
	if err != nil {
		return err
	}
	if upgrader != nil {
		upgrader.Rejections = rejections
	}
	compose := "docker compose -p genesis -f " + *composeFile + " exec -T postgres "
	bkSource := backup.Source{Dump: strings.Fields(firstNonEmpty(*backupDump, compose+"pg_dump -Fc -U n8n n8n")), DataDir: *n8nDataDir}
	bkTarget := backup.Target{Restore: strings.Fields(firstNonEmpty(*backupRestore,
		compose+"pg_restore --clean --if-exists --no-owner --single-transaction -U n8n -d n8n")), DataDir: *n8nDataDir}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	var (
		ag        *agent.Agent // for the converger's backup before an n8n upgrade
		bkStop    func(context.Context) error
		bkStart   func(context.Context) error
		bkExport  func() error
		bkAdopt   func() error
		applier   agent.Applier
		probes    map[string]agent.Probe
		n8nVer    func(context.Context) (string, error)
		activity  func(context.Context) (time.Time, error)
		rotate    func(context.Context, int64) error
		askLn     net.Listener
		askServer *http.Server
	)
	if *doConverge {
		n8nClient, err := n8n.New(*n8nURL, n8n.Options{Logger: log})
		if err != nil {
			return cliexit.Usage("run: --n8n-url: %v", err)
		}
		if _, _, err := net.SplitHostPort(*caddyAdmin); err != nil {
			return cliexit.Usage("run: --caddy-admin: want host:port")
		}
		askLn, err = net.Listen("tcp", *askListen)
		if err != nil {
			return fmt.Errorf("ask listen: %w", err)
		}
		defer askLn.Close()
		ask := caddy.NewAsk(log)
		mux := http.NewServeMux()
		mux.Handle("GET /ask", ask)
		askServer = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		upstream := "127.0.0.1:5678"
		if u, err := url.Parse(*n8nURL); err == nil && u.Port() != "" {
			upstream = u.Host
		}
		convCfg := converge.Config{
			Dir:   dir,
			N8N:   n8nClient,
			Caddy: caddy.NewClient(*caddyAdmin, caddy.ClientOptions{Logger: log}),
			CaddyConfig: caddy.Config{
				Upstream: upstream, AskURL: "http://" + askLn.Addr().String() + "/ask",
				AdminListen: *caddyAdmin, ACMEEmail: *acmeEmail, ACMECA: *acmeCA, ACMECARoots: *acmeCARoots,
				HTTPPort: *caddyHTTP, HTTPSPort: *caddyHTTPS, BindHost: *caddyBind, Internal: *caddyInternal,
			},
			Ask:        ask,
			Logger:     log,
			Rejections: rejections,
		}
		comp := &converge.Compose{File: *composeFile, Dir: dir, Ready: n8nClient.WaitReady}
		if *n8nRuntime != "none" {
			convCfg.Runtime = comp
			// A secret rotation's database password: the role's (SQL on
			// stdin), the compose project's .env (which compose reads next
			// to the compose file) and n8n recreated from it.
			if *dbPasswordSQL != "none" {
				sql := strings.Fields(*dbPasswordSQL)
				if len(sql) == 0 {
					sql = converge.DefaultDBPasswordSQL("docker", "genesis", *composeFile)
				}
				convCfg.DBPassword = &converge.DBPassword{Dir: dir, EnvFile: filepath.Join(filepath.Dir(*composeFile), ".env"),
					SQL: sql, Recreate: comp.Recreate, Logger: log}
			}
		}
		if *backups {
			convCfg.BeforeUpgrade = func(ctx context.Context, from, to string) error { return ag.BackupBeforeUpgrade(ctx, from, to) }
			if *n8nRuntime != "none" {
				// The copy a failed n8n upgrade restores (and a downgrade).
				convCfg.Backups = &backup.Local{Dir: filepath.Join(dir, "upgrade-backups"), Identity: st.Keys().Identity,
					Source: bkSource, Target: bkTarget, Workspace: cfg.Workspace}
			}
		}
		conv, err := converge.New(convCfg)
		if err != nil {
			return err
		}
		if *n8nRuntime != "none" {
			// A backup or a restore stops n8n on purpose: the probe's
			// repair must not start it in between.
			var release func()
			bkStop = func(ctx context.Context) error {
				release = conv.HoldRepairs()
				return comp.Stop(ctx)
			}
			bkStart = func(ctx context.Context) error {
				defer func() {
					if release != nil {
						release()
					}
				}()
				return comp.Start(ctx)
			}
		}
		// Before its first switch the runtime asks n8n its version, which
		// n8n tells only the signed-in owner: through the converger.
		comp.Running = conv.N8NVersion
		applier = conv
		probes = map[string]agent.Probe{"n8n": conv.ProbeN8N, "caddy": conv.ProbeCaddy, "workflows": conv.ProbeWorkflows}
		if *n8nRuntime != "none" {
			// n8n's container is down on purpose during a switch, a
			// hibernation or a backup: not a failed service then.
			probes["containers"] = probe.Containers{File: *composeFile, Expected: func(service string) (string, bool) {
				if service != "n8n" {
					return "", false
				}
				return conv.N8NDownOnPurpose()
			}}.Probe
		}
		n8nVer = conv.N8NVersion
		activity = conv.LastActivity
		// A secret rotation's droplet part: n8n's API key and owner
		// password, then the database password (see the README,
		// "rotate-secrets").
		rotate = conv.RotateSecrets
		if *n8nDataDir != "" {
			// n8n's owner, key and ids travel with its data in a backup.
			bkExport = func() error { return conv.ExportAccess(*n8nDataDir) }
			bkAdopt = func() error { return conv.AdoptAccess(*n8nDataDir) }
		}
	}
	if argv := postgresProbeArgv(*postgresProbe, *doConverge && *n8nRuntime != "none", *composeFile); argv != nil {
		if probes == nil {
			probes = map[string]agent.Probe{}
		}
		probes["postgres"] = probe.Postgres{Argv: argv}.Probe
	}
	var bk *agent.BackupConfig
	if *backups {
		bk = &agent.BackupConfig{
			Source: bkSource, Target: bkTarget,
			TmpDir: *backupTmp, Stop: bkStop, Start: bkStart, FirstWithin: *backupFirst,
			BeforeTake: bkExport, AfterRestore: bkAdopt,
		}
	}
	a, err := agent.New(agent.Config{
		RotateSecrets:     rotate,
		Backup:            bk,
		Rejections:        rejections,
		Applier:           applier,
		Probes:            probes,
		N8NVersion:        n8nVer,
		LastActivity:      activity,
		Bootstrap:         cfg,
		DropletID:         id,
		State:             st,
		HTTPClient:        &http.Client{Transport: http.DefaultTransport},
		Logger:            log,
		Registerer:        reg,
		HeartbeatInterval: *hbInterval,
		PollWait:          *pollWait,
		MaxClockSkew:      *skew,
		RetryMax:          *retryMax,
		Version:           agentVersion(),
		Upgrader:          upgrader,
		SwapMaxPercent:    *swapMax,
	})
	if err != nil {
		return err
	}
	ag = a
	log.Info("starting", "component", "genesis-agent", "version", agentVersion(), "workspace", cfg.Workspace,
		"droplet", id, "reconciler", cfg.ReconcilerURL, "state_dir", dir, "age_recipient", st.Keys().Recipient())

	g, gctx := errgroup.WithContext(ctx)
	if *metricsListen != "" {
		ln, err := net.Listen("tcp", *metricsListen)
		if err != nil {
			return fmt.Errorf("metrics listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		log.Info("serving metrics", "component", "genesis-agent", "addr", ln.Addr().String())
		serve(gctx, g, "metrics", srv, ln)
	}
	if askServer != nil {
		log.Info("serving caddy ask endpoint", "component", "genesis-agent", "addr", askLn.Addr().String())
		serve(gctx, g, "ask endpoint", askServer, askLn)
	}
	g.Go(func() error {
		err := a.Run(gctx)
		if err == nil && ctx.Err() == nil {
			err = errors.New("agent stopped")
		}
		return err
	})
	err = g.Wait()
	if errors.Is(err, agent.ErrRestart) {
		log.Info("exiting to restart into the new agent build", "component", "genesis-agent", "exit_status", exitRestart)
		return &cliexit.Error{Code: exitRestart}
	}
	log.Info("stopped", "component", "genesis-agent")
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// postgresProbeArgv is the postgres component's command: flag's ("none":
// no component), else psql in the compose stack's postgres service when
// the droplet runs the compose stack, else none.
func postgresProbeArgv(flag string, compose bool, composeFile string) []string {
	switch {
	case flag == "none":
		return nil
	case strings.TrimSpace(flag) != "":
		return strings.Fields(flag)
	case compose:
		return probe.DefaultPostgres("docker", "genesis", composeFile)
	}
	return nil
}

// loadConfig reads the agent config from the flag, env or default source.
func loadConfig(e cliexit.Env, configPath, userData string) (schema.AgentConfig, error) {
	if configPath != "" && userData != "" {
		return schema.AgentConfig{}, cliexit.Usage("run: give --config or --user-data, not both")
	}
	if configPath == "" && userData == "" {
		configPath = e.Getenv("GENESIS_AGENT_CONFIG")
		if configPath == "" {
			userData = firstNonEmpty(e.Getenv("GENESIS_AGENT_USER_DATA"), e.Getenv("DOSIM_USER_DATA_FILE"))
		}
		if configPath == "" && userData == "" {
			configPath = schema.AgentConfigPath
		}
	}
	if userData != "" {
		data, err := os.ReadFile(userData)
		if err != nil {
			return schema.AgentConfig{}, fmt.Errorf("read user data: %w", err)
		}
		cfg, err := agent.ConfigFromUserData(data)
		if err != nil {
			return schema.AgentConfig{}, fmt.Errorf("%s: %w", userData, err)
		}
		return cfg, nil
	}
	data, err := os.ReadFile(configPath)
	if err != nil {
		return schema.AgentConfig{}, fmt.Errorf("read agent config: %w", err)
	}
	cfg, err := agent.ParseConfig(data)
	if err != nil {
		return schema.AgentConfig{}, fmt.Errorf("%s: %w", configPath, err)
	}
	return cfg, nil
}

func resolveStateDir(e cliexit.Env, flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	if d := e.Getenv("GENESIS_AGENT_STATE_DIR"); d != "" {
		return d
	}
	if d := e.Getenv("DOSIM_DISK_DIR"); d != "" {
		return filepath.Join(d, "genesis-agent")
	}
	return "/var/lib/genesis-agent"
}

func envDuration(e cliexit.Env, name string, def time.Duration) time.Duration {
	if v := e.Getenv(name); v != "" {
		if d, err := time.ParseDuration(v); err == nil {
			return d
		}
	}
	return def
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// serve adds srv, serving on ln, to g: it serves until ctx (g's) ends, then
// shuts down, giving its requests 5s.
func serve(ctx context.Context, g *errgroup.Group, name string, srv *http.Server, ln net.Listener) {
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
}
