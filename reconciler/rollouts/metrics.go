package rollouts

import (
	"encoding/json"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/rollout"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// states are every rollout state, for the state gauge.
var states = []string{rollout.Running, rollout.Paused, rollout.Done, rollout.Aborted, rollout.RolledBack, rollout.Superseded}

type metrics struct {
	state    *prometheus.GaugeVec
	wave     prometheus.Gauge
	members  *prometheus.GaugeVec
	progress prometheus.Gauge
	started  prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_rollout_state",
			Help: "1 for the state the newest rollout is in (running, paused, done, aborted, rolled_back, superseded), 0 for the others."}, []string{"state"}),
		wave: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_rollout_wave",
			Help: "Index of the newest rollout's current wave (0 the first)."}),
		members: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_rollout_members",
			Help: "Members of the open rollout's current wave by status: waiting, in_flight, applied, skipped, failed."}, []string{"status"}),
		progress: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_rollout_last_progress_timestamp_seconds",
			Help: "When the newest rollout last moved (a member released, applied or failed, a wave started, a state change)."}),
		started: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_rollout_wave_started_timestamp_seconds",
			Help: "When the newest rollout's current wave started."}),
	}
	// Every state exists at 0 before the first rollout step reads one.
	for _, st := range states {
		m.state.WithLabelValues(st).Set(0)
	}
	if reg != nil {
		reg.MustRegister(m.state, m.wave, m.members, m.progress, m.started)
	}
	return m
}

// set shows rollout r (have false: none yet) with its wave counts.
func (m *metrics) set(r store.Rollout, counts []store.WaveCount, have bool) {
	for _, s := range states {
		v := 0.0
		if have && s == r.State {
			v = 1
		}
		m.state.WithLabelValues(s).Set(v)
	}
	if !have {
		return
	}
	m.wave.Set(float64(r.Wave))
	m.progress.Set(float64(r.LastProgressAt.Unix()))
	if r.WaveStartedAt != nil {
		m.started.Set(float64(r.WaveStartedAt.Unix()))
	}
	var c store.WaveCount
	for _, wc := range counts {
		if wc.Wave == r.Wave {
			c = wc
		}
	}
	m.members.WithLabelValues("waiting").Set(float64(c.Members - c.Released))
	m.members.WithLabelValues("in_flight").Set(float64(c.Released - c.Applied - c.Skipped - c.Failed))
	m.members.WithLabelValues("applied").Set(float64(c.Applied))
	m.members.WithLabelValues("skipped").Set(float64(c.Skipped))
	m.members.WithLabelValues("failed").Set(float64(c.Failed))
}

// windowsOf reads the maintenance windows a rollout kept (none: always).
func windowsOf(p store.RolloutPolicy) []schema.MaintenanceWindow {
	var ws []schema.MaintenanceWindow
	if len(p.Windows) > 0 {
		_ = json.Unmarshal(p.Windows, &ws) // written by storedPolicy
	}
	return ws
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // plain structs of strings always marshal
	}
	return b
}
