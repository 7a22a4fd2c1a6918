package availability

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/store"
)

// Defaults of Config (genesis-reconciler's --probe-* flags).
const (
	DefaultInterval    = 60 * time.Second
	DefaultTimeout     = 10 * time.Second
	DefaultConcurrency = 64
	// DefaultPort is the port stable names are probed on (Caddy's HTTPS).
	DefaultPort = 443
	// Objective is the availability objective (99.5%) budgets and the
	// burn-rate alerts are counted against.
	Objective = 0.995
	// leaseIntervals is a shard lease's life in intervals: a replica
	// that misses this many rounds loses its shards.
	leaseIntervals = 3
	// pruneEvery is how often a replica prunes days past 30.
	pruneEvery = time.Hour
)

// ErrOff is what Config.Targets returns when nothing is to be probed at
// all (genesis.yaml has no spec.dns, or no snapshot was read yet): the
// replica then holds no shard.
var ErrOff = errors.New("availability probing is off: no spec.dns")

// Target is a tenant to probe.
type Target struct {
	Workspace string
	Tier      string
	// Host is its stable name.
	Host string
}

// Config wires a Prober.
type Config struct {
	Store *store.Store
	// Replica names this replica in the shard leases (unique per replica).
	Replica string
	// Targets lists every tenant to probe this round (Select), all shards;
	// ErrOff when probing is off.
	Targets func(context.Context) ([]Target, error)
	// Interval is the time between rounds (Run), Timeout a probe's limit,
	// Concurrency the most probes in flight.
	Interval, Timeout time.Duration
	Concurrency       int
	// RootCAs verify the tenants' certificates (nil: the system roots).
	RootCAs *x509.CertPool
	// DialContext opens connections (nil: a net.Dialer, which resolves
	// names through the system resolver). Tests map names to loopback.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// Port is the HTTPS port probed (0: DefaultPort).
	Port int
	// Now is the clock (nil: time.Now).
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Prober probes this replica's shards of the fleet each round.
type Prober struct {
	cfg    Config
	log    *slog.Logger
	client *http.Client
	m      *metrics

	mu        sync.Mutex
	held      []int
	lastPrune time.Time
}

// New makes a Prober and registers its metrics on cfg.Registerer.
func New(cfg Config) *Prober {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Port == 0 {
		cfg.Port = DefaultPort
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	dial := cfg.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: cfg.Timeout}).DialContext
	}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            dial,
		TLSClientConfig:        &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    cfg.Timeout,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: 16 << 10,
		// A new connection a probe: the handshake (and the certificate)
		// is part of what customers depend on, and 15,000 idle
		// connections would be kept for a request a minute each.
		DisableKeepAlives: true,
	}
	return &Prober{
		cfg: cfg,
		log: cfg.Logger.With("component", "availability"),
		client: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is not n8n's health answer
		}},
		m: newMetrics(cfg.Registerer),
	}
}

// ShardOf is workspace's shard: FNV-1a of its id modulo
// store.AvailabilityShards.
func ShardOf(workspace string) int {
	h := fnv.New32a()
	h.Write([]byte(workspace))
	return int(h.Sum32() % store.AvailabilityShards)
}

// RoundResult is what one round did.
type RoundResult struct {
	// Off: probing is off (ErrOff); nothing else happened.
	Off bool
	// Shards are the shards this replica held for the round.
	Shards []int
	// Probed is how many tenants it probed, Up how many were up, Stored
	// how many probes were written (fewer when a lease was lost meanwhile).
	Probed, Up, Stored int
}

// Round runs one round at the clock's time: lease the shards, probe the
// targets in them with at most Concurrency in flight, store the outcomes
// in one statement, and prune old days once an hour.
func (p *Prober) Round(ctx context.Context) (RoundResult, error) {
	start := time.Now()
	res, err := p.round(ctx)
	p.m.roundSeconds.Set(time.Since(start).Seconds())
	if err != nil {
		p.m.rounds.WithLabelValues("error").Inc()
	} else {
		p.m.rounds.WithLabelValues("ok").Inc()
	}
	return res, err
}

func (p *Prober) round(ctx context.Context) (RoundResult, error) {
	at := p.cfg.Now()
	targets, err := p.cfg.Targets(ctx)
	if errors.Is(err, ErrOff) {
		p.release(ctx)
		return RoundResult{Off: true}, nil
	}
	if err != nil {
		return RoundResult{}, fmt.Errorf("list probe targets: %w", err)
	}
	held, err := p.cfg.Store.LeaseAvailabilityShards(ctx, p.cfg.Replica, at, leaseIntervals*p.cfg.Interval)
	if err != nil {
		return RoundResult{}, err
	}
	p.mu.Lock()
	p.held = held
	p.mu.Unlock()
	p.m.shards.Set(float64(len(held)))
	mine := make(map[int]bool, len(held))
	for _, s := range held {
		mine[s] = true
	}
	var todo []Target
	for _, t := range targets {
		if mine[ShardOf(t.Workspace)] {
			todo = append(todo, t)
		}
	}
	p.m.targets.Set(float64(len(todo)))
	probes := p.probeAll(ctx, todo)
	res := RoundResult{Shards: held, Probed: len(probes)}
	for _, pr := range probes {
		if pr.Up {
			res.Up++
		}
	}
	if ctx.Err() != nil {
		return res, ctx.Err() // a shutdown's cancelled probes are not outages
	}
	stored, err := p.cfg.Store.RecordProbes(ctx, p.cfg.Replica, at, p.cfg.Now(), probes)
	if err != nil {
		return res, err
	}
	res.Stored = stored
	if d := len(probes) - stored; d > 0 {
		p.m.dropped.Add(float64(d))
		p.log.Warn("probes not stored: the shard's lease was lost during the round", "dropped", d)
	}
	if at.Sub(p.lastPrune) >= pruneEvery {
		if n, err := p.cfg.Store.PruneAvailability(ctx, at); err != nil {
			p.log.Warn("prune availability", "err", err)
		} else {
			p.lastPrune = at
			if n > 0 {
				p.log.Info("pruned availability days", "rows", n)
			}
		}
	}
	return res, nil
}

// probeAll probes targets, at most Concurrency at once.
func (p *Prober) probeAll(ctx context.Context, targets []Target) []store.Probe {
	out := make([]store.Probe, len(targets))
	sem := make(chan struct{}, p.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, t := range targets {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			up := p.probeOne(ctx, t)
			out[i] = store.Probe{Workspace: t.Workspace, Tier: t.Tier, Shard: ShardOf(t.Workspace), Up: up}
		}()
	}
	wg.Wait()
	return out
}

// probeOne probes t and counts it.
func (p *Prober) probeOne(ctx context.Context, t Target) bool {
	start := time.Now()
	kind := p.probe(ctx, t.Host)
	p.m.latency.Observe(time.Since(start).Seconds())
	tier := t.Tier
	if tier == "" {
		tier = "unknown"
	}
	if kind == "" {
		p.m.probes.WithLabelValues(tier, "up").Inc()
		return true
	}
	p.m.probes.WithLabelValues(tier, "down").Inc()
	p.m.errors.WithLabelValues(kind).Inc()
	p.log.Debug("probe down", "workspace", t.Workspace, "kind", kind)
	return false
}

// Run runs a round every Interval until ctx ends, then gives the shards
// back (so the other replicas take them at their next round).
func (p *Prober) Run(ctx context.Context) error {
	p.log.Info("availability prober started", "replica", p.cfg.Replica, "interval", p.cfg.Interval.String(),
		"timeout", p.cfg.Timeout.String(), "concurrency", p.cfg.Concurrency)
	defer func() {
		rel, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		p.release(rel)
	}()
	t := time.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		if res, err := p.Round(ctx); err != nil && ctx.Err() == nil {
			p.log.Error("availability round failed", "err", err)
		} else if err == nil && !res.Off {
			p.log.Debug("availability round", "shards", len(res.Shards), "probed", res.Probed, "up", res.Up, "stored", res.Stored)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// release gives back this replica's shards.
func (p *Prober) release(ctx context.Context) {
	p.mu.Lock()
	held := p.held
	p.held = nil
	p.mu.Unlock()
	if held == nil {
		return
	}
	p.m.shards.Set(0)
	if err := p.cfg.Store.ReleaseAvailabilityShards(ctx, p.cfg.Replica); err != nil {
		p.log.Warn("release availability shards", "err", err)
	}
}

// Shards are the shards this replica held at its last round.
func (p *Prober) Shards() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]int(nil), p.held...)
}

// url is the health URL of host.
func (p *Prober) url(host string) string {
	if p.cfg.Port == DefaultPort {
		return "https://" + host + "/healthz"
	}
	return "https://" + net.JoinHostPort(host, strconv.Itoa(p.cfg.Port)) + "/healthz"
}
