package agentapi

import "github.com/prometheus/client_golang/prometheus"

// metrics are the agent protocol's series; labels are bounded (status
// codes and results, never a workspace or droplet).
type metrics struct {
	served *prometheus.CounterVec
	// byCode holds served's children, resolved once (the 304 path is hot).
	byCode      map[string]prometheus.Counter
	longpolls   prometheus.Gauge
	enrollments *prometheus.CounterVec
	heartbeats  *prometheus.CounterVec
	batchSize   prometheus.Histogram
	issued      prometheus.Counter
	expiry      prometheus.Gauge
	convergence prometheus.Histogram
	delivery    prometheus.Histogram
	credentials prometheus.Gauge
	rotations   *prometheus.CounterVec
	// envelopeMisses counts envelopes read from Postgres because the
	// bounded cache had pushed them out.
	envelopeMisses prometheus.Counter
	envelopeBytes  prometheus.GaugeFunc
}

// newMetrics makes the series; cacheStats reports the envelope cache's
// bytes and count (read at scrape time).
func newMetrics(reg prometheus.Registerer, cacheStats func() (size, n int)) *metrics {
	m := &metrics{
		served: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_manifests_served_total",
			Help: "GET /v1/manifest responses by status code."}, []string{"code"}),
		longpolls: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_manifest_longpolls_waiting",
			Help: "Manifest long-polls waiting for a new version."}),
		enrollments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_enrollments_total",
			Help: "Enrollment attempts by result (ok, repeated, not_yet, bad_request, unauthorized, forbidden, disabled, error)."}, []string{"result"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_heartbeats_total",
			Help: "Heartbeats by result (queued, replay, unauthorized, forbidden, bad_request, too_large, queue_full, written, dropped)."}, []string{"result"}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "genesis_heartbeat_batch_size",
			Help: "Heartbeats written per batch statement.", Buckets: prometheus.ExponentialBuckets(1, 4, 7)}),
		issued: prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_manifests_issued_total",
			Help: "Manifests rendered, signed and stored."}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_manifest_expiry_seconds",
			Help: "Seconds until the soonest expiry among the live droplets' newest manifests (as of the last sweep)."}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "genesis_convergence_seconds",
			Help:    "From the commit a manifest was rendered from (or the agent's enrollment, when later) to the heartbeat reporting it applied.",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}}),
		delivery: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "genesis_manifest_delivery_seconds",
			Help:    "From a new manifest's publication on this replica (stored here, or announced by another replica) to its delivery to a long-poll that was waiting for it.",
			Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10}}),
		credentials: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_agent_credentials_valid",
			Help: "Valid agent credentials in this replica's memory (a credential outside the set is refused without a database lookup)."}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_secret_rotations_total",
			Help: "Secret rotation events by result (requested, reenrolled, reenroll_refused, reenroll_bad_request, reenroll_unauthorized, promoted, succeeded)."}, []string{"result"}),
		envelopeMisses: prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_manifest_envelope_cache_misses_total",
			Help: "Manifest envelopes read from Postgres because the bounded in-memory cache no longer held them."}),
		envelopeBytes: prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "genesis_manifest_envelope_cache_bytes",
			Help: "Bytes of signed manifest envelopes held in memory (bounded by the agent service's EnvelopeCacheBytes, 64 MiB by default)."},
			func() float64 { size, _ := cacheStats(); return float64(size) }),
	}
	for _, r := range []string{"requested", "reenrolled", "reenroll_refused", "reenroll_bad_request", "reenroll_unauthorized", "promoted", "succeeded"} {
		m.rotations.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "repeated", "not_yet", "bad_request", "unauthorized", "forbidden", "disabled", "error"} {
		m.enrollments.WithLabelValues(r)
	}
	for _, r := range []string{"queued", "replay", "unauthorized", "forbidden", "bad_request", "too_large", "queue_full", "written", "dropped"} {
		m.heartbeats.WithLabelValues(r)
	}
	m.byCode = map[string]prometheus.Counter{}
	for _, code := range []string{"200", "304", "400", "401", "404", "500"} {
		m.byCode[code] = m.served.WithLabelValues(code)
	}
	if reg != nil {
		reg.MustRegister(m.served, m.longpolls, m.enrollments, m.heartbeats, m.batchSize, m.issued, m.expiry, m.convergence, m.delivery, m.credentials, m.rotations,
			m.envelopeMisses, m.envelopeBytes)
	}
	return m
}

// servedInc counts one GET /v1/manifest response.
func (m *metrics) servedInc(code string) { m.byCode[code].Inc() }
