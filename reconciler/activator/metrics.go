package activator

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	held        prometheus.Gauge
	requests    *prometheus.CounterVec
	wakes       *prometheus.CounterVec
	wakeLatency prometheus.Histogram
	replayed    prometheus.Counter
	dropped     *prometheus.CounterVec
	asks        *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_activator_held_requests",
			Help: "Requests the activator holds while their tenant wakes."}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_activator_requests_total",
			Help: "Requests to the activator by outcome."}, []string{"outcome"}),
		wakes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_activator_wakes_total",
			Help: "Wakes the activator asked for, by result (requested, refused, error)."}, []string{"result"}),
		wakeLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "genesis_activator_wake_to_first_answer_seconds",
			Help:    "From a hibernated tenant's first request to the first answer of its woken droplet.",
			Buckets: []float64{0.25, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300}}),
		replayed: prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_activator_pixels_replayed_total",
			Help: "Open pixels replayed to their woken droplet."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_activator_pixels_dropped_total",
			Help: "Open pixels not replayed, by reason (overflow, replay_failed, wake_failed, wake_refused)."}, []string{"reason"}),
		asks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_activator_ask_total",
			Help: "On-demand TLS permission answers (allowed, refused)."}, []string{"answer"}),
	}
	for _, o := range []string{outProxied, outPixel, outTimeout, outOverflow, outRefused, outUnknown, outTooLarge, outBadRequest, outUpstreamErr, outCanceled} {
		m.requests.WithLabelValues(o)
	}
	for _, r := range []string{"requested", "refused", "error"} {
		m.wakes.WithLabelValues(r)
	}
	for _, r := range []string{"overflow", "replay_failed", "wake_failed", "wake_refused"} {
		m.dropped.WithLabelValues(r)
	}
	for _, c := range []prometheus.Collector{m.held, m.requests, m.wakes, m.wakeLatency, m.replayed, m.dropped, m.asks} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
