package actions

import (
	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/plan"
)

// Metrics are the executor's series. The fields are exported for tests of
// the loop that count what it executed.
type Metrics struct {
	// Actions counts executed actions by kind and result.
	Actions *prometheus.CounterVec
	// Prepare counts hibernation prepare phases by result.
	Prepare *prometheus.CounterVec
	// Assignments counts spares given to tenants by result.
	Assignments *prometheus.CounterVec
	// Steps counts the watchdog's remediation steps by kind and result.
	Steps *prometheus.CounterVec
	// Warnings counts tenants warned of idle hibernation.
	Warnings prometheus.Counter
	// Notifications counts notifications sent by kind and result.
	Notifications *prometheus.CounterVec
	// Names counts writes of tenants' stable DNS names by the action kind
	// that made them and result.
	Names *prometheus.CounterVec
}

// NewMetrics makes the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Actions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_actions_total",
			Help: "Executed actions by kind and result."}, []string{"kind", "result"}),
		Prepare: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_hibernate_prepare_total",
			Help: "Hibernation prepare phases by result (confirmed: the agent stopped n8n; timeout: snapshotted without confirmation; skipped: no agent)."}, []string{"result"}),
		Assignments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_spare_assignments_total",
			Help: "Spares given to onboarding tenants, by result (assigned, failed)."}, []string{"result"}),
		Steps: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_watchdog_remediations_total",
			Help: "Remediation steps by kind (reboot, power_cycle, rebuild, retire, fail) and result (succeeded, failed)."}, []string{"kind", "result"}),
		Warnings: prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_idle_warnings_total",
			Help: "Tenants warned that idleness will hibernate them."}),
		Notifications: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_notifications_total",
			Help: "Notices delivered to --notify-url / --notify-slack-url targets, by kind and result (sent, retry: a failed try, gave_up)."}, []string{"kind", "result"}),
		Names: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_dns_name_writes_total",
			Help: "Writes of tenants' stable DNS names (spec.dns) by the action that made them and result (succeeded, failed: a point_name repair follows)."}, []string{"kind", "result"}),
	}
	// Every series a dashboard or an alert queries starts at 0.
	for _, k := range plan.Kinds() {
		for _, r := range []string{"succeeded", "failed"} {
			m.Actions.WithLabelValues(string(k), r)
			if movesDroplet(k) || k == plan.Hibernate || k == plan.Destroy || k == plan.PointName {
				m.Names.WithLabelValues(string(k), r)
			}
		}
	}
	for _, k := range notify.Kinds() {
		for _, r := range []string{"sent", "retry", "gave_up"} {
			m.Notifications.WithLabelValues(string(k), r)
		}
	}
	if reg != nil {
		reg.MustRegister(m.Actions, m.Prepare, m.Assignments, m.Steps, m.Warnings, m.Notifications, m.Names)
	}
	return m
}
