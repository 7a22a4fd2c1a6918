// Package fleetstats exports fleet-wide distributions that live in
// Postgres rather than in one process's memory: how old each running
// droplet's last heartbeat is, and how many manifest versions each agent
// lags behind what was issued to it.
//
// Every replica receives only some of the heartbeats, so no replica can
// observe these as events; they are a property of fleet_status. The
// collector computes them with one aggregate query (bucket counts, done in
// Postgres, so the cost does not grow with what is sent to Prometheus) and
// caches the result for MaxAge, so frequent scrapes or several Prometheus
// servers cost at most one query per MaxAge. A failed query is reported
// through genesis_fleetstats_errors_total and the last good result is kept,
// so a scrape never fails because of the database.
//
// Series are histograms without per-tenant labels: per-tenant detail is in
// GET /v1/fleet.
package fleetstats

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// AgeBuckets are the heartbeat-age histogram's upper bounds in seconds:
// around the 60 s heartbeat interval, the 5 min degraded and 15 min
// critical thresholds, and beyond.
var AgeBuckets = []float64{15, 30, 60, 90, 120, 180, 300, 600, 900, 1800, 3600, 21600, 86400}

// LagBuckets are the version-lag histogram's upper bounds (manifest
// versions issued but not yet applied).
var LagBuckets = []float64{0, 1, 2, 3, 5, 10, 20, 50}

// Config wires a Collector.
type Config struct {
	Pool   *pgxpool.Pool
	Logger *slog.Logger
	// MaxAge is how long a computed result is reused (default 10s).
	MaxAge time.Duration
	// Timeout bounds one query (default 5s).
	Timeout time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Collector is a prometheus.Collector of the fleet's heartbeat ages and
// agents' version lag.
type Collector struct {
	cfg    Config
	log    *slog.Logger
	ageD   *prometheus.Desc
	lagD   *prometheus.Desc
	errors prometheus.Counter

	mu   sync.Mutex
	at   time.Time
	last Stats
	have bool
}

// Histogram is a cumulative histogram: Counts[i] is the number of
// observations ≤ Bounds[i].
type Histogram struct {
	Count  uint64
	Sum    float64
	Bounds []float64
	Counts []uint64
}

// Stats is one computation.
type Stats struct {
	HeartbeatAge Histogram
	VersionLag   Histogram
}

// New makes a Collector; register it on a Registerer.
func New(cfg Config) *Collector {
	if cfg.MaxAge == 0 {
		cfg.MaxAge = 10 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Collector{
		cfg: cfg,
		log: cfg.Logger.With("component", "fleetstats"),
		ageD: prometheus.NewDesc("genesis_heartbeat_age_seconds",
			"Age of the last heartbeat of each droplet in an ACTIVE_* or REBOOTING state (from fleet_status; a droplet that never sent one counts from when it entered the state).", nil, nil),
		lagD: prometheus.NewDesc("genesis_agent_version_lag",
			"Manifest versions issued to each enrolled droplet but not yet applied (issued - applied).", nil, nil),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_fleetstats_errors_total",
			Help: "Failed queries for the fleet-wide heartbeat-age and version-lag histograms (the last good result is served)."}),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.ageD
	ch <- c.lagD
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s, ok := c.Stats(context.Background())
	if ok {
		ch <- constHistogram(c.ageD, s.HeartbeatAge)
		ch <- constHistogram(c.lagD, s.VersionLag)
	}
	c.errors.Collect(ch)
}

func constHistogram(d *prometheus.Desc, h Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	for i, b := range h.Bounds {
		buckets[b] = h.Counts[i]
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets)
}

// Stats returns the statistics, computing them when the cached ones are
// older than MaxAge. ok is false only when no computation ever succeeded.
func (c *Collector) Stats(ctx context.Context) (Stats, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	if c.have && now.Sub(c.at) < c.cfg.MaxAge {
		return c.last, true
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	s, err := c.query(ctx, now)
	if err != nil {
		c.errors.Inc()
		c.log.Warn("fleet statistics query failed; serving the last result", "err", err)
		return c.last, c.have
	}
	c.last, c.at, c.have = s, now, true
	return s, true
}

// statsSQL counts, in Postgres, the droplets at or under each bound (the
// cumulative counts Prometheus histograms carry): $1 the age bounds, $2
// the lag bounds, $3 now. Lag counts only droplets that were issued a
// manifest.
var statsSQL = `WITH live AS (
	SELECT GREATEST(0, extract(epoch FROM $3::timestamptz - coalesce(last_heartbeat_at, state_since)))::float8 AS age,
		GREATEST(0, manifest_version_issued - manifest_version_applied)::float8 AS lag,
		manifest_version_issued > 0 AS issued
	FROM fleet_status
	WHERE droplet_id IS NOT NULL
	  AND state IN (` + lifecycle.SQLList(lifecycle.Counted()) + `)
)
SELECT
	(SELECT count(*) FROM live),
	(SELECT coalesce(sum(age), 0) FROM live),
	ARRAY(SELECT (SELECT count(*) FROM live WHERE age <= b) FROM unnest($1::float8[]) WITH ORDINALITY AS u(b, i) ORDER BY i),
	(SELECT count(*) FROM live WHERE issued),
	(SELECT coalesce(sum(lag), 0) FROM live WHERE issued),
	ARRAY(SELECT (SELECT count(*) FROM live WHERE issued AND lag <= b) FROM unnest($2::float8[]) WITH ORDINALITY AS u(b, i) ORDER BY i)`

func (c *Collector) query(ctx context.Context, now time.Time) (Stats, error) {
	var (
		s              Stats
		ageN, lagN     int64
		ageSum, lagSum float64
		ageCum, lagCum []int64
	)
	err := c.cfg.Pool.QueryRow(ctx, statsSQL, AgeBuckets, LagBuckets, now).Scan(&ageN, &ageSum, &ageCum, &lagN, &lagSum, &lagCum)
	if err != nil {
		return Stats{}, err
	}
	s.HeartbeatAge = Histogram{Count: uint64(ageN), Sum: ageSum, Bounds: AgeBuckets, Counts: toUint(ageCum)}
	s.VersionLag = Histogram{Count: uint64(lagN), Sum: lagSum, Bounds: LagBuckets, Counts: toUint(lagCum)}
	return s, nil
}

func toUint(v []int64) []uint64 {
	out := make([]uint64, len(v))
	for i, n := range v {
		out[i] = uint64(n)
	}
	return out
}
