package agentapi

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/internal/loglimit"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/rollout"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

// Defaults of Config.
const (
	DefaultTokenTTL      = 30 * time.Minute
	DefaultManifestTTL   = 24 * time.Hour
	DefaultSweep         = time.Minute
	DefaultQueue         = 100_000
	DefaultBatchSize     = 1000
	DefaultBatchInterval = 250 * time.Millisecond
	DefaultWriters       = 2
	// firstQueue bounds the first manifests waiting to be rendered.
	firstQueue = 1024
	// MaxWait bounds a manifest long-poll.
	MaxWait = 60 * time.Second
)

// Config wires a Service.
type Config struct {
	// Store holds the agent tables (agents, enrollment_tokens, manifests)
	// and fleet_status.
	Store  *store.Store
	Logger *slog.Logger
	// Registerer receives the metrics (nil: not registered).
	Registerer prometheus.Registerer
	// Signer signs manifests; Identities open the tenants' sealed
	// credentials. Without both, enrollment is refused (503) and no user
	// data is rendered: a droplet could never get a manifest.
	Signer     *dsse.Signer
	Identities []age.Identity
	// PublicURL is the reconciler's base URL as agents reach it.
	PublicURL string
	// SigningKeys are the PEM public keys new droplets' user data tells
	// agents to trust (default: the Signer's plus Announce).
	SigningKeys []string
	// Announce are PKIX PEM public keys put in every manifest's
	// signing_keys: an agent that accepts such a manifest trusts them from
	// then on. Announcing a key before the Signer switches to it is how the
	// signing key rotates. They are part of a manifest's inputs, so a
	// change of the list renders every manifest again.
	Announce []string
	// Backups issues backup and restore URLs and renders manifests'
	// backup sections (nil: backups are off; the backup routes say 503).
	Backups *backup.Service
	// Desired is the latest desired state (the reconciler's Snapshot).
	Desired func() (tenants.Snapshot, bool)
	// Leading reports whether this replica runs the periodic sweep (nil:
	// always).
	Leading func() bool
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// TokenTTL is how long a provisioning token is valid (default 30m).
	TokenTTL time.Duration
	// ManifestTTL is a manifest's lifetime (default 24h); it is re-signed
	// when less than a third remains.
	ManifestTTL time.Duration
	// Sweep is how often the leader looks for manifests to render (default
	// 1m).
	Sweep time.Duration
	// Compose and AgentURL go into every droplet's user data (optional).
	Compose  []byte
	AgentURL string
	// AgentSHA256 and AgentInsecureHTTP are cloudinit.Input's AgentSHA256 and InsecureHTTP.
	AgentSHA256       string
	AgentInsecureHTTP bool
	// Heartbeat queue and batching (defaults 100,000; 1,000; 250ms).
	Queue         int
	BatchSize     int
	BatchInterval time.Duration
	// RotationsPerMinute is the fleet-wide budget of secret rotation
	// requests per minute (default DefaultRotationsPerMinute).
	RotationsPerMinute int
	// EnvelopeCacheBytes bounds the signed envelopes kept in memory
	// (default DefaultEnvelopeCacheBytes); a pushed-out envelope is read
	// from Postgres when an agent needs it. Versions and ETags (for 304s
	// and long-polls) are kept for every droplet regardless.
	EnvelopeCacheBytes int
	// Writers is how many heartbeat batches are written at once (default
	// 2). Droplets are split among them, each writer with its own share
	// of Queue, so no two batches in flight touch the same rows.
	Writers int
}

// Service is the agent protocol's server side. Make it with New, serve
// Handler, and Run it for as long as it serves.
type Service struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	st      *store.Store
	enabled bool
	// announceErr is why Config.Announce is unusable (nil: usable).
	announceErr error

	queues []chan store.Heartbeat // by droplet, one per writer
	firsts chan int64             // droplets to render a first manifest for
	// firstsPending counts queued first manifests not rendered yet.
	firstsPending atomic.Int64
	refusals      *loglimit.Limiter
	// appliedLogs bounds the "manifest applied" lines written at info
	// (see logApplied).
	appliedLogs *loglimit.Limiter
	// issuedLogs bounds the "manifest issued" lines of renders outside a
	// sweep (update_manifest actions and the like) the same way.
	issuedLogs *loglimit.Limiter
	kick       chan struct{}
	stopped    chan struct{}
	stop       sync.Once

	authMu sync.RWMutex
	auth   map[[32]byte]*agentRef
	neg    map[[32]byte]time.Time
	creds  credentials

	manMu   sync.Mutex
	man     map[int64]*entry
	waiters map[int64]chan struct{}
	// bodies holds the envelopes of man's entries, within a byte bound.
	bodies *envelopes

	// inputs keeps the fleet-wide inputs renders take (rollouts).
	inputs rollout.Cache
}

// New makes a Service.
func New(cfg Config) *Service {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.ManifestTTL <= 0 {
		cfg.ManifestTTL = DefaultManifestTTL
	}
	if cfg.Sweep <= 0 {
		cfg.Sweep = DefaultSweep
	}
	if cfg.Queue <= 0 {
		cfg.Queue = DefaultQueue
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.BatchInterval <= 0 {
		cfg.BatchInterval = DefaultBatchInterval
	}
	if cfg.Writers <= 0 {
		cfg.Writers = DefaultWriters
	}
	if cfg.EnvelopeCacheBytes <= 0 {
		cfg.EnvelopeCacheBytes = DefaultEnvelopeCacheBytes
	}
	queues := make([]chan store.Heartbeat, cfg.Writers)
	for k := range queues {
		queues[k] = make(chan store.Heartbeat, max(1, cfg.Queue/cfg.Writers))
	}
	if cfg.Leading == nil {
		cfg.Leading = func() bool { return true }
	}
	if cfg.Desired == nil {
		cfg.Desired = func() (tenants.Snapshot, bool) { return tenants.Snapshot{}, false }
	}
	// A bad announced key would make every agent reject every manifest:
	// render refuses to issue any instead (cmd/genesis-reconciler checks
	// the files at start).
	announce, announceErr := announced(cfg.Announce)
	cfg.Announce = announce
	if cfg.Signer != nil && len(cfg.SigningKeys) == 0 {
		// A droplet made now may enroll after the switch to an announced
		// key: it trusts the announced keys from the start.
		cfg.SigningKeys = bootstrapKeys(cfg.Signer.Public(), cfg.Announce)
	}
	st := cfg.Store
	bodies := newEnvelopes(cfg.EnvelopeCacheBytes)
	return &Service{
		cfg: cfg, log: cfg.Logger.With("component", "agentapi"), m: newMetrics(cfg.Registerer, bodies.stats), st: st, bodies: bodies,
		enabled: cfg.Signer != nil && len(cfg.Identities) > 0, announceErr: announceErr,
		queues: queues, firsts: make(chan int64, firstQueue), kick: make(chan struct{}, 1), stopped: make(chan struct{}),
		refusals: loglimit.New(refusalWindow, refusalBurst), appliedLogs: loglimit.New(eachLoggedWindow, eachLogged),
		issuedLogs: loglimit.New(eachLoggedWindow, eachLogged),
		auth:       map[[32]byte]*agentRef{}, neg: map[[32]byte]time.Time{}, creds: credentials{keys: newCredSet(nil)},
		man: map[int64]*entry{}, waiters: map[int64]chan struct{}{},
	}
}

// Enabled reports whether the service has its keys (enrollment and user
// data work).
func (s *Service) Enabled() bool { return s.enabled }

// Handler serves POST /v1/enroll, GET /v1/manifest and POST /v1/heartbeat.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll", s.handleEnroll)
	mux.HandleFunc("GET /v1/manifest", s.handleManifest)
	mux.HandleFunc("POST /v1/heartbeat", s.handleHeartbeat)
	mux.HandleFunc("POST /v1/agent/reenroll", s.handleReenroll)
	mux.HandleFunc("POST /v1/agent/backups", s.handleBackupStart)
	mux.HandleFunc("POST /v1/agent/backups/{id}", s.handleBackupFinish)
	mux.HandleFunc("GET /v1/agent/backups/{id}", s.handleBackupFetch)
	mux.HandleFunc("POST /v1/agent/backups/{id}/restored", s.handleRestored)
	return mux
}

// Kick asks for a sweep soon (a new snapshot arrived).
func (s *Service) Kick() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Run runs the heartbeat batcher, the LISTEN/NOTIFY listener, the
// periodic sweep and the renderer of enrolled droplets' first manifests
// until ctx ends; queued heartbeats are written before it
// returns, and waiting long-polls are answered.
func (s *Service) Run(ctx context.Context) error {
	defer s.stop.Do(func() { close(s.stopped) })
	g, gctx := errgroup.WithContext(ctx)
	for _, q := range s.queues {
		g.Go(func() error {
			// A batcher drains with its own context: ctx ending must not
			// lose what was queued.
			return s.batcher(gctx, q)
		})
	}
	g.Go(func() error { s.listen(gctx); return nil })
	g.Go(func() error { s.sweepLoop(gctx); return nil })
	g.Go(func() error { s.renderFirsts(gctx); return nil })
	g.Go(func() error {
		<-gctx.Done()
		s.stop.Do(func() { close(s.stopped) })
		return nil
	})
	return g.Wait()
}

// agentRef is an authenticated droplet.
type agentRef struct {
	droplet   int64
	dropletS  string
	workspace string
	// pending: the credential is the droplet's next one (a secret
	// rotation's, not used before); its first heartbeat promotes it.
	pending bool
	// lastSeq is the highest heartbeat sequence number accepted here.
	mu      sync.Mutex
	lastSeq int64
}

// announced parses the keys to announce into canonical PEM, each key once.
func announced(pems []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for i, p := range pems {
		k, err := dsse.ParsePublicKeyPEM([]byte(p))
		if err != nil {
			return nil, fmt.Errorf("announced signing key %d: %w", i+1, err)
		}
		if id := dsse.KeyID(k); !seen[id] {
			seen[id] = true
			out = append(out, string(dsse.MarshalPublicKeyPEM(k)))
		}
	}
	return out, nil
}

// bootstrapKeys is signer's key and the announced ones, each once.
func bootstrapKeys(signer ed25519.PublicKey, announce []string) []string {
	own := string(dsse.MarshalPublicKeyPEM(signer))
	out := []string{own}
	for _, p := range announce {
		if p != own {
			out = append(out, p)
		}
	}
	return out
}

// secret makes a random 256-bit token, base64url without padding.
func secret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// hash is how tokens and credentials are stored.
func hash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

// errDisabled is the reason enrollment and user data are refused.
var errDisabled = errors.New("the agent protocol is disabled: the reconciler has no --signing-key or no --age-identity")

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// httpError answers msg as problem details, not to be cached.
func httpError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	api.WriteProblem(w, code, msg)
}
