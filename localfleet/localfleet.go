// Package localfleet starts a whole Genesis fleet on one machine, on
// 127.0.0.1: a throwaway Postgres (internal/pgserver), the DigitalOcean
// simulator (fakes/dosim) with the fleet's accounts, and the reconciler in
// this process through reconciler/service, the constructor
// genesis-reconciler itself uses, so what runs here is the production
// wiring. Droplets the simulator boots run Options.BootCmd, their "init":
// `genesis-demo droplet` runs a real genesis-agent, Caddy and the n8n
// emulator there. Fleet.Stop stops everything, the droplets' processes
// too.
//
// The demo (cmd/genesis-demo) and the end-to-end tests are built on it. It
// is scaffolding for development, demos and tests: no binary an operator
// deploys (genesis, genesis-reconciler, genesis-agent) may import it, and
// it imports no command.
package localfleet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"filippo.io/age"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/internal/logflag"
	"genesis.dev/fleet/internal/pgserver"
	"genesis.dev/fleet/internal/s3server"
	"genesis.dev/fleet/reconciler/service"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// Options say what to start.
type Options struct {
	// StateRepo is the state repository the reconciler reads: a git URL
	// (file:// for a local bare repository) or a local repository path.
	StateRepo string
	// Accounts are the DigitalOcean accounts to simulate (genesis.yaml's
	// spec.accounts): each gets a made-up token, handed to the reconciler
	// in the variable its TokenEnv names.
	Accounts []schema.Account
	// Work holds the logs (genesis-dosim.log: the simulator and every
	// droplet's boot command; genesis-reconciler.log), the droplets' disks
	// (disks/), the reconciler's git cache and its signing key. Required.
	Work string
	// AgeIdentity is the file holding the fleet's age identity, which opens
	// sealed credentials (none: droplets get no user data).
	AgeIdentity string
	// TokensFile is the reconciler's --tokens file; empty serves the API
	// to anyone (--insecure-no-auth).
	TokensFile string
	// WebhookSecret signs the push webhook (POST /hooks/git).
	WebhookSecret string
	// BootDelay and ActionDelay are the simulator's droplet boot time and
	// action (power off, snapshot) time.
	BootDelay, ActionDelay time.Duration
	// BootCmd is run with sh -c for every droplet that becomes active (its
	// environment: the simulator's DOSIM_* variables); empty boots nothing.
	BootCmd string
	// HookGrace is how long a stopped boot command gets before SIGKILL.
	HookGrace time.Duration
	// Reconciler, when set, adjusts the reconciler's configuration before
	// it starts.
	Reconciler func(*service.Config)
	// WeedBin, when set, turns on backups: a real S3 server (SeaweedFS's
	// weed, scripts/build-weed) on loopback holds them, the reconciler gets
	// a fresh --backup-key and the bucket's keys, and every droplet's boot
	// command gets GENESIS_FLEET_PG_URL and GENESIS_FLEET_PG_BIN (an admin
	// URL of the fleet's Postgres and its binaries: droplet-sim keeps each
	// droplet's "n8n database" there). The state repository must then
	// declare Fleet.Backup in genesis.yaml's spec.backup.
	WeedBin string
	// Names, when set, gives tenants stable names (names.go): DNS on
	// loopback, ACME certificates from Pebble, the activator.
	Names *Names
}

// Backup is what a local fleet with backups gives genesis.yaml's
// spec.backup.
type Backup struct {
	// Spec is a spec.backup for the fleet's S3 server (tiers left to the
	// caller).
	Spec schema.Backup
	// KeyFile holds the reconciler's backup key; its recipient is
	// Spec.Recipients[0].
	KeyFile string
	// S3 is the S3 server (its Down and Up make storage outages).
	S3 *s3server.Server
}

// Fleet is a started local fleet. Stop it.
type Fleet struct {
	// URL is the reconciler's base URL (http://127.0.0.1:PORT).
	URL string
	// ConsoleURL is the fleet console's URL: URL + "/console/" (served
	// unless the reconciler's Config.Console is off).
	ConsoleURL string
	// SimURL is the simulator's base URL (ending in "/").
	SimURL string
	// DatabaseURL is the reconciler's Postgres database.
	DatabaseURL string
	// SigningKey is the file holding the fresh manifest-signing key.
	SigningKey string
	// Backup is set when Options.WeedBin turned backups on.
	Backup *Backup
	// Names is set when Options.Names was.
	Names *NamesInfo

	pg      *pgserver.Server
	sim     *dosim.Sim
	simSrv  *http.Server
	svc     *service.Service
	cancel  context.CancelFunc
	done    chan error // the simulator's, its DNS server's and the reconciler's Run
	runs    int        // how many of them were started
	closers []io.Closer
	tokens  map[string]string // the simulated accounts' tokens by name
}

// Start starts Postgres, the simulator and the reconciler, and returns once
// the reconciler listens. On error, whatever was started is stopped.
func Start(ctx context.Context, o Options) (_ *Fleet, err error) {
	if o.StateRepo == "" || o.Work == "" {
		return nil, errors.New("localfleet: StateRepo and Work are required")
	}
	f := &Fleet{done: make(chan error, 4)}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	f.cancel = cancel
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Stop())
		}
	}()
	if f.pg, err = pgserver.Start(ctx, pgserver.Options{}); err != nil {
		return nil, err
	}
	if err := f.pg.CreateDatabase(ctx, "genesis"); err != nil {
		return f, err
	}
	f.DatabaseURL = f.pg.URL("genesis")

	simLog, err := f.logFile(filepath.Join(o.Work, "genesis-dosim.log"))
	if err != nil {
		return f, err
	}
	env := map[string]string{}
	var hookEnv []string
	if o.WeedBin != "" {
		if f.Backup, err = startBackups(ctx, o.WeedBin, o.Work, env); err != nil {
			return f, err
		}
		f.closers = append(f.closers, closerFunc(f.Backup.S3.Stop))
		hookEnv = []string{"GENESIS_FLEET_PG_URL=" + f.pg.URL("postgres"), "GENESIS_FLEET_PG_BIN=" + f.pg.BinDir()}
	}
	var accounts []dosim.Account
	f.tokens = map[string]string{}
	for _, a := range o.Accounts {
		tok := "localfleet-token-" + a.Name
		accounts = append(accounts, dosim.Account{Name: a.Name, Token: tok, DropletLimit: a.MaxDroplets})
		env[a.TokenEnv] = tok
		f.tokens[a.Name] = tok
	}
	bootCmd := o.BootCmd
	if o.Names != nil {
		if bootCmd, err = f.prepareNames(ctx, o); err != nil {
			return f, err
		}
	}
	log, err := logflag.New(simLog, "json", "info")
	if err != nil {
		return f, err
	}
	f.sim, err = dosim.New(dosim.Config{Accounts: accounts, Seed: 1,
		Limits: dosim.Limits{RatePerMinute: dosim.DefaultRatePerMinute, RatePerHour: dosim.DefaultRatePerHour,
			BootDelay: dosim.Duration(o.BootDelay), ActionDelay: dosim.Duration(o.ActionDelay)},
		DiskRoot: filepath.Join(o.Work, "disks"), BootCmd: bootCmd, HookEnv: hookEnv, HookOutput: simLog, HookGrace: o.HookGrace, Logger: log})
	if err != nil {
		return f, fmt.Errorf("start simulator: %w", err)
	}
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return f, err
	}
	f.SimURL = "http://" + simLn.Addr().String() + "/"
	f.simSrv = &http.Server{Handler: f.sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
	f.runs++
	go func() { f.done <- f.sim.Run(runCtx) }()
	go func() {
		if err := f.simSrv.Serve(simLn); !errors.Is(err, http.ErrServerClosed) {
			log.Error("simulator server", "err", err)
		}
	}()
	if o.Names != nil {
		if err := f.startDNS(ctx, runCtx, o.Names); err != nil {
			return f, err
		}
	}

	f.SigningKey = filepath.Join(o.Work, "signing.pem")
	if err := writeSigningKey(f.SigningKey); err != nil {
		return f, err
	}
	c := service.Defaults()
	c.StateRepo, c.CacheDir = o.StateRepo, filepath.Join(o.Work, "cache")
	c.DatabaseURL, c.DOAPIURL, c.Listen = f.DatabaseURL, f.SimURL, "127.0.0.1:0"
	c.AgeIdentity, c.SigningKey, c.WebhookSecret, c.AgentInsecureHTTP = o.AgeIdentity, f.SigningKey, o.WebhookSecret, true
	c.PollInterval, c.Resync, c.WatchdogEvery = 10*time.Second, time.Second, time.Second
	c.TokensFile, c.InsecureNoAuth = o.TokensFile, o.TokensFile == ""
	c.HTTP.MaxConns = 0 // no connection limit on the local fleet, as before
	c.ReplicaID, c.Getenv = "localfleet", func(k string) string { return env[k] }
	if f.Backup != nil {
		c.BackupKey = f.Backup.KeyFile
	}
	f.activatorConfig(o.Names, &c)
	if o.Reconciler != nil {
		o.Reconciler(&c)
	}
	if c.ObservedMaxAge <= 0 {
		c.ObservedMaxAge = 5 * c.Resync
	}
	recLog, err := f.logFile(filepath.Join(o.Work, "genesis-reconciler.log"))
	if err != nil {
		return f, err
	}
	if log, err = logflag.New(recLog, "json", "info"); err != nil {
		return f, err
	}
	if f.svc, err = service.New(ctx, c, log, prometheus.NewRegistry()); err != nil {
		return f, fmt.Errorf("start the reconciler: %w", err)
	}
	f.URL = f.svc.URL()
	f.ConsoleURL = f.URL + "/console/"
	f.runs++
	go func() { f.done <- f.svc.Run(runCtx) }()
	if err := f.startFront(ctx, o); err != nil {
		return f, err
	}
	return f, nil
}

// logFile creates a log file that Stop closes.
func (f *Fleet) logFile(path string) (*os.File, error) {
	w, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	f.closers = append(f.closers, w)
	return w, nil
}

// Stop stops the reconciler, the simulator (and every droplet's boot
// command) and Postgres, and returns the first errors they ended with.
func (f *Fleet) Stop() error {
	f.cancel()
	var errs []error
	if f.simSrv != nil {
		f.simSrv.Close()
	}
	for ; f.runs > 0; f.runs-- {
		if err := <-f.done; err != nil && !errors.Is(err, context.Canceled) {
			errs = append(errs, err)
		}
	}
	if f.svc != nil {
		f.svc.Close()
	}
	if f.sim != nil {
		errs = append(errs, f.sim.Close())
	}
	if f.pg != nil {
		errs = append(errs, f.pg.Stop())
	}
	for _, c := range f.closers {
		c.Close()
	}
	return errors.Join(errs...)
}

// writeSigningKey makes a fresh ed25519 manifest-signing key.
func writeSigningKey(path string) error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	return os.WriteFile(path, dsse.MarshalPrivateKeyPEM(key), 0o600)
}

// The environment variables a local fleet's spec.backup names for the S3
// server's keys.
const (
	BackupAccessKeyEnv = "GENESIS_LOCALFLEET_S3_ACCESS_KEY"
	BackupSecretKeyEnv = "GENESIS_LOCALFLEET_S3_SECRET_KEY"
)

// startBackups starts the S3 server and writes a backup key; the bucket's
// keys go into env.
func startBackups(ctx context.Context, weed, work string, env map[string]string) (*Backup, error) {
	s3, err := s3server.Start(ctx, s3server.Options{Bin: weed, Dir: filepath.Join(work, "s3"), Bucket: "genesis-backups"})
	if err != nil {
		return nil, fmt.Errorf("start the S3 server: %w", err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return nil, errors.Join(err, s3.Stop())
	}
	key := filepath.Join(work, "backup.key")
	if err := os.WriteFile(key, []byte("# the local fleet's backup key\n"+id.String()+"\n"), 0o600); err != nil {
		return nil, errors.Join(err, s3.Stop())
	}
	env[BackupAccessKeyEnv], env[BackupSecretKeyEnv] = s3.AccessKey(), s3.SecretKey()
	return &Backup{KeyFile: key, S3: s3, Spec: schema.Backup{
		Recipients: []string{id.Recipient().String()},
		Storage: schema.BackupStorage{Endpoint: s3.Endpoint(), Region: s3.Region(), Bucket: s3.Bucket(),
			AccessKeyEnv: BackupAccessKeyEnv, SecretKeyEnv: BackupSecretKeyEnv},
	}}, nil
}

type closerFunc func() error

func (c closerFunc) Close() error { return c() }
