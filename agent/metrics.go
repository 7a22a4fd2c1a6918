package agent

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the agent's Prometheus series. Label values are bounded: a
// Reason, a status class, ok/error.
type metrics struct {
	appliedVersion prometheus.Gauge
	accepted       prometheus.Counter
	rejections     *prometheus.CounterVec
	applyErrors    *prometheus.CounterVec
	applySeconds   prometheus.Histogram
	requests       *prometheus.CounterVec
	heartbeats     *prometheus.CounterVec
	clockOffset    prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		appliedVersion: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "genesis_agent_manifest_applied_version", Help: "Version of the manifest this droplet runs.",
		}),
		accepted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "genesis_agent_manifests_accepted_total", Help: "Manifests verified, applied and recorded.",
		}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genesis_agent_manifest_rejections_total", Help: "Manifests rejected, by reason.",
		}, []string{"reason"}),
		applyErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genesis_agent_apply_errors_total", Help: "Verified manifests the applier failed to apply, by the step that failed (bootstrap, credentials, workflows, caddy, version, other).",
		}, []string{"step"}),
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "genesis_agent_apply_duration_seconds", Help: "Time to apply a new manifest (verify, decrypt, converge n8n and Caddy), successful or not.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genesis_agent_manifest_requests_total", Help: "Manifest requests, by response code (or error).",
		}, []string{"code"}),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genesis_agent_heartbeats_total", Help: "Heartbeats sent, by result.",
		}, []string{"result"}),
		clockOffset: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "genesis_agent_clock_offset_seconds", Help: "Reconciler clock minus this droplet's clock, from the Date header.",
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.appliedVersion, m.accepted, m.rejections, m.applyErrors, m.applySeconds, m.requests, m.heartbeats, m.clockOffset} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// stepLabel is the apply step an error names (converge.StepError), or
// "other".
func stepLabel(err error) string {
	var s interface{ ApplyStep() string }
	if errors.As(err, &s) {
		return s.ApplyStep()
	}
	return "other"
}

// codeLabel maps a request's outcome to a bounded label value.
func codeLabel(err error, notModified bool) string {
	if err == nil {
		if notModified {
			return "304"
		}
		return "200"
	}
	var se *StatusError
	if !errors.As(err, &se) {
		return "error"
	}
	switch {
	case se.Code >= 500:
		return "5xx"
	case se.Code == 400, se.Code == 401, se.Code == 403, se.Code == 404, se.Code == 429:
		return strconv.Itoa(se.Code)
	case se.Code > 400 && se.Code < 500:
		return "4xx"
	}
	return "other"
}
