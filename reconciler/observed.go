package reconciler

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
)

// The shared observation. Only the leader observes DigitalOcean, but every
// replica answers GET /v1/observed (genesis plan --reconciler reads it
// through a load balancer): after each observation the leader stores it in
// Postgres (store.SaveObservation, one row; an unchanged one only moves its
// time, store.TouchObservation), and every replica serves that row with
// observed_at and leader, or 503 when none is stored yet or it is older
// than MaxAge (the leader is gone, or stuck). A follower never answers from
// its own memory, which holds no observation.

// ObservationsConfig wires Observations.
type ObservationsConfig struct {
	Store *store.Store
	// Replica names this replica in the observations it stores as leader
	// (store.CheckReplicaID's form).
	Replica string
	// Epoch is the leader's lease epoch, stored with each observation;
	// when nil it is the epoch of the lease the saving context carries
	// (cloud.LeaseFrom), and 0 (none) without one.
	Epoch func() int64
	// MaxAge is the age past which a stored observation is answered 503
	// (DefaultObservedMaxAge when 0).
	MaxAge     time.Duration
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// DefaultObservedMaxAge bounds the age of the observation /v1/observed
// serves: five resyncs at the default 30s.
const DefaultObservedMaxAge = 150 * time.Second

// Observations stores the leader's observations and serves the last one.
type Observations struct {
	cfg ObservationsConfig
	log *slog.Logger

	mu sync.Mutex
	// digest is the digest of the last observation this replica stored.
	digest [32]byte
	stored bool

	writes *prometheus.HistogramVec
	size   prometheus.Gauge
}

// NewObservations makes an Observations.
func NewObservations(cfg ObservationsConfig) *Observations {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = DefaultObservedMaxAge
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	o := &Observations{cfg: cfg, log: cfg.Logger.With("component", "observed"),
		writes: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "genesis_observation_write_seconds",
			Help:    "Time the leader took to store an observation for /v1/observed: kind full (a new observation) or touch (unchanged, only its time moved).",
			Buckets: prometheus.ExponentialBuckets(0.001, 3, 10)}, []string{"kind"}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_observation_bytes",
			Help: "Size of the last observation this replica stored as leader, as JSON."}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(o.writes, o.size)
	}
	return o
}

// Save stores obs, observed at at, as the last observation. It runs on the
// leader after each observation; a failure is logged (the pass goes on;
// /v1/observed answers 503 once the stored one is too old).
func (o *Observations) Save(ctx context.Context, obs plan.Observed, at time.Time) {
	body, err := json.Marshal(obs)
	if err != nil {
		o.log.Error("encode observation failed", "err", err)
		return
	}
	digest := sha256.Sum256(body)
	var epoch int64
	switch l := cloud.LeaseFrom(ctx); {
	case o.cfg.Epoch != nil:
		epoch = o.cfg.Epoch()
	case l != nil: // the leader's loop: its lease's epoch
		epoch = l.Epoch()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	start := time.Now()
	if o.stored && o.digest == digest {
		ok, err := o.cfg.Store.TouchObservation(ctx, digest, at, o.cfg.Replica, epoch)
		if err != nil {
			o.log.Error("store observation failed", "err", err)
			return
		}
		if ok {
			o.writes.WithLabelValues("touch").Observe(time.Since(start).Seconds())
			return
		}
	}
	err = o.cfg.Store.SaveObservation(ctx, store.Observation{JSON: body, Digest: digest, At: at, Leader: o.cfg.Replica, Epoch: epoch,
		Complete: obs.Complete(), Droplets: len(obs.Droplets)})
	if err != nil {
		o.stored = false
		if ctx.Err() == nil { // else leadership ended mid-pass
			o.log.Error("store observation failed", "err", err)
		}
		return
	}
	o.digest, o.stored = digest, true
	o.writes.WithLabelValues("full").Observe(time.Since(start).Seconds())
	o.size.Set(float64(len(body)))
}

// Load reads the stored observation: an error for none, a stale one or a
// database failure, each saying which.
func (o *Observations) Load(ctx context.Context) (api.Observed, error) {
	row, ok, err := o.cfg.Store.LoadObservation(ctx)
	if err != nil {
		return api.Observed{}, err
	}
	if !ok {
		return api.Observed{}, errNoObservation
	}
	if age := o.cfg.Now().Sub(row.At); age > o.cfg.MaxAge {
		return api.Observed{}, fmt.Errorf("%w: the stored observation (observed_at %s by leader %s) is %s old, more than %s: is a leader running?",
			errStaleObservation, row.At.UTC().Format(time.RFC3339), row.Leader, age.Round(time.Second), o.cfg.MaxAge)
	}
	doc := api.Observed{ObservedAt: row.At.UTC(), Leader: row.Leader, LeaderEpoch: row.Epoch}
	if err := json.Unmarshal(row.JSON, &doc.Observed); err != nil {
		return api.Observed{}, fmt.Errorf("decode stored observation: %w", err)
	}
	return doc, nil
}

var (
	errNoObservation    = errors.New("no observation stored yet: the leader stores one after its first pass")
	errStaleObservation = errors.New("observation too old")
)
