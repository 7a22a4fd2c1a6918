// Command genesis-reconciler is the control plane: it makes DigitalOcean and
// Postgres match the state repository, and serves the HTTP API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/logflag"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/service"
	"genesis.dev/fleet/reconciler/store"
)

func main() { cliexit.Main("genesis-reconciler", cliexit.Runner(run)) }

const usage = `Usage: genesis-reconciler [flags]

The Genesis control plane. It reads the state repository (a git URL or local
path; or, with --state-dir, a plain folder), observes DigitalOcean and
Postgres, plans with the pure planner and executes through a rate-aware,
journaled scheduler. Only the replica holding the Postgres leader lock plans
and executes; every replica serves HTTP:

  GET  /healthz      liveness
  GET  /readyz       database reachable and state repository read
  GET  /metrics      Prometheus metrics
  GET  /v1/fleet     every tenant: desired vs actual, droplet, account, errors
  GET  /v1/observed  the leader's last stored observation, with observed_at
                     and leader (genesis plan --reconciler reads it); 503
                     when none is stored or it is older than
                     --observed-max-age
  POST /hooks/git    push webhook (X-Hub-Signature-256): every replica
                     fetches now

Roles (--role): a "full" replica (the default) campaigns for the leader lock
and, leading, plans and executes against DigitalOcean. A "serve" replica
never leads: it serves agents, the API, the console and the webhook, follows
the state repository and hears of manifests through Postgres, but runs no
control loop, no sweep and no watchdog, and reads no DigitalOcean token. Run
two or three full replicas and scale serve replicas with the agents (about
50,000 each); if no full replica is up, nothing plans (GenesisNoLeader).

A webhook, a dashboard commit, a wake or a retry may reach any replica: it
is announced on the Postgres channel genesis_reconciler, which every replica
follows, and the leader acts on it at once.

and the agent protocol (see package reconciler/agentapi):

  POST /v1/enroll     one-time token + the agent's public keys -> credential
  GET  /v1/manifest   the droplet's signed manifest (Bearer credential;
                      If-None-Match -> 304; ?wait=30s long-polls, max 60s)
  POST /v1/heartbeat  the agent's report (Bearer credential) -> 202

HTTPS: with --tls-cert and --tls-key the reconciler terminates TLS itself
(TLS 1.2 or later; the pair is reloaded when either file changes, a broken
new pair keeps the old one and is logged and counted in
genesis_tls_cert_reloads_total{result="error"}); --public-url then defaults
to https://<listen address>. Agents refuse a plain http reconciler URL, so a
plain http --public-url is logged as a warning at start unless
--agent-insecure-http tells droplets to accept it (demo and tests only).

Droplets get cloud-init user data carrying --public-url, the public half of
--signing-key (and of every --announce-signing-key) and a one-time enrollment
token. Without --signing-key and --age-identity the reconciler still runs, but
droplets get no user data and enrollment answers 503.

Rotating the manifest-signing key: (1) add the new public key with
--announce-signing-key and wait until every agent applied a manifest carrying
it (GET /v1/fleet: applied = issued); (2) switch --signing-key to the new key,
still announcing it (the old one may be dropped).

API callers present a bearer token listed (by hash) in --tokens; the
reconciler refuses to start without it unless --insecure-no-auth is given
(demo and tests only: every route then answers anyone).

Every flag can also be set by the environment variable shown. DigitalOcean
tokens come from the variables genesis.yaml names (spec.accounts[].tokenEnv).
An http(s) state repository's credential comes from $GENESIS_GIT_TOKEN (sent
as the basic-auth password, user $GENESIS_GIT_USER, default "git") or from the
URL's user information; either way it is never written to disk or logged.
Migrations are applied at start.

Flags:
`

// config is the flags' values: the service's, and the log's and the
// repeatable --announce-signing-key's own.
type config struct {
	service.Config
	logFormat, logLevel, role string
	// debugListen serves net/http/pprof ("": off).
	debugListen string
	announce    listFlag
}

// listFlag is a repeatable flag whose default comes from a comma-separated
// environment variable; the first use on the command line replaces it.
type listFlag struct {
	vals []string
	set  bool
}

func (l *listFlag) String() string { return strings.Join(l.vals, ",") }

func (l *listFlag) Set(v string) error {
	if !l.set {
		l.vals, l.set = nil, true
	}
	l.vals = append(l.vals, v)
	return nil
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	defaults := service.Defaults()
	fs := flag.NewFlagSet("genesis-reconciler", flag.ContinueOnError)
	fs.SetOutput(stderr)
	str := func(p *string, name, env, def, help string) {
		if v := getenv(env); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, help+" ($"+env+")")
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, help string) {
		if v := getenv(env); v != "" {
			if d, err := time.ParseDuration(v); err == nil {
				def = d
			}
		}
		fs.DurationVar(p, name, def, help+" ($"+env+")")
	}
	str(&c.StateRepo, "state-repo", "GENESIS_STATE_REPO", "", "state repository: a git URL (cloned and fetched) or a local repository path")
	str(&c.StateDir, "state-dir", "GENESIS_STATE_DIR", "", "read a plain folder instead of git commits (demo and development; watched with fsnotify)")
	str(&c.Branch, "branch", "GENESIS_BRANCH", defaults.Branch, "branch of the state repository")
	str(&c.CacheDir, "cache-dir", "GENESIS_CACHE_DIR", "", "where URL repositories are cloned (default: the user cache dir)")
	str(&c.DatabaseURL, "database-url", "DATABASE_URL", "", "Postgres connection URL (required)")
	str(&c.DOAPIURL, "do-api-url", "GENESIS_DO_API_URL", "https://api.digitalocean.com/", "DigitalOcean API base URL (the simulator's in tests)")
	str(&c.Listen, "listen", "GENESIS_LISTEN", "127.0.0.1:8080", "HTTP listen address")
	str(&c.AgeIdentity, "age-identity", "GENESIS_AGE_IDENTITY", "", "file holding the age identity that opens sealed credentials")
	str(&c.BackupKey, "backup-key", "GENESIS_BACKUP_KEY", "", "file holding the age identity each workspace's backup key is derived from (its recipient belongs in spec.backup.recipients); without it backups are off")
	str(&c.SigningKey, "signing-key", "GENESIS_SIGNING_KEY", "", "file holding the ed25519 manifest-signing key (PKCS#8 PEM)")
	for _, f := range strings.Split(getenv("GENESIS_ANNOUNCE_SIGNING_KEYS"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			c.announce.vals = append(c.announce.vals, f)
		}
	}
	fs.Var(&c.announce, "announce-signing-key", "`FILE` holding a PKIX PEM ed25519 public key to put in every manifest's signing_keys (and new droplets' user data), "+
		"so agents trust it before --signing-key switches to it; repeatable ($GENESIS_ANNOUNCE_SIGNING_KEYS, comma-separated)")
	str(&c.PublicURL, "public-url", "GENESIS_PUBLIC_URL", "", "base URL agents reach this reconciler at, written into droplets' user data (default http://<listen address>, https:// with --tls-cert)")
	str(&c.DropletCompose, "droplet-compose", "GENESIS_DROPLET_COMPOSE", "", "compose file written to each new droplet (default: the release's deploy/droplet/compose.yaml, built in)")
	str(&c.AgentBinaryURL, "agent-binary-url", "GENESIS_AGENT_BINARY_URL", "", "https URL a new droplet downloads genesis-agent from when its image lacks it (optional; needs --agent-binary-sha256)")
	str(&c.AgentBinarySHA256, "agent-binary-sha256", "GENESIS_AGENT_BINARY_SHA256", "", "hex SHA-256 of the binary at --agent-binary-url: droplets refuse to install a download that differs")
	fs.BoolVar(&c.AgentInsecureHTTP, "agent-insecure-http", getenv("GENESIS_AGENT_INSECURE_HTTP") == "true",
		"let droplets' agents use a plain http --public-url and download the agent over http (demo and tests only; $GENESIS_AGENT_INSECURE_HTTP=true)")
	str(&c.TLSCert, "tls-cert", "GENESIS_TLS_CERT", "", "PEM certificate (chain) `file` to serve HTTPS with, reloaded when it changes (with --tls-key)")
	str(&c.TLSKey, "tls-key", "GENESIS_TLS_KEY", "", "PEM private key `file` of --tls-cert")
	dur(&c.TokenTTL, "enroll-token-ttl", "GENESIS_ENROLL_TOKEN_TTL", defaults.TokenTTL, "how long a droplet's one-time enrollment token is valid")
	dur(&c.ManifestTTL, "manifest-ttl", "GENESIS_MANIFEST_TTL", defaults.ManifestTTL, "lifetime of a signed manifest (re-signed when a third remains)")
	dur(&c.ManifestSweep, "manifest-sweep", "GENESIS_MANIFEST_SWEEP", defaults.ManifestSweep, "how often the leader re-renders drifted or expiring manifests")
	dur(&c.RolloutEvery, "rollout-every", "GENESIS_ROLLOUT_EVERY", defaults.RolloutEvery, "how often the leader moves rollouts of fleet-wide changes a step (spec.rollout)")
	str(&c.WebhookSecret, "webhook-secret", "GENESIS_WEBHOOK_SECRET", "", "secret of the push webhook's HMAC (empty refuses every hook)")
	str(&c.role, "role", "GENESIS_ROLE", "full", "full: campaign for the leader lock and, leading, plan and execute against DigitalOcean; "+
		"serve: never lead (agents, API, console and webhook only; no DigitalOcean token is read)")
	str(&c.debugListen, "debug-listen", "GENESIS_DEBUG_LISTEN", "", "serve Go's profiler (/debug/pprof/) on this address, apart from the API (keep it on loopback: it shows the process's internals, unauthenticated; empty: off)")
	str(&c.logFormat, "log-format", "GENESIS_LOG_FORMAT", "json", "log format: json or text")
	str(&c.logLevel, "log-level", "GENESIS_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	dur(&c.PollInterval, "poll-interval", "GENESIS_POLL_INTERVAL", defaults.PollInterval, "how often the state repository is fetched (±10% jitter)")
	dur(&c.Resync, "resync", "GENESIS_RESYNC", defaults.Resync, "how often the leader re-plans without a new commit, to catch drift")
	str(&c.ReplicaID, "replica-id", "GENESIS_REPLICA_ID", defaultReplicaID(), "this replica's name, stored with the observations it makes as leader (GET /v1/observed's leader)")
	dur(&c.ObservedMaxAge, "observed-max-age", "GENESIS_OBSERVED_MAX_AGE", 0, "GET /v1/observed answers 503 when the leader's stored observation is older (default 5 × --resync)")
	str(&c.NotifyURL, "notify-url", "GENESIS_NOTIFY_URL", "", "URL notices (idle warnings, a tenant FAILED, an account failing) are POSTed to as JSON, retried with backoff (optional)")
	str(&c.NotifySlackURL, "notify-slack-url", "GENESIS_NOTIFY_SLACK_URL", "", "Slack-compatible incoming webhook URL the same notices go to as {\"text\": ...} (optional)")
	dur(&c.PrepareTimeout, "hibernate-prepare-timeout", "GENESIS_HIBERNATE_PREPARE_TIMEOUT", defaults.PrepareTimeout,
		"how long a hibernation waits for the agent to confirm n8n stopped before it snapshots anyway")
	dur(&c.WatchdogEvery, "watchdog-every", "GENESIS_WATCHDOG_EVERY", defaults.WatchdogEvery, "how often the leader runs the watchdog (heartbeat health, remediation)")
	allow := getenv("GENESIS_ALLOW_MASS_CHANGE") == "true"
	fs.BoolVar(&c.AllowMassChange, "allow-mass-change", allow, "let plans past the fleet's safety limits run ($GENESIS_ALLOW_MASS_CHANGE=true)")
	fs.BoolVar(&c.SkipDisabledAccounts, "skip-disabled-accounts", getenv("GENESIS_SKIP_DISABLED_ACCOUNTS") == "true",
		"do not observe the accounts genesis.yaml marks status: disabled (each is read as an incomplete listing, never as droplets gone; $GENESIS_SKIP_DISABLED_ACCOUNTS=true)")
	str(&c.TokensFile, "tokens", "GENESIS_TOKENS_FILE", "", "API tokens file (JSON lines {name, sha256, scopes}; genesis token new); enables the tenant API and bearer checks")
	fs.BoolVar(&c.InsecureNoAuth, "insecure-no-auth", getenv("GENESIS_INSECURE_NO_AUTH") == "true",
		"serve without --tokens: every API route answers anyone (demo and tests only; $GENESIS_INSECURE_NO_AUTH=true)")
	fs.BoolVar(&c.Console, "console", getenv("GENESIS_CONSOLE") != "false",
		"serve the fleet console at /console/ on the API's listener (every replica; --console=false or $GENESIS_CONSOLE=false turns it off)")
	str(&c.ConsoleKey, "console-key", "GENESIS_CONSOLE_KEY", "", "`file` of secret bytes (32 or more) the console's session cookies are sealed with; every replica needs the same one (default: derived from --tokens)")
	fs.BoolVar(&c.MetricsTokenRequired, "metrics-token-required", getenv("GENESIS_METRICS_TOKEN_REQUIRED") == "true", "GET /metrics needs a token with the metrics scope ($GENESIS_METRICS_TOKEN_REQUIRED=true)")
	fs.BoolVar(&c.Propose, "propose", getenv("GENESIS_PROPOSE") == "true", "tenant API writes push a branch genesis/proposals/<id>-<commit> per change for review instead of the branch ($GENESIS_PROPOSE=true)")
	c.GitUser, c.GitToken = getenv("GENESIS_GIT_USER"), getenv("GENESIS_GIT_TOKEN")
	fs.Float64Var(&c.APIRate, "api-rate", defaults.APIRate, "requests per second each API token may make (bursts of twice that)")
	dur(&c.HTTP.ReadHeader, "http-read-header-timeout", "GENESIS_HTTP_READ_HEADER_TIMEOUT", defaults.HTTP.ReadHeader, "longest a request's headers (or a silent new connection) may take")
	dur(&c.HTTP.Read, "http-read-timeout", "GENESIS_HTTP_READ_TIMEOUT", defaults.HTTP.Read, "longest a whole request, body included, may take to arrive")
	dur(&c.HTTP.Write, "http-write-timeout", "GENESIS_HTTP_WRITE_TIMEOUT", defaults.HTTP.Write, "longest a response may take (must exceed the 60s manifest long-poll)")
	dur(&c.HTTP.Idle, "http-idle-timeout", "GENESIS_HTTP_IDLE_TIMEOUT", defaults.HTTP.Idle, "how long an idle keep-alive connection is kept")
	maxConns := defaults.HTTP.MaxConns
	if v := getenv("GENESIS_MAX_CONNECTIONS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			maxConns = n
		}
	}
	fs.IntVar(&c.HTTP.MaxConns, "max-connections", maxConns, "most HTTP connections open at once, 0 for no limit (default: the open-file limit less 256 for Postgres and git) ($GENESIS_MAX_CONNECTIONS)")
	fs.IntVar(&c.CrashAfterJournalWrites, "crash-after-journal-writes", 0, "reliability suite only: SIGKILL this process right after its Nth committed journal write (0: never)")
	fs.Float64Var(&c.UnauthRate, "unauth-rate", defaults.UnauthRate, "unauthenticated answers (401, 403) per second a client regains")
	fs.IntVar(&c.UnauthBurst, "unauth-burst", defaults.UnauthBurst, "unauthenticated answers a client may collect before every request of it gets 429 (0: no limit)")
	str(&c.TrustedProxies, "trusted-proxies", "GENESIS_TRUSTED_PROXIES", "", "comma-separated addresses or CIDR prefixes of proxies whose X-Forwarded-For names the client (for the per-client limit on unauthenticated requests)")
	str(&c.Activator.Listen, "activator-listen", "GENESIS_ACTIVATOR_LISTEN", "",
		"run the activator on this address: hibernated tenants' names point at its Caddy front, which proxies here; a request wakes its tenant and is held until it is up, and Caddy's on-demand TLS asks http://<this address>/ask (empty: no activator)")
	dur(&c.Activator.Hold, "activator-hold", "GENESIS_ACTIVATOR_HOLD", defaults.Activator.Hold, "how long the activator holds a request while its tenant wakes, then 503 with Retry-After")
	fs.IntVar(&c.Activator.MaxHeld, "activator-max-held", defaults.Activator.MaxHeld, "most requests the activator holds at once (past it: 503 with Retry-After)")
	fs.IntVar(&c.Activator.MaxHeldPerTenant, "activator-max-held-per-tenant", defaults.Activator.MaxHeldPerTenant,
		"most requests the activator holds at once for one tenant; below --activator-max-held, so one tenant's flood cannot starve the others")
	fs.Int64Var(&c.Activator.MaxBody, "activator-max-body", defaults.Activator.MaxBody, "largest request body (bytes) the activator buffers while it holds a request (past it: 413)")
	fs.IntVar(&c.Activator.DropletPort, "activator-droplet-port", defaults.Activator.DropletPort, "HTTPS port of the droplets the activator proxies woken tenants' requests to")
	str(&c.Activator.DropletCA, "activator-droplet-ca", "GENESIS_ACTIVATOR_DROPLET_CA", "", "PEM `file` of the roots that verify the droplets' certificates when the activator proxies to them (default: the system roots)")
	dur(&c.Probe.Interval, "probe-interval", "GENESIS_PROBE_INTERVAL", defaults.Probe.Interval,
		"how often every running tenant's stable name is probed (GET https://<name>/healthz) for the availability figures; each replica probes its shards; 0 turns the prober off (it is off anyway without spec.dns)")
	dur(&c.Probe.Timeout, "probe-timeout", "GENESIS_PROBE_TIMEOUT", defaults.Probe.Timeout, "longest one availability probe (resolve, connect, TLS, answer) may take before it counts as down")
	fs.IntVar(&c.Probe.Concurrency, "probe-concurrency", defaults.Probe.Concurrency, "most availability probes this replica has in flight at once")
	str(&c.Probe.CA, "probe-ca", "GENESIS_PROBE_CA", "", "PEM `file` of the roots that verify the tenants' certificates when probing their stable names (default: the system roots)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return c, err
		}
		return c, &cliexit.Error{Code: 2}
	}
	c.Announce, c.Getenv = c.announce.vals, getenv
	// A serve replica is the agent side of service.Config without the
	// sweep: it never leads, so it needs no DigitalOcean token.
	c.AgentSideOnly, c.AgentSideFollower = c.role == "serve", c.role == "serve"
	c.Probe.Off = c.Probe.Interval == 0
	switch {
	case fs.NArg() > 0:
		return c, cliexit.Usage("unexpected arguments %q", fs.Args())
	case c.role != "full" && c.role != "serve":
		return c, cliexit.Usage("--role: want full or serve, got %q", c.role)
	case c.DatabaseURL == "":
		return c, cliexit.Usage("--database-url (or DATABASE_URL) is required")
	case (c.StateRepo == "") == (c.StateDir == ""):
		return c, cliexit.Usage("give exactly one of --state-repo and --state-dir")
	case c.TokensFile == "" && !c.InsecureNoAuth:
		return c, cliexit.Usage("refusing to serve without --tokens ($GENESIS_TOKENS_FILE): every API route " +
			"(wake, retry, /v1/fleet, /v1/observed) would answer anyone; make a tokens file with `genesis token new`, " +
			"or, for a demo or a test only, pass --insecure-no-auth")
	case c.TokensFile != "" && c.InsecureNoAuth:
		return c, cliexit.Usage("--insecure-no-auth and --tokens contradict each other; drop --insecure-no-auth")
	case c.InsecureNoAuth && c.MetricsTokenRequired:
		return c, cliexit.Usage("--metrics-token-required needs --tokens")
	case c.UnauthBurst < 0 || c.UnauthRate <= 0:
		return c, cliexit.Usage("--unauth-burst must not be negative and --unauth-rate must be positive")
	case c.Probe.Interval < 0 || (c.Probe.Interval > 0 && c.Probe.Interval < 10*time.Second):
		return c, cliexit.Usage("--probe-interval: want 0 (off) or at least 10s, got %v", c.Probe.Interval)
	case c.Probe.Timeout <= 0 || (c.Probe.Interval > 0 && c.Probe.Timeout > c.Probe.Interval):
		return c, cliexit.Usage("--probe-timeout: want a positive duration no longer than --probe-interval, got %v", c.Probe.Timeout)
	case c.Probe.Concurrency < 1 || c.Probe.Concurrency > 10000:
		return c, cliexit.Usage("--probe-concurrency: want 1 to 10000, got %d", c.Probe.Concurrency)
	case c.Activator.Listen != "" && (c.Activator.MaxHeldPerTenant < 1 || c.Activator.MaxHeldPerTenant >= c.Activator.MaxHeld ||
		c.Activator.Hold <= 0 || c.Activator.MaxBody < 1 || c.Activator.DropletPort < 1 || c.Activator.DropletPort > 65535):
		return c, cliexit.Usage("--activator-*: want 0 < --activator-max-held-per-tenant < --activator-max-held, a positive --activator-hold and --activator-max-body, and a port in 1-65535")
	}
	if err := c.HTTP.Check(); err != nil {
		return c, err
	}
	if err := store.CheckReplicaID(c.ReplicaID); err != nil {
		return c, cliexit.Usage("--replica-id: %v", err)
	}
	if c.ObservedMaxAge <= 0 {
		c.ObservedMaxAge = 5 * c.Resync
	}
	if c.debugListen != "" {
		if _, port, err := net.SplitHostPort(c.debugListen); err != nil || port == "" {
			return c, cliexit.Usage("--debug-listen %q: want host:port, such as 127.0.0.1:6060", c.debugListen)
		}
	}
	if _, err := auth.ParsePrefixes(c.TrustedProxies); err != nil {
		return c, cliexit.Usage("--trusted-proxies: %v", err)
	}
	if !strings.HasSuffix(c.DOAPIURL, "/") {
		c.DOAPIURL += "/"
	}
	if err := service.CheckTransportFlags(&c.Config); err != nil {
		return c, err
	}
	return c, nil
}
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	c, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	log, err := logflag.New(stderr, c.logFormat, c.logLevel)
	if err != nil {
		return cliexit.Usage("%v", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The profiler's address is taken before anything else, so a typo or a
	// port in use exits at once, before Postgres is opened or migrated.
	if c.debugListen != "" {
		stop, err := serveDebug(c.debugListen, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	svc, err := service.New(ctx, c.Config, log, reg)
	if err != nil {
		return err
	}
	defer svc.Close()
	fmt.Fprintf(stdout, "listening on %s\n", svc.URL())
	return svc.Run(ctx)
}

// serveDebug serves net/http/pprof on addr until stop is called. It is
// its own listener and mux, so the profiler is never reachable through
// the API's address or its load balancer.
func serveDebug(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--debug-listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	log.Warn("profiler served (--debug-listen): keep it off the network", "component", "http", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// defaultReplicaID is <hostname>/<pid> (in Kubernetes the hostname is the
// pod's name).
func defaultReplicaID() string {
	host, err := os.Hostname()
	if err != nil || store.CheckReplicaID(host) != nil {
		host = "reconciler"
	}
	return fmt.Sprintf("%s/%d", host, os.Getpid())
}
