package availability

import (
	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/schema"
)

// metrics are the prober's series. Tiers and kinds are bounded label
// values, every one set to 0 at start; no series has a tenant label (the
// worst tenants are read from GET /v1/availability).
type metrics struct {
	probes       *prometheus.CounterVec
	errors       *prometheus.CounterVec
	latency      prometheus.Histogram
	rounds       *prometheus.CounterVec
	roundSeconds prometheus.Gauge
	shards       prometheus.Gauge
	targets      prometheus.Gauge
	dropped      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_availability_probes_total",
			Help: "Probes of running tenants' stable names (GET https://<name>/healthz) by tier and result (up, down), summed over the replicas: the burn-rate alerts' input."},
			[]string{"tier", "result"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_availability_probe_errors_total",
			Help: "Failed probes by kind: dns, connect, tls, timeout, status (not 200), body (not {\"status\":\"ok\"}), other."},
			[]string{"kind"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "genesis_availability_probe_duration_seconds",
			Help:    "How long a probe took (resolve, connect, TLS handshake, request), up or down.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_availability_rounds_total",
			Help: "This replica's probe rounds by result (ok, error: the targets, the leases or the write failed)."}, []string{"result"}),
		roundSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_availability_round_seconds",
			Help: "How long this replica's last probe round took (above --probe-interval, rounds are skipped)."}),
		shards: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_availability_shards_held",
			Help: "Shards of the fleet (of 64) this replica probes."}),
		targets: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_availability_round_tenants",
			Help: "Tenants this replica probed in its last round."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_availability_probes_dropped_total",
			Help: "Probes not stored because this replica lost the shard's lease during the round."}),
	}
	reg.MustRegister(m.probes, m.errors, m.latency, m.rounds, m.roundSeconds, m.shards, m.targets, m.dropped)
	for _, t := range schema.Tiers() {
		for _, r := range []string{"up", "down"} {
			m.probes.WithLabelValues(string(t), r)
		}
	}
	for _, k := range Kinds() {
		m.errors.WithLabelValues(k)
	}
	for _, r := range []string{"ok", "error"} {
		m.rounds.WithLabelValues(r)
	}
	return m
}
