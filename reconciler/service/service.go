package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/reconciler"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/availability"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/console"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/fleetstats"
	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/rollouts"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

// Service is one reconciler replica, wired: the store, the state
// repository's watcher, the loop, the event listener, the agent protocol,
// the tenant API and the HTTP server on its listener. New builds it, Run
// runs it until its context ends, Close releases what New opened. With
// Config.AgentSideOnly the loop is built but never run.
type Service struct {
	log       *slog.Logger
	st        *store.Store
	ln        net.Listener
	watcher   *tenants.Watcher
	rec       *reconciler.Reconciler
	events    *reconciler.Events
	agents    *agentapi.Service
	api       *stateapi.API
	srv       *http.Server
	handler   http.Handler
	addr      string
	scheme    string
	publicURL string
	// agentSideOnly and agentSideFollower are the Config's (both: --role
	// serve).
	agentSideOnly, agentSideFollower bool
	backups                          *backup.Service
	rollouts                         *rollouts.Executor
	activator                        *activatorServer
	prober                           *availability.Prober
	console                          *console.Console
}

// New opens the database (applying migrations), reads the keys, listens on
// c.Listen and wires every part of the reconciler as genesis-reconciler
// runs it; nothing runs until Run. Metrics are registered on reg, which
// also serves GET /metrics. The caller closes the Service.
func New(ctx context.Context, c Config, log *slog.Logger, reg *prometheus.Registry) (_ *Service, err error) {
	getenv := c.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	s := &Service{log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	insecure := prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_insecure_no_auth",
		Help: "1 when this replica serves its API without tokens (--insecure-no-auth: demo and tests only)."})
	eligible := prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_replica_leader_eligible",
		Help: "1 when this replica campaigns for the leader lock (--role full), 0 when it never leads (--role serve)."})
	reg.MustRegister(insecure, eligible)
	if !c.AgentSideOnly {
		eligible.Set(1)
	}
	if c.InsecureNoAuth {
		insecure.Set(1)
		log.Error("INSECURE: serving without authentication (--insecure-no-auth): wake, retry, /v1/fleet and /v1/observed answer anyone; for demos and tests only",
			"component", "http")
	}

	var storeOpts []store.Option
	if c.CrashAfterJournalWrites > 0 {
		storeOpts = append(storeOpts, store.WithTracer(newCrashHook(c.CrashAfterJournalWrites)))
	}
	st, err := store.Open(ctx, c.DatabaseURL, log, storeOpts...)
	if err != nil {
		return nil, err
	}
	s.st = st
	reg.MustRegister(fleetstats.New(fleetstats.Config{Pool: st.Pool(), Logger: log}))

	var src tenants.Syncer
	watchDir := ""
	last, err := st.GetState(ctx, "reconciled_commit")
	if err != nil {
		return nil, err
	}
	var gitSrc *tenants.Source
	gitCred, err := gitAuth(c)
	if err != nil {
		return nil, err
	}
	if c.StateDir != "" {
		src, watchDir = tenants.NewDirSource(c.StateDir, log), c.StateDir
	} else {
		gitSrc, err = tenants.Open(tenants.Config{Repo: c.StateRepo, Branch: c.Branch, CacheDir: c.CacheDir, Auth: gitCred, LastReconciled: last, Logger: log})
		if err != nil {
			return nil, err
		}
		src = gitSrc
		if !tenants.IsURL(c.StateRepo) {
			watchDir = c.StateRepo
		}
	}
	signer, ids, err := loadKeys(c)
	if err != nil {
		return nil, err
	}
	announce, err := loadAnnounced(c.Announce)
	if err != nil {
		return nil, err
	}
	var compose []byte
	if c.DropletCompose != "" {
		if compose, err = os.ReadFile(c.DropletCompose); err != nil {
			return nil, fmt.Errorf("read --droplet-compose: %w", err)
		}
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	// The limit counts TCP connections, under TLS: http.Server must see
	// the *tls.Conn itself to negotiate HTTP/2.
	ln = limitListener(ln, c.HTTP.MaxConns)
	s.ln = ln
	ln, scheme, err := listenTLS(c, ln, log, reg)
	if err != nil {
		s.ln = nil // listenTLS closed it
		return nil, err
	}
	s.ln = ln
	publicURL := c.PublicURL
	if publicURL == "" {
		publicURL = scheme + "://" + ln.Addr().String()
	}
	warnPlainHTTP(log, publicURL, c.AgentInsecureHTTP)
	var rec *reconciler.Reconciler
	leading := func() bool { return rec.Leading() }
	if c.AgentSideOnly {
		// No loop leads: this replica sweeps, unless it is told it follows.
		leading = func() bool { return !c.AgentSideFollower }
	}
	bkKeys, err := loadBackupKeys(c.BackupKey, log)
	if err != nil {
		return nil, err
	}
	var backups *backup.Service
	if bkKeys != nil {
		desired := func() (tenants.Snapshot, bool) { return rec.Snapshot() }
		backups = backup.New(backup.Config{Store: st, Objects: &fleetObjects{desired: desired, getenv: getenv}, Keys: bkKeys,
			Desired: desired, Logger: log, Registerer: reg, Live: st.LiveSince,
			Snapshots: func() map[string]backup.SnapshotCopy { return newestSnapshots(rec.Observed()) }})
	}
	agents := agentapi.New(agentapi.Config{
		Backups: backups,
		Store:   st, Logger: log, Registerer: reg, Signer: signer, Identities: ids, Announce: announce, PublicURL: strings.TrimSuffix(publicURL, "/"),
		Desired: func() (tenants.Snapshot, bool) { return rec.Snapshot() }, Leading: leading,
		TokenTTL: c.TokenTTL, ManifestTTL: c.ManifestTTL, Sweep: c.ManifestSweep, Compose: compose, AgentURL: c.AgentBinaryURL,
		AgentSHA256: c.AgentBinarySHA256, AgentInsecureHTTP: c.AgentInsecureHTTP,
	})
	var userData func(context.Context, plan.Action) (string, error)
	var manifest func(context.Context, plan.Action) error
	var rotateSecrets func(context.Context, string, string, string) (store.Rotation, error)
	if agents.Enabled() {
		userData, manifest, rotateSecrets = agents.UserData, agents.RenderAction, agents.RequestRotation
	} else {
		log.Warn("agent protocol disabled: give --signing-key and --age-identity; droplets get no user data and enrollment answers 503", "component", "agentapi")
	}
	newCloud := newCloudFactory(c.DOAPIURL, getenv, log, reg).build
	switch {
	case c.AgentSideOnly && c.AgentSideFollower:
		newCloud = noCloud
		log.Info("role serve: this replica never leads (no control loop, no DigitalOcean token, no sweep); a --role full replica of the same database leads",
			"component", "reconciler")
	case c.AgentSideOnly:
		newCloud = noCloud
		log.Info("agent side only: no control loop, no DigitalOcean", "component", "reconciler")
	}
	var targets []notify.Target
	if c.NotifyURL != "" {
		targets = append(targets, notify.Target{Name: "webhook", Send: (&notify.Webhook{URL: c.NotifyURL}).Send})
	}
	if c.NotifySlackURL != "" {
		targets = append(targets, notify.Target{Name: "slack", Send: (&notify.Slack{URL: c.NotifySlackURL}).Send})
	}
	recMetrics := reconciler.NewMetrics(reg)
	observations := reconciler.NewObservations(reconciler.ObservationsConfig{Store: st, Replica: c.ReplicaID, MaxAge: c.ObservedMaxAge, Logger: log, Registerer: reg})
	rec = reconciler.New(reconciler.Config{
		Store: st, NewCloud: newCloud, Logger: log, Metrics: recMetrics, OnLead: agents.Kick,
		UserData: userData, Manifest: manifest, RotateSecrets: rotateSecrets,
		AllowMassChange: c.AllowMassChange, SkipDisabledAccounts: c.SkipDisabledAccounts, Resync: c.Resync, WatchdogEvery: c.WatchdogEvery,
		PrepareTimeout: c.PrepareTimeout, NotifyTargets: targets, Observations: observations,
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
	watcher := tenants.NewWatcher(src, tenants.WatchConfig{Interval: c.PollInterval, WatchDir: watchDir, Logger: log, OnSync: recMetrics.ObserveSync})
	var api *stateapi.API
	trigger := func() {
		watcher.Trigger()
		if api != nil {
			api.Refresh()
		}
	}
	events := reconciler.NewEvents(reconciler.EventsConfig{Store: st, Reconciler: rec, Fetch: trigger, Logger: log, Registerer: reg})
	var points func() map[string]backup.Point
	if backups != nil {
		points = backups.Points
	}
	authn, api, err := buildAPI(c, st, ids, log, func() { _ = events.Pushed(context.WithoutCancel(ctx)) }, points)
	if err != nil {
		return nil, err
	}

	proxies, _ := auth.ParsePrefixes(c.TrustedProxies) // checked by genesis-reconciler's parseFlags
	handler := fleetapi.Handler(fleetapi.HandlerConfig{Reconciler: rec, Store: st, Gatherer: reg,
		WebhookSecret: []byte(c.WebhookSecret), Events: events, Observations: observations, Agents: agents.Handler(), RecoveryPoints: points,
		Auth: authn, API: api, MetricsTokenRequired: c.MetricsTokenRequired, Availability: availabilityReport(st)})
	if c.Console {
		if s.console, handler, err = newConsole(c, st, handler, authn, rec.Snapshot, rec.Leading, points, reg, log); err != nil {
			return nil, err
		}
	}
	if c.UnauthBurst > 0 {
		handler = auth.NewFailures(auth.FailuresConfig{Rate: c.UnauthRate, Burst: c.UnauthBurst, TrustedProxies: proxies,
			Logger: log, Registerer: reg}).Wrap(handler)
	} else {
		log.Warn("no limit on unauthenticated requests per client (--unauth-burst 0)", "component", "http")
	}
	srv := newServer(handler, c.HTTP)
	// The server's own errors (TLS handshakes, plain HTTP to the TLS port)
	// as structured lines.
	srv.ErrorLog = slog.NewLogLogger(log.With("component", "http").Handler(), slog.LevelWarn)
	log.Info("listening", "component", "http", "addr", ln.Addr().String(), "scheme", scheme, "limits", c.HTTP.describe())
	s.watcher, s.rec, s.events, s.agents, s.api, s.srv, s.handler = watcher, rec, events, agents, api, srv, handler
	s.addr, s.scheme, s.publicURL = ln.Addr().String(), scheme, publicURL
	s.agentSideOnly, s.agentSideFollower = c.AgentSideOnly, c.AgentSideFollower
	s.backups = backups
	s.rollouts = rollouts.New(rollouts.Config{Store: st, Desired: rec.Snapshot, Kick: agents.Kick, Logger: log, Registerer: reg, Every: c.RolloutEvery,
		Notify: rec.Notice})
	if s.prober, err = newProber(c.Probe, c.ReplicaID, rec, st, log, reg); err != nil {
		return nil, err
	}
	if c.Activator.Listen != "" {
		if s.activator, err = newActivator(c.Activator, rec, st, log, reg); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Addr is the address the server listens on.
func (s *Service) Addr() string { return s.addr }

// URL is the server's own base URL (scheme and listen address).
func (s *Service) URL() string { return s.scheme + "://" + s.addr }

// PublicURL is the base URL agents are told to reach (--public-url, or URL).
func (s *Service) PublicURL() string { return s.publicURL }

// Handler is the server's whole HTTP handler (API, agent protocol, metrics,
// webhook), with the limit on unauthenticated requests when configured.
func (s *Service) Handler() http.Handler { return s.handler }

// Run runs every part until ctx ends or one of them fails, then shuts the
// server down (parked long-polls are answered as the agent side stops).
// With Config.AgentSideOnly the control loop is not run.
func (s *Service) Run(ctx context.Context) error {
	watcher, rec, events, agents, api, srv, ln := s.watcher, s.rec, s.events, s.agents, s.api, s.srv, s.ln
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return watcher.Run(ctx, func(ctx context.Context, snap tenants.Snapshot, err error) {
			if s.agentSideOnly && !s.agentSideFollower && err == nil {
				s.recordAccounts(ctx, snap)
			}
			rec.Deliver(ctx, snap, err)
			agents.Kick() // templates or fleet defaults may have changed
		})
	})
	if !s.agentSideOnly {
		g.Go(func() error { return rec.Run(ctx) })
	}
	if s.backups != nil {
		leading := rec.Leading
		if s.agentSideOnly {
			leading = func() bool { return false } // no loop: no retention either
		}
		g.Go(func() error { return runBackups(ctx, s.backups, leading, s.rec.Notice, s.log) })
	}
	leader := rec.LeaderContext
	if s.agentSideOnly {
		leader = func() (context.Context, bool) { return nil, false } // no loop: no rollouts move
	}
	g.Go(func() error { return s.rollouts.Run(ctx, leader) })
	if s.activator != nil {
		g.Go(func() error { return s.activator.run(ctx) })
	}
	if s.prober != nil { // every replica: each probes its shards
		g.Go(func() error { return s.prober.Run(ctx) })
		if !s.agentSideOnly { // the leader tells people of a fast burn
			g.Go(func() error { return runBurnNotices(ctx, s.st, rec.Leading, rec.Notice, s.log) })
		}
	}
	if s.console != nil { // one LISTEN for every browser of this replica
		g.Go(func() error { return s.console.Run(ctx) })
	}
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
	err := g.Wait()
	s.log.Info("stopped")
	return err
}

// recordAccounts records snap's accounts, as the loop's pass does before it
// plans, for an agent-side-only replica (whose loop does not run). It runs
// before the snapshot is delivered, so /readyz answers ready only once the
// first snapshot's accounts are recorded (or their failure logged: the next
// snapshot tries again).
func (s *Service) recordAccounts(ctx context.Context, snap tenants.Snapshot) {
	if snap.Fleet == nil {
		return
	}
	if err := s.st.SyncAccounts(ctx, snap.Fleet); err != nil && ctx.Err() == nil {
		s.log.Error("record accounts failed", "component", "reconciler", "err", err)
	}
}

// Close releases what New opened: the listener (when Run did not serve it)
// and the database pool. Call it after Run returned.
func (s *Service) Close() {
	if s.ln != nil {
		s.ln.Close()
	}
	if s.activator != nil {
		s.activator.close()
	}
	if s.st != nil {
		s.st.Close()
	}
}

// loadKeys reads the manifest-signing key and the fleet's age identity; a
// flag left empty yields nil. Errors name the file, never its content.
func loadKeys(c Config) (*dsse.Signer, []age.Identity, error) {
	var signer *dsse.Signer
	if c.SigningKey != "" {
		b, err := os.ReadFile(c.SigningKey)
		if err != nil {
			return nil, nil, fmt.Errorf("read --signing-key: %w", err)
		}
		key, err := dsse.ParsePrivateKeyPEM(b)
		clear(b)
		if err != nil {
			return nil, nil, fmt.Errorf("--signing-key %s: not a PKCS#8 PEM ed25519 private key", c.SigningKey)
		}
		signer = dsse.NewSigner(key)
	}
	var ids []age.Identity
	if c.AgeIdentity != "" {
		f, err := os.Open(c.AgeIdentity)
		if err != nil {
			return nil, nil, fmt.Errorf("read --age-identity: %w", err)
		}
		defer f.Close()
		ids, err = age.ParseIdentities(f)
		if err != nil {
			return nil, nil, fmt.Errorf("--age-identity %s: not an age identity file", c.AgeIdentity)
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
