package service

import (
	"context"
	"net"
	"time"

	"genesis.dev/fleet/reconciler"
	"genesis.dev/fleet/reconciler/activator"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/availability"
	"genesis.dev/fleet/reconciler/rollouts"
	"genesis.dev/fleet/tenants"
)

// Config is what a reconciler replica is started with: the values of
// genesis-reconciler's flags (its usage text says what each one does), and
// the environment DigitalOcean tokens are read from.
type Config struct {
	// AgentSideOnly runs the replica without DigitalOcean: the control loop
	// does not run (no leader election, pass, watchdog or cloud client;
	// DOAPIURL and the accounts' tokens are never read), and everything
	// else is wired as genesis-reconciler wires it: the store, the state
	// repository's watcher, the event listener, the agent protocol, the
	// tenant API, the console, /metrics, the push webhook and the HTTP
	// server. Alone (genesis-load's reconciler in its one-replica
	// scenarios), as no loop leads, this replica runs the manifest sweep
	// itself and records genesis.yaml's accounts at every snapshot (the
	// first thing a pass does), so droplets journaled from outside the
	// loop have their account: run one such replica per database.
	AgentSideOnly bool
	// AgentSideFollower, with AgentSideOnly, is genesis-reconciler's
	// --role serve: a replica that never leads. It serves agents, the API
	// and the console, follows the state repository, and hears of
	// manifests through Postgres, but never sweeps, never records the
	// accounts and never campaigns for the leader lock, so it holds no
	// DigitalOcean token: the tier an operator scales with the number of
	// agents (another replica of the same database, --role full, leads).
	AgentSideFollower bool

	StateRepo, StateDir, Branch, CacheDir string
	DatabaseURL, DOAPIURL, Listen         string
	AgeIdentity, SigningKey               string
	// BackupKey is the file of the age identity backups derive each
	// workspace's key from ("": backups are off).
	BackupKey string
	// Announce are files of public keys announced beside the signing key.
	Announce                                                   []string
	WebhookSecret                                              string
	PublicURL, DropletCompose, AgentBinaryURL                  string
	AgentBinarySHA256                                          string
	AgentInsecureHTTP                                          bool
	TLSCert, TLSKey                                            string
	PollInterval, Resync, TokenTTL, ManifestTTL, ManifestSweep time.Duration
	AllowMassChange                                            bool
	// SkipDisabledAccounts: --skip-disabled-accounts.
	SkipDisabledAccounts bool
	// CrashAfterJournalWrites is the reliability suite's fault: SIGKILL
	// this process after the Nth committed journal write (0: never).
	CrashAfterJournalWrites int
	NotifyURL               string
	// NotifySlackURL is --notify-slack-url: notices as a Slack incoming
	// webhook's {"text": ...}.
	NotifySlackURL string
	PrepareTimeout time.Duration
	WatchdogEvery  time.Duration
	// RolloutEvery is how often the leader moves rollouts (default
	// rollouts.DefaultEvery).
	RolloutEvery time.Duration
	TokensFile   string
	// GitUser and GitToken come from the environment only: a flag would
	// show in ps.
	GitUser, GitToken                             string
	MetricsTokenRequired, Propose, InsecureNoAuth bool
	APIRate                                       float64
	HTTP                                          ServerTimeouts
	TrustedProxies                                string
	UnauthRate                                    float64
	UnauthBurst                                   int
	ReplicaID                                     string
	ObservedMaxAge                                time.Duration
	// Getenv reads the DigitalOcean tokens genesis.yaml's accounts name
	// (spec.accounts[].tokenEnv); nil reads the process's environment.
	Getenv func(string) string
	// Activator runs the activator (reconciler/activator) when its Listen
	// is set.
	Activator ActivatorConfig
	// Console serves the fleet console (reconciler/console) under
	// /console/ on the API's listener (--console; on by default).
	Console bool
	// ConsoleKey is the file the console's session key is derived from
	// (--console-key); "" derives it from the tokens file (or, with
	// --insecure-no-auth, makes one per process).
	ConsoleKey string
	// Probe is the availability prober's part (reconciler/availability):
	// the --probe-* flags. It runs on every replica while genesis.yaml has
	// spec.dns.
	Probe ProbeConfig
}

// ProbeConfig is the availability prober's part of a replica: the
// --probe-* flags. Zero values take the prober's defaults.
type ProbeConfig struct {
	// Interval is the time between rounds; Timeout a probe's limit;
	// Concurrency the most probes in flight.
	Interval, Timeout time.Duration
	Concurrency       int
	// CA is a PEM file of the roots that verify the tenants' certificates
	// ("": the system roots).
	CA string
	// Off turns the prober off (--probe-interval 0).
	Off bool
	// DialContext replaces the dialer (tests: names to loopback).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// ActivatorConfig is the activator's part of a replica (activator.go):
// the --activator-* flags. Zero values take the activator's defaults.
type ActivatorConfig struct {
	// Listen is the activator's own listener, serving the held requests
	// its Caddy front proxies and Caddy's /ask ("": no activator).
	Listen string
	// Hold is how long a request waits for its tenant to wake.
	Hold time.Duration
	// MaxHeld and MaxHeldPerTenant bound the requests held at once.
	MaxHeld, MaxHeldPerTenant int
	// MaxBody bounds a held request's buffered body (bytes).
	MaxBody int64
	// DropletPort is the droplets' HTTPS port.
	DropletPort int
	// DropletCA is a PEM file of the roots that verify the droplets'
	// certificates ("": the system roots).
	DropletCA string
	// PixelPaths are the open pixels' path patterns (nil: the default).
	PixelPaths []string
}

// DefaultResync is how often the leader re-plans without a new commit.
const DefaultResync = 30 * time.Second

// DefaultAPIRate is the requests per second each API token may make.
const DefaultAPIRate = 20

// Defaults is the Config of genesis-reconciler's flag defaults, the one
// source for its usage text and for the other callers of New (localfleet,
// genesis-load), which change the fields they need. Paths, URLs, secrets
// and the replica id have no default.
func Defaults() Config {
	return Config{
		Branch:         tenants.DefaultBranch,
		PollInterval:   tenants.DefaultPollInterval,
		Resync:         DefaultResync,
		TokenTTL:       agentapi.DefaultTokenTTL,
		ManifestTTL:    agentapi.DefaultManifestTTL,
		ManifestSweep:  agentapi.DefaultSweep,
		PrepareTimeout: reconciler.DefaultPrepareTimeout,
		WatchdogEvery:  reconciler.DefaultWatchdogEvery,
		RolloutEvery:   rollouts.DefaultEvery,
		APIRate:        DefaultAPIRate,
		HTTP: ServerTimeouts{ReadHeader: DefaultReadHeaderTimeout, Read: DefaultReadTimeout,
			Write: DefaultWriteTimeout, Idle: DefaultIdleTimeout, MaxConns: DefaultMaxConnections()},
		Console:     true,
		UnauthRate:  auth.DefaultFailureRate,
		UnauthBurst: auth.DefaultFailureBurst,
		Probe:       ProbeConfig{Interval: availability.DefaultInterval, Timeout: availability.DefaultTimeout, Concurrency: availability.DefaultConcurrency},
		Activator: ActivatorConfig{Hold: activator.DefaultHold, MaxHeld: activator.DefaultMaxHeld,
			MaxHeldPerTenant: activator.DefaultMaxHeldPerTenant, MaxBody: activator.DefaultMaxBody, DropletPort: activator.DefaultDropletPort},
	}
}
