package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/internal/logflag"
	"genesis.dev/fleet/internal/pgserver"
	"genesis.dev/fleet/reconciler/service"
)

// serverConfig is what the reconciler under load is started with: its
// state repository, its keys as genesis-reconciler takes them (files), and
// the push webhook's secret.
type serverConfig struct {
	StateRepo   string
	SigningKey  string // file: ed25519 PKCS#8 PEM
	AgeIdentity string // file: the fleet's age identity
	// WebhookSecret verifies POST /hooks/git.
	WebhookSecret string
	// DatabaseURL is a Postgres shared with other replicas ("": start a
	// throwaway one for this replica alone).
	DatabaseURL string
	// ReplicaID names the replica (default genesis-load).
	ReplicaID string
	// beforeStop, when set, runs as the server starts stopping (its state
	// still in memory).
	beforeStop func()
}

// serverInfo is how the load tool reaches a started server.
type serverInfo struct {
	URL         string `json:"url"`
	DatabaseURL string `json:"database_url"`
	// BareURL serves bare304 from the same process: http304's baseline.
	BareURL string `json:"bare_url"`
	PID     int    `json:"pid"`
}

// serveFleet runs, on 127.0.0.1, a throwaway Postgres and the reconciler
// genesis-reconciler runs, built by the same composition root
// (service.New) with genesis-reconciler's defaults but
// service.Config.AgentSideOnly: no control loop, no DigitalOcean. That is
// the store with the migrations, the state repository read by
// tenants.Source and driven by tenants.Watcher (a signed POST /hooks/git
// triggers a fetch, as a push does), agentapi (enrollment, manifests,
// heartbeats, the sweep kicked on every snapshot), /metrics and the HTTP
// server with its limits. bare304 runs on a second port (the same process
// serves http304's baseline). It calls ready once the reconciler's /readyz
// answers (the state repository read and its accounts recorded), and runs
// until ctx ends.
func serveFleet(ctx context.Context, cfg serverConfig, log *slog.Logger, ready func(serverInfo)) (err error) {
	// One socket per parked long-poll: as many as the hard limit allows,
	// before the server sizes its connection limit by it.
	if err := raiseFDLimit(0); err != nil {
		log.Warn("raise open-file limit", "err", err)
	}
	dbURL := cfg.DatabaseURL
	if dbURL == "" {
		pg, err := pgserver.Start(ctx, pgserver.Options{})
		if err != nil {
			return err
		}
		defer func() {
			if serr := pg.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}()
		if err := pg.CreateDatabase(ctx, "genesis"); err != nil {
			return err
		}
		dbURL = pg.URL("genesis")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc, err := service.New(ctx, reconcilerConfig(cfg, dbURL), log, reg)
	if err != nil {
		return err
	}
	defer svc.Close()
	bareLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	bare := &http.Server{Handler: bare304, ReadHeaderTimeout: 10 * time.Second}

	g, gctx := errgroup.WithContext(ctx)
	// The service answers parked long-polls as it stops; then its server
	// drains.
	g.Go(func() error { return svc.Run(gctx) })
	g.Go(func() error {
		if err := bare.Serve(bareLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		if cfg.beforeStop != nil {
			cfg.beforeStop()
		}
		bare.Close()
		return nil
	})
	g.Go(func() error {
		if waitReady(gctx, &http.Client{Timeout: 5 * time.Second}, svc.URL()) != nil {
			return nil // the group is ending; its first error says why
		}
		ready(serverInfo{URL: svc.URL(), DatabaseURL: dbURL, PID: os.Getpid(), BareURL: "http://" + bareLn.Addr().String()})
		return nil
	})
	return g.Wait()
}

// reconcilerConfig is genesis-reconciler's configuration with its flags'
// defaults, for the load tool's state repository, keys and database,
// listening on a free loopback port, agent side only. No tokens file: the
// API routes the load does not use answer anyone (--insecure-no-auth), on
// loopback, for the length of the run.
func reconcilerConfig(cfg serverConfig, databaseURL string) service.Config {
	c := service.Defaults()
	c.AgentSideOnly = true
	c.StateRepo, c.DatabaseURL, c.Listen = cfg.StateRepo, databaseURL, "127.0.0.1:0"
	c.AgeIdentity, c.SigningKey, c.WebhookSecret = cfg.AgeIdentity, cfg.SigningKey, cfg.WebhookSecret
	c.AgentInsecureHTTP = true // the agents reach it over plain http on loopback
	c.InsecureNoAuth = true
	c.ReplicaID = "genesis-load"
	if cfg.ReplicaID != "" {
		c.ReplicaID = cfg.ReplicaID
	}
	return c
}

// waitReady polls base's GET /readyz through cl until it answers 200 or
// ctx ends.
func waitReady(ctx context.Context, cl *http.Client, base string) error {
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := cl.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// profileDirEnv names the folder profiles go to: each `genesis-load serve`
// writes its own; a scale run fetches its replicas' heap profiles through
// their --debug-listen.
const profileDirEnv = "GENESIS_LOAD_PROFILE_DIR"

// serveMain is `genesis-load serve`, the reconciler side of a subprocess
// run: it serves until stdin closes or a signal arrives, and prints one
// JSON line (serverInfo) on stdout when ready.
func serveMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("genesis-load serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var repo, keyFile, idFile, secretFile, logFormat, logLevel, dbURL, replicaID string
	fs.StringVar(&repo, "state-repo", "", "local git state repository")
	fs.StringVar(&keyFile, "signing-key", "", "ed25519 manifest-signing key (PKCS#8 PEM)")
	fs.StringVar(&idFile, "age-identity", "", "age identity opening the tenants' credentials")
	fs.StringVar(&secretFile, "webhook-secret-file", "", "file holding the push webhook's HMAC secret")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.StringVar(&logLevel, "log-level", "warn", "log level")
	fs.StringVar(&dbURL, "database-url", "", "a Postgres shared with other replicas (default: start a throwaway one)")
	fs.StringVar(&replicaID, "replica-id", "", "the replica's name (default genesis-load)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageErr("%v", err)
	}
	if repo == "" || keyFile == "" || idFile == "" || secretFile == "" {
		return usageErr("serve needs --state-repo, --signing-key, --age-identity and --webhook-secret-file")
	}
	log, err := logflag.New(stderr, logFormat, logLevel)
	if err != nil {
		return usageErr("%v", err)
	}
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, stdin) // the parent closes it (or dies)
		cancel()
	}()
	cfg := serverConfig{StateRepo: repo, SigningKey: keyFile, AgeIdentity: idFile, WebhookSecret: string(bytes.TrimSpace(secret)),
		DatabaseURL: dbURL, ReplicaID: replicaID}
	// GENESIS_LOAD_PROFILE_DIR: each serve process writes a CPU profile of
	// its whole life to <dir>/<replica-id>.cpu.pprof and, as it stops, a
	// heap profile to <dir>/<replica-id>.heap.pprof (where a replica's time
	// and memory go in a scale run).
	if dir := os.Getenv(profileDirEnv); dir != "" {
		name := filepath.Join(dir, cmp.Or(replicaID, "genesis-load"))
		f, err := os.Create(name + ".cpu.pprof")
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
		cfg.beforeStop = func() {
			runtime.GC()
			h, err := os.Create(name + ".heap.pprof")
			if err != nil {
				log.Warn("heap profile", "err", err)
				return
			}
			defer h.Close()
			if err := pprof.WriteHeapProfile(h); err != nil {
				log.Warn("heap profile", "err", err)
			}
		}
	}
	return serveFleet(ctx, cfg, log, func(info serverInfo) {
		b, _ := json.Marshal(info)
		fmt.Fprintf(stdout, "%s\n", b)
	})
}
