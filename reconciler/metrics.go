package reconciler

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/actions"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// Metrics are the reconciler loop's Prometheus series. Per-tenant detail
// lives in GET /v1/fleet, never in labels.
type Metrics struct {
	reconciles       *prometheus.CounterVec
	reconcileSeconds *prometheus.HistogramVec
	refusals         *prometheus.CounterVec
	lifecycle        *prometheus.GaugeVec
	declared         *prometheus.GaugeVec
	invalid          prometheus.Gauge
	orphans          prometheus.Gauge
	nameOrphans      prometheus.Gauge
	headroom         *prometheus.GaugeVec
	accountStatus    *prometheus.GaugeVec
	nameDrift        prometheus.Counter
	noCapacity       prometheus.Gauge
	leader           prometheus.Gauge
	lastCommitTime   prometheus.Gauge
	gitErrors        prometheus.Counter
	gitSync          *prometheus.HistogramVec
	watchdog         *watchdogMetrics
	// exec are the executor's series (package actions).
	exec *actions.Metrics
	// Gauges of each observation: the fleet's monthly cost, its snapshot
	// storage, the hot spares ready by region.
	cost          *prometheus.GaugeVec
	snapshotBytes prometheus.Gauge
	sparesReady   *prometheus.GaugeVec
	// The work queue (queue.go): workspaces held now, and failures
	// requeued, by error kind.
	backingOff *prometheus.GaugeVec
	retries    *prometheus.CounterVec
}

// NewMetrics makes the metrics and registers them on reg (nil: not
// registered, for tests that don't scrape).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_reconcile_total",
			Help: "Reconcile passes by result (ok, refused, error)."}, []string{"result"}),
		reconcileSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "genesis_reconcile_duration_seconds",
			Help: "Time to observe, plan and dispatch one pass.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"result"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_plan_refusals_total",
			Help: "Plans refused by the fleet's safety limits, by reason."}, []string{"reason"}),
		lifecycle: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_tenants_lifecycle",
			Help: "Tenants by lifecycle state (fleet_status)."}, []string{"state"}),
		declared: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_tenants_declared",
			Help: "Tenants by declared state in git."}, []string{"state"}),
		invalid:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_tenants_invalid", Help: "Tenants whose file is invalid (acted on at their last valid version)."}),
		orphans:    prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_orphans", Help: "Droplets and snapshots git does not explain (never destroyed automatically)."}),
		noCapacity: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_tenants_no_capacity", Help: "Tenants waiting for an account with room in their region."}),
		leader:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_leader", Help: "1 when this replica holds the leader lock."}),
		lastCommitTime: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_git_last_commit_timestamp_seconds",
			Help: "Committer time of the state repository commit last read."}),
		gitErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_git_sync_errors_total", Help: "Failed syncs of the state repository."}),
		gitSync: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "genesis_git_sync_duration_seconds",
			Help:    "Time to fetch the state repository and load what changed, by result (ok, error).",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}, []string{"result"}),
		watchdog: newWatchdogMetrics(),
		cost: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_fleet_monthly_cost_usd",
			Help: "Monthly cost of the observed fleet in USD: droplets at their size's price, snapshot storage per GB-month."}, []string{"kind"}),
		snapshotBytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_snapshot_bytes",
			Help: "Bytes of droplet snapshots the fleet stores (size_gigabytes × 2^30)."}),
		sparesReady: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_spares_ready",
			Help: "Hot spares ready to be taken (ACTIVE_HEALTHY), by region of genesis.yaml spec.spares."}, []string{"region"}),
		backingOff: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_tenants_backing_off",
			Help: "Workspaces the planner leaves alone because their last action failed, by error kind (transient, terminal, capacity, pending, not_found)."}, []string{"kind"}),
		nameOrphans: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_dns_orphan_records",
			Help: "A and AAAA records in the fleet's zone (spec.dns) that match no declared tenant, at the last name audit (reported, never deleted)."}),
		headroom: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_account_headroom",
			Help: "Droplets an account may still take (spec.accounts[].maxDroplets minus the droplets observed in it; not updated while its listing is incomplete)."}, []string{"account"}),
		accountStatus: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "genesis_account_status",
			Help: "1 for each account's spec.accounts[].status (active, draining, disabled)."}, []string{"account", "status"}),
		nameDrift: prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_dns_drift_total",
			Help: "Tenants' stable names the name audit found saying something else than recorded (a point_name repair follows)."}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_action_retries_total",
			Help: "Failed actions requeued by the work queue, by error kind (transient, terminal, capacity, pending, not_found)."}, []string{"kind"}),
	}
	for _, k := range plan.HoldKinds {
		m.backingOff.WithLabelValues(k).Set(0)
		m.retries.WithLabelValues(k)
	}
	for _, reason := range []string{plan.LimitDestroy, plan.LimitHibernate} {
		m.refusals.WithLabelValues(reason)
	}
	for _, result := range []string{"ok", "refused", "error"} {
		m.reconciles.WithLabelValues(result)
		m.reconcileSeconds.WithLabelValues(result)
	}
	if reg != nil {
		reg.MustRegister(m.reconciles, m.reconcileSeconds, m.refusals, m.lifecycle, m.declared,
			m.invalid, m.orphans, m.noCapacity, m.leader, m.lastCommitTime, m.gitErrors, m.gitSync, m.backingOff, m.retries,
			m.cost, m.snapshotBytes, m.sparesReady, m.nameOrphans, m.nameDrift, m.headroom, m.accountStatus)
		reg.MustRegister(m.watchdog.collectors()...)
	}
	m.exec = actions.NewMetrics(reg)
	return m
}

// recordCost sets the monthly cost gauges from an observation: droplets at
// their size's price, snapshot storage at the fleet's price per GB-month.
func (m *Metrics) recordCost(f *schema.Fleet, o plan.Observed) {
	if f == nil {
		return
	}
	droplets, snapshots, gb := 0.0, 0.0, 0.0
	for _, d := range o.Droplets {
		droplets += f.MonthlyUSD(d.Size)
	}
	for _, s := range o.Snapshots {
		gb += s.SizeGB
	}
	snapshots = f.SnapshotMonthlyUSD(gb)
	m.cost.WithLabelValues("droplets").Set(droplets)
	m.cost.WithLabelValues("snapshots").Set(snapshots)
	m.snapshotBytes.Set(gb * (1 << 30))
}

// recordSpares sets the spares' ready gauge from an observation: one
// series per region that declares spares, so its labels stay bounded.
func (m *Metrics) recordSpares(f *schema.Fleet, o plan.Observed) {
	if f == nil {
		return
	}
	ready := map[string]int{}
	for ws, st := range o.Status {
		if region, _, ok := schema.ParseSpareWorkspace(ws); ok && st.Lifecycle == plan.ReadyLifecycle && st.DropletID != 0 {
			ready[region]++
		}
	}
	m.sparesReady.Reset()
	for _, sp := range f.Spec.Spares {
		m.sparesReady.WithLabelValues(sp.Region).Set(float64(ready[sp.Region]))
	}
}

// ObserveSync records one sync of the state repository (the tenants
// watcher's OnSync).
func (m *Metrics) ObserveSync(took time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.gitSync.WithLabelValues(result).Observe(took.Seconds())
}

// recordAccounts sets each account's headroom (from a complete listing)
// and status.
func (m *Metrics) recordAccounts(f *schema.Fleet, o plan.Observed) {
	if f == nil {
		return
	}
	load := map[string]int{}
	for _, d := range o.Droplets {
		load[d.Account]++
	}
	m.accountStatus.Reset()
	for _, a := range f.Spec.Accounts {
		status := a.Status
		if status == "" {
			status = schema.AccountActive
		}
		m.accountStatus.WithLabelValues(a.Name, string(status)).Set(1)
		if _, incomplete := o.Incomplete[a.Name]; !incomplete {
			m.headroom.WithLabelValues(a.Name).Set(float64(a.MaxDroplets - load[a.Name]))
		}
	}
}
