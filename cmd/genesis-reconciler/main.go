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
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/logflag"
	"genesis.dev/fleet/reconciler"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/fleetstats"
	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(cliexit.Code("genesis-reconciler", err, os.Stderr))
}

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

type config struct {
	stateRepo, stateDir, branch, cacheDir, databaseURL, doAPIURL, listen string
	ageIdentity, signingKey, webhookSecret, logFormat, logLevel          string
	publicURL, dropletCompose, agentBinaryURL                            string
	pollInterval, resync, tokenTTL, manifestTTL, manifestSweep           time.Duration
	allowMassChange                                                      bool
	crashAfterJournalWrites                                              int
	announce                                                             listFlag
	notifyURL                                                            string
	prepareTimeout                                                       time.Duration
	watchdogEvery                                                        time.Duration
	tokensFile                                                           string
	gitUser, gitToken                                                    string // environment only: a flag would show in ps
	metricsTokenRequired, propose, insecureNoAuth                        bool
	apiRate                                                              float64
	http                                                                 serverTimeouts
	trustedProxies                                                       string
	unauthRate                                                           float64
	unauthBurst                                                          int
	tlsCert, tlsKey, agentBinarySHA256                                   string
	agentInsecureHTTP                                                    bool
	replicaID                                                            string
	observedMaxAge                                                       time.Duration
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
	str(&c.stateRepo, "state-repo", "GENESIS_STATE_REPO", "", "state repository: a git URL (cloned and fetched) or a local repository path")
	str(&c.stateDir, "state-dir", "GENESIS_STATE_DIR", "", "read a plain folder instead of git commits (demo and development; watched with fsnotify)")
	str(&c.branch, "branch", "GENESIS_BRANCH", tenants.DefaultBranch, "branch of the state repository")
	str(&c.cacheDir, "cache-dir", "GENESIS_CACHE_DIR", "", "where URL repositories are cloned (default: the user cache dir)")
	str(&c.databaseURL, "database-url", "DATABASE_URL", "", "Postgres connection URL (required)")
	str(&c.doAPIURL, "do-api-url", "GENESIS_DO_API_URL", "https://api.digitalocean.com/", "DigitalOcean API base URL (the simulator's in tests)")
	str(&c.listen, "listen", "GENESIS_LISTEN", "127.0.0.1:8080", "HTTP listen address")
	str(&c.ageIdentity, "age-identity", "GENESIS_AGE_IDENTITY", "", "file holding the age identity that opens sealed credentials")
	str(&c.signingKey, "signing-key", "GENESIS_SIGNING_KEY", "", "file holding the ed25519 manifest-signing key (PKCS#8 PEM)")
	for _, f := range strings.Split(getenv("GENESIS_ANNOUNCE_SIGNING_KEYS"), ",") {
		if f = strings.TrimSpace(f); f != "" {
			c.announce.vals = append(c.announce.vals, f)
		}
	}
	fs.Var(&c.announce, "announce-signing-key", "`FILE` holding a PKIX PEM ed25519 public key to put in every manifest's signing_keys (and new droplets' user data), "+
		"so agents trust it before --signing-key switches to it; repeatable ($GENESIS_ANNOUNCE_SIGNING_KEYS, comma-separated)")
	str(&c.publicURL, "public-url", "GENESIS_PUBLIC_URL", "", "base URL agents reach this reconciler at, written into droplets' user data (default http://<listen address>, https:// with --tls-cert)")
	str(&c.dropletCompose, "droplet-compose", "GENESIS_DROPLET_COMPOSE", "", "compose file written to each new droplet (default: the release's deploy/droplet/compose.yaml, built in)")
	str(&c.agentBinaryURL, "agent-binary-url", "GENESIS_AGENT_BINARY_URL", "", "https URL a new droplet downloads genesis-agent from when its image lacks it (optional; needs --agent-binary-sha256)")
	str(&c.agentBinarySHA256, "agent-binary-sha256", "GENESIS_AGENT_BINARY_SHA256", "", "hex SHA-256 of the binary at --agent-binary-url: droplets refuse to install a download that differs")
	fs.BoolVar(&c.agentInsecureHTTP, "agent-insecure-http", getenv("GENESIS_AGENT_INSECURE_HTTP") == "true",
		"let droplets' agents use a plain http --public-url and download the agent over http (demo and tests only; $GENESIS_AGENT_INSECURE_HTTP=true)")
	str(&c.tlsCert, "tls-cert", "GENESIS_TLS_CERT", "", "PEM certificate (chain) `file` to serve HTTPS with, reloaded when it changes (with --tls-key)")
	str(&c.tlsKey, "tls-key", "GENESIS_TLS_KEY", "", "PEM private key `file` of --tls-cert")
	dur(&c.tokenTTL, "enroll-token-ttl", "GENESIS_ENROLL_TOKEN_TTL", agentapi.DefaultTokenTTL, "how long a droplet's one-time enrollment token is valid")
	dur(&c.manifestTTL, "manifest-ttl", "GENESIS_MANIFEST_TTL", agentapi.DefaultManifestTTL, "lifetime of a signed manifest (re-signed when a third remains)")
	dur(&c.manifestSweep, "manifest-sweep", "GENESIS_MANIFEST_SWEEP", agentapi.DefaultSweep, "how often the leader re-renders drifted or expiring manifests")
	str(&c.webhookSecret, "webhook-secret", "GENESIS_WEBHOOK_SECRET", "", "secret of the push webhook's HMAC (empty refuses every hook)")
	str(&c.logFormat, "log-format", "GENESIS_LOG_FORMAT", "json", "log format: json or text")
	str(&c.logLevel, "log-level", "GENESIS_LOG_LEVEL", "info", "log level: debug, info, warn or error")
	dur(&c.pollInterval, "poll-interval", "GENESIS_POLL_INTERVAL", tenants.DefaultPollInterval, "how often the state repository is fetched (±10% jitter)")
	dur(&c.resync, "resync", "GENESIS_RESYNC", 30*time.Second, "how often the leader re-plans without a new commit, to catch drift")
	str(&c.replicaID, "replica-id", "GENESIS_REPLICA_ID", defaultReplicaID(), "this replica's name, stored with the observations it makes as leader (GET /v1/observed's leader)")
	dur(&c.observedMaxAge, "observed-max-age", "GENESIS_OBSERVED_MAX_AGE", 0, "GET /v1/observed answers 503 when the leader's stored observation is older (default 5 × --resync)")
	str(&c.notifyURL, "notify-url", "GENESIS_NOTIFY_URL", "", "URL idle-hibernation warnings are POSTed to as JSON (optional)")
	dur(&c.prepareTimeout, "hibernate-prepare-timeout", "GENESIS_HIBERNATE_PREPARE_TIMEOUT", reconciler.DefaultPrepareTimeout,
		"how long a hibernation waits for the agent to confirm n8n stopped before it snapshots anyway")
	dur(&c.watchdogEvery, "watchdog-every", "GENESIS_WATCHDOG_EVERY", reconciler.DefaultWatchdogEvery, "how often the leader runs the watchdog (heartbeat health, remediation)")
	allow := getenv("GENESIS_ALLOW_MASS_CHANGE") == "true"
	fs.BoolVar(&c.allowMassChange, "allow-mass-change", allow, "let plans past the fleet's safety limits run ($GENESIS_ALLOW_MASS_CHANGE=true)")
	str(&c.tokensFile, "tokens", "GENESIS_TOKENS_FILE", "", "API tokens file (JSON lines {name, sha256, scopes}; genesis token new); enables the tenant API and bearer checks")
	fs.BoolVar(&c.insecureNoAuth, "insecure-no-auth", getenv("GENESIS_INSECURE_NO_AUTH") == "true",
		"serve without --tokens: every API route answers anyone (demo and tests only; $GENESIS_INSECURE_NO_AUTH=true)")
	fs.BoolVar(&c.metricsTokenRequired, "metrics-token-required", getenv("GENESIS_METRICS_TOKEN_REQUIRED") == "true", "GET /metrics needs a token with the metrics scope ($GENESIS_METRICS_TOKEN_REQUIRED=true)")
	fs.BoolVar(&c.propose, "propose", getenv("GENESIS_PROPOSE") == "true", "tenant API writes push a branch genesis/proposals/<id>-<commit> per change for review instead of the branch ($GENESIS_PROPOSE=true)")
	c.gitUser, c.gitToken = getenv("GENESIS_GIT_USER"), getenv("GENESIS_GIT_TOKEN")
	fs.Float64Var(&c.apiRate, "api-rate", 20, "requests per second each API token may make (bursts of twice that)")
	dur(&c.http.readHeader, "http-read-header-timeout", "GENESIS_HTTP_READ_HEADER_TIMEOUT", DefaultReadHeaderTimeout, "longest a request's headers (or a silent new connection) may take")
	dur(&c.http.read, "http-read-timeout", "GENESIS_HTTP_READ_TIMEOUT", DefaultReadTimeout, "longest a whole request, body included, may take to arrive")
	dur(&c.http.write, "http-write-timeout", "GENESIS_HTTP_WRITE_TIMEOUT", DefaultWriteTimeout, "longest a response may take (must exceed the 60s manifest long-poll)")
	dur(&c.http.idle, "http-idle-timeout", "GENESIS_HTTP_IDLE_TIMEOUT", DefaultIdleTimeout, "how long an idle keep-alive connection is kept")
	maxConns := defaultMaxConnections()
	if v := getenv("GENESIS_MAX_CONNECTIONS"); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			maxConns = n
		}
	}
	fs.IntVar(&c.http.maxConns, "max-connections", maxConns, "most HTTP connections open at once, 0 for no limit (default: the open-file limit less 256 for Postgres and git) ($GENESIS_MAX_CONNECTIONS)")
	fs.IntVar(&c.crashAfterJournalWrites, "crash-after-journal-writes", 0, "reliability suite only: SIGKILL this process right after its Nth committed journal write (0: never)")
	fs.Float64Var(&c.unauthRate, "unauth-rate", auth.DefaultFailureRate, "unauthenticated answers (401, 403) per second a client regains")
	fs.IntVar(&c.unauthBurst, "unauth-burst", auth.DefaultFailureBurst, "unauthenticated answers a client may collect before every request of it gets 429 (0: no limit)")
	str(&c.trustedProxies, "trusted-proxies", "GENESIS_TRUSTED_PROXIES", "", "comma-separated addresses or CIDR prefixes of proxies whose X-Forwarded-For names the client (for the per-client limit on unauthenticated requests)")
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
	switch {
	case fs.NArg() > 0:
		return c, cliexit.Usage("unexpected arguments %q", fs.Args())
	case c.databaseURL == "":
		return c, cliexit.Usage("--database-url (or DATABASE_URL) is required")
	case (c.stateRepo == "") == (c.stateDir == ""):
		return c, cliexit.Usage("give exactly one of --state-repo and --state-dir")
	case c.tokensFile == "" && !c.insecureNoAuth:
		return c, cliexit.Usage("refusing to serve without --tokens ($GENESIS_TOKENS_FILE): every API route " +
			"(wake, retry, /v1/fleet, /v1/observed) would answer anyone; make a tokens file with `genesis token new`, " +
			"or, for a demo or a test only, pass --insecure-no-auth")
	case c.tokensFile != "" && c.insecureNoAuth:
		return c, cliexit.Usage("--insecure-no-auth and --tokens contradict each other; drop --insecure-no-auth")
	case c.insecureNoAuth && c.metricsTokenRequired:
		return c, cliexit.Usage("--metrics-token-required needs --tokens")
	case c.unauthBurst < 0 || c.unauthRate <= 0:
		return c, cliexit.Usage("--unauth-burst must not be negative and --unauth-rate must be positive")
	}
	if err := c.http.check(); err != nil {
		return c, err
	}
	if err := store.CheckReplicaID(c.replicaID); err != nil {
		return c, cliexit.Usage("--replica-id: %v", err)
	}
	if c.observedMaxAge <= 0 {
		c.observedMaxAge = 5 * c.resync
	}
	if _, err := auth.ParsePrefixes(c.trustedProxies); err != nil {
		return c, cliexit.Usage("--trusted-proxies: %v", err)
	}
	if !strings.HasSuffix(c.doAPIURL, "/") {
		c.doAPIURL += "/"
	}
	if err := checkTransportFlags(&c); err != nil {
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

	insecure := prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_insecure_no_auth",
		Help: "1 when this replica serves its API without tokens (--insecure-no-auth: demo and tests only)."})
	reg.MustRegister(insecure)
	if c.insecureNoAuth {
		insecure.Set(1)
		log.Error("INSECURE: serving without authentication (--insecure-no-auth): wake, retry, /v1/fleet and /v1/observed answer anyone; for demos and tests only",
			"component", "http")
	}

	var storeOpts []store.Option
	if c.crashAfterJournalWrites > 0 {
		storeOpts = append(storeOpts, store.WithTracer(newCrashHook(c.crashAfterJournalWrites)))
	}
	st, err := store.Open(ctx, c.databaseURL, log, storeOpts...)
	if err != nil {
		return err
	}
	defer st.Close()
	reg.MustRegister(fleetstats.New(fleetstats.Config{Pool: st.Pool(), Logger: log}))

	var src tenants.Syncer
	watchDir := ""
	last, err := st.GetState(ctx, "reconciled_commit")
	if err != nil {
		return err
	}
	var gitSrc *tenants.Source
	gitCred, err := gitAuth(c)
	if err != nil {
		return err
	}
	if c.stateDir != "" {
		src, watchDir = tenants.NewDirSource(c.stateDir, log), c.stateDir
	} else {
		gitSrc, err = tenants.Open(tenants.Config{Repo: c.stateRepo, Branch: c.branch, CacheDir: c.cacheDir, Auth: gitCred, LastReconciled: last, Logger: log})
		if err != nil {
			return err
		}
		src = gitSrc
		if !tenants.IsURL(c.stateRepo) {
			watchDir = c.stateRepo
		}
	}
	signer, ids, err := loadKeys(c)
	if err != nil {
		return err
	}
	announce, err := loadAnnounced(c.announce.vals)
	if err != nil {
		return err
	}
	var compose []byte
	if c.dropletCompose != "" {
		if compose, err = os.ReadFile(c.dropletCompose); err != nil {
			return fmt.Errorf("read --droplet-compose: %w", err)
		}
	}
	ln, err := net.Listen("tcp", c.listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The limit counts TCP connections, under TLS: http.Server must see
	// the *tls.Conn itself to negotiate HTTP/2.
	ln = limitListener(ln, c.http.maxConns)
	ln, scheme, err := listenTLS(c, ln, log, reg)
	if err != nil {
		return err
	}
	publicURL := c.publicURL
	if publicURL == "" {
		publicURL = scheme + "://" + ln.Addr().String()
	}
	warnPlainHTTP(log, publicURL, c.agentInsecureHTTP)
	var rec *reconciler.Reconciler
	agents := agentapi.New(agentapi.Config{
		Pool: st.Pool(), Logger: log, Registerer: reg, Signer: signer, Identities: ids, Announce: announce, PublicURL: strings.TrimSuffix(publicURL, "/"),
		Desired: func() (tenants.Snapshot, bool) { return rec.Snapshot() }, Leading: func() bool { return rec.Leading() },
		TokenTTL: c.tokenTTL, ManifestTTL: c.manifestTTL, Sweep: c.manifestSweep, Compose: compose, AgentURL: c.agentBinaryURL,
		AgentSHA256: c.agentBinarySHA256, AgentInsecureHTTP: c.agentInsecureHTTP,
	})
	var userData func(context.Context, plan.Action) (string, error)
	var manifest func(context.Context, plan.Action) error
	if agents.Enabled() {
		userData, manifest = agents.UserData, agents.RenderAction
	} else {
		log.Warn("agent protocol disabled: give --signing-key and --age-identity; droplets get no user data and enrollment answers 503", "component", "agentapi")
	}
	pools := newCloudFactory(c.doAPIURL, getenv, log, reg)
	var notifier func(context.Context, notify.Notification) error
	if c.notifyURL != "" {
		notifier = (&notify.Webhook{URL: c.notifyURL}).Send
	}
	recMetrics := reconciler.NewMetrics(reg)
	observations := reconciler.NewObservations(reconciler.ObservationsConfig{Store: st, Replica: c.replicaID, MaxAge: c.observedMaxAge, Logger: log, Registerer: reg})
	rec = reconciler.New(reconciler.Config{
		Store: st, NewCloud: pools.build, Logger: log, Metrics: recMetrics,
		UserData: userData, Manifest: manifest,
		AllowMassChange: c.allowMassChange, Resync: c.resync, WatchdogEvery: c.watchdogEvery,
		PrepareTimeout: c.prepareTimeout, Notify: notifier, Observations: observations,
		Reconciled: func(commit string) {
			if gitSrc == nil || commit == last {
				return
			}
			if err := gitSrc.MarkReconciled(commit); err != nil {
				log.Error("mark reconciled", "commit", commit, "err", err)
				return
			}
			if err := st.SetState(context.WithoutCancel(ctx), "reconciled_commit", commit); err != nil {
				log.Error("persist reconciled commit", "err", err)
				return
			}
			last = commit
		},
	})
	watcher := tenants.NewWatcher(src, tenants.WatchConfig{Interval: c.pollInterval, WatchDir: watchDir, Logger: log, OnSync: recMetrics.ObserveSync})
	var api *stateapi.API
	trigger := func() {
		watcher.Trigger()
		if api != nil {
			api.Refresh()
		}
	}
	events := reconciler.NewEvents(reconciler.EventsConfig{Store: st, Reconciler: rec, Fetch: trigger, Logger: log, Registerer: reg})
	authn, api, err := buildAPI(c, st, ids, log, func() { _ = events.Pushed(context.WithoutCancel(ctx)) })
	if err != nil {
		return err
	}

	proxies, _ := auth.ParsePrefixes(c.trustedProxies) // checked by parseFlags
	handler := fleetapi.Handler(fleetapi.HandlerConfig{Reconciler: rec, Store: st, Gatherer: reg,
		WebhookSecret: []byte(c.webhookSecret), Events: events, Observations: observations, Agents: agents.Handler(),
		Auth: authn, API: api, MetricsTokenRequired: c.metricsTokenRequired})
	if c.unauthBurst > 0 {
		handler = auth.NewFailures(auth.FailuresConfig{Rate: c.unauthRate, Burst: c.unauthBurst, TrustedProxies: proxies,
			Logger: log, Registerer: reg}).Wrap(handler)
	} else {
		log.Warn("no limit on unauthenticated requests per client (--unauth-burst 0)", "component", "http")
	}
	srv := newServer(handler, c.http)
	// The server's own errors (TLS handshakes, plain HTTP to the TLS port)
	// as structured lines.
	srv.ErrorLog = slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)
	log.Info("listening", "component", "http", "addr", ln.Addr().String(), "scheme", scheme, "limits", c.http.describe())
	fmt.Fprintf(stdout, "listening on %s://%s\n", scheme, ln.Addr())

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return watcher.Run(ctx, func(ctx context.Context, snap tenants.Snapshot, err error) {
			rec.Deliver(ctx, snap, err)
			agents.Kick() // templates or fleet defaults may have changed
		})
	})
	g.Go(func() error { return rec.Run(ctx) })
	g.Go(func() error { return events.Run(ctx) })
	g.Go(func() error { return agents.Run(ctx) })
	if api != nil {
		g.Go(func() error { return api.Run(ctx) })
	}
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return srv.Shutdown(shut)
	})
	err = g.Wait()
	log.Info("stopped")
	return err
}

// loadKeys reads the manifest-signing key and the fleet's age identity; a
// flag left empty yields nil. Errors name the file, never its content.
func loadKeys(c config) (*dsse.Signer, []age.Identity, error) {
	var signer *dsse.Signer
	if c.signingKey != "" {
		b, err := os.ReadFile(c.signingKey)
		if err != nil {
			return nil, nil, fmt.Errorf("read --signing-key: %w", err)
		}
		key, err := dsse.ParsePrivateKeyPEM(b)
		clear(b)
		if err != nil {
			return nil, nil, fmt.Errorf("--signing-key %s: not a PKCS#8 PEM ed25519 private key", c.signingKey)
		}
		signer = dsse.NewSigner(key)
	}
	var ids []age.Identity
	if c.ageIdentity != "" {
		f, err := os.Open(c.ageIdentity)
		if err != nil {
			return nil, nil, fmt.Errorf("read --age-identity: %w", err)
		}
		defer f.Close()
		ids, err = age.ParseIdentities(f)
		if err != nil {
			return nil, nil, fmt.Errorf("--age-identity %s: not an age identity file", c.ageIdentity)
		}
	}
	return signer, ids, nil
}

// loadAnnounced reads the public keys to announce, as canonical PEM.
func loadAnnounced(files []string) ([]string, error) {
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read --announce-signing-key: %w", err)
		}
		k, err := dsse.ParsePublicKeyPEM(b)
		if err != nil {
			return nil, fmt.Errorf("--announce-signing-key %s: not a PKIX PEM ed25519 public key", f)
		}
		out = append(out, string(dsse.MarshalPublicKeyPEM(k)))
	}
	return out, nil
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
