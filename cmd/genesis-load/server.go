package main

import (
	"bytes"
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/internal/logflag"
	"genesis.dev/fleet/internal/pgserver"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

// serverConfig is what the reconciler under load is started with.
type serverConfig struct {
	StateRepo     string
	Signer        *dsse.Signer
	Identity      age.Identity
	WebhookSecret []byte
}

// serverInfo is how the load tool reaches a started server.
type serverInfo struct {
	URL         string `json:"url"`
	DatabaseURL string `json:"database_url"`
	// BareURL serves bare304 from the same process: http304's baseline.
	BareURL string `json:"bare_url"`
	PID     int    `json:"pid"`
}

// serveFleet runs the reconciler's agent side as genesis-reconciler wires
// it, minus DigitalOcean: a throwaway Postgres with the migrations, the
// state repository read by tenants.Source and driven by tenants.Watcher
// (a signed POST /hooks/git triggers a fetch, as a push does),
// agentapi.Service (enrollment, manifests, heartbeats, the sweep kicked on
// every snapshot) and /metrics, on 127.0.0.1, and bare304 on a second
// port (the same process serves http304's baseline). It calls ready once the
// state repository has been read, and runs until ctx ends.
func serveFleet(ctx context.Context, cfg serverConfig, log *slog.Logger, ready func(serverInfo)) (err error) {
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
	st, err := store.Open(ctx, pg.URL("genesis"), log)
	if err != nil {
		return err
	}
	defer st.Close()
	src, err := tenants.Open(tenants.Config{Repo: cfg.StateRepo, Logger: log})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	url := "http://" + ln.Addr().String()
	bareLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return err
	}
	bare := &http.Server{Handler: bare304, ReadHeaderTimeout: 10 * time.Second}
	var snap atomic.Pointer[tenants.Snapshot]
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	svc := agentapi.New(agentapi.Config{
		Store: st, Logger: log, Registerer: reg, Signer: cfg.Signer, Identities: []age.Identity{cfg.Identity}, PublicURL: url,
		Desired: func() (tenants.Snapshot, bool) {
			if s := snap.Load(); s != nil {
				return *s, true
			}
			return tenants.Snapshot{}, false
		},
	})
	watcher := tenants.NewWatcher(src, tenants.WatchConfig{Logger: log})
	mux := http.NewServeMux()
	mux.Handle("/v1/", svc.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /hooks/git", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
		if err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := tenants.VerifySignature(cfg.WebhookSecret, body, r.Header.Get(tenants.SignatureHeader)); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		watcher.Trigger()
		w.WriteHeader(http.StatusAccepted)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	first := make(chan error, 1)
	var once sync.Once
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return watcher.Run(gctx, func(ctx context.Context, s tenants.Snapshot, err error) {
			if err != nil {
				return
			}
			once.Do(func() { first <- st.SyncAccounts(ctx, s.Fleet) })
			snap.Store(&s)
			svc.Kick()
		})
	})
	g.Go(func() error { return svc.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		if err := bare.Serve(bareLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		bare.Close()
		// The service answers parked long-polls as it stops; then the
		// server drains.
		shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(shut); err != nil {
			srv.Close()
		}
		return nil
	})
	g.Go(func() error {
		select {
		case err := <-first:
			if err != nil {
				return fmt.Errorf("record accounts: %w", err)
			}
			ready(serverInfo{URL: url, DatabaseURL: pg.URL("genesis"), PID: os.Getpid(), BareURL: "http://" + bareLn.Addr().String()})
		case <-gctx.Done():
		}
		return nil
	})
	return g.Wait()
}

// serveMain is `genesis-load serve`, the reconciler side of a subprocess
// run: it serves until stdin closes or a signal arrives, and prints one
// JSON line (serverInfo) on stdout when ready.
func serveMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("genesis-load serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var repo, keyFile, idFile, secretFile, logFormat, logLevel string
	fs.StringVar(&repo, "state-repo", "", "local git state repository")
	fs.StringVar(&keyFile, "signing-key", "", "ed25519 manifest-signing key (PKCS#8 PEM)")
	fs.StringVar(&idFile, "age-identity", "", "age identity opening the tenants' credentials")
	fs.StringVar(&secretFile, "webhook-secret-file", "", "file holding the push webhook's HMAC secret")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.StringVar(&logLevel, "log-level", "warn", "log level")
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
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	key, err := dsse.ParsePrivateKeyPEM(kb)
	if err != nil {
		return fmt.Errorf("--signing-key %s: not a PKCS#8 PEM ed25519 private key", keyFile)
	}
	idb, err := os.ReadFile(idFile)
	if err != nil {
		return err
	}
	ids, err := age.ParseIdentities(bytes.NewReader(idb))
	if err != nil || len(ids) != 1 {
		return fmt.Errorf("--age-identity %s: not one age identity", idFile)
	}
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		return err
	}
	// One socket per parked long-poll: as many as the hard limit allows.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			log.Warn("raise open-file limit", "err", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		io.Copy(io.Discard, stdin) // the parent closes it (or dies)
		cancel()
	}()
	return serveFleet(ctx, serverConfig{StateRepo: repo, Signer: dsse.NewSigner(key), Identity: ids[0], WebhookSecret: bytes.TrimSpace(secret)},
		log, func(info serverInfo) {
			b, _ := json.Marshal(info)
			fmt.Fprintf(stdout, "%s\n", b)
		})
}
