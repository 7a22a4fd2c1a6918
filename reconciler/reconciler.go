package reconciler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"genesis.dev/fleet/reconciler/actions"
	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// Config wires a Reconciler.
type Config struct {
	Store *store.Store
	// OnLead, when set, is called each time this replica takes the lead
	// (service: the agent protocol's sweep runs at once). A sweep asked
	// for while no replica led — the snapshot a new leader read before it
	// took the lock, a commit pushed during a failover — is skipped by
	// every replica; without this it waited for the sweep's next tick (a
	// minute): genesis-load scale's first manifests took 61 s at 20,000
	// tenants, of which the render was 9.
	OnLead func()
	// NewCloud builds the DigitalOcean side for the fleet's accounts, once,
	// from the first valid genesis.yaml. A later change of accounts needs a
	// restart (it is logged).
	NewCloud func(f *schema.Fleet) (*cloud.Pool, error)
	// UserData renders the cloud-init document of a droplet about to be
	// created (nil: none).
	UserData func(ctx context.Context, a plan.Action) (string, error)
	// Manifest renders and signs the manifest of an update_manifest
	// action's droplet (nil: none). Its failure fails the action, so the
	// tenant's hash is not recorded and the next pass tries again.
	Manifest func(ctx context.Context, a plan.Action) error
	// RotateSecrets records an operator's secret rotation of a workspace
	// and renders its manifest (agentapi.Service.RequestRotation; nil:
	// the action answers 503).
	RotateSecrets func(ctx context.Context, workspace, actor, reason string) (store.Rotation, error)
	Logger        *slog.Logger
	Metrics       *Metrics
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// AllowMassChange lets plans through the safety limits.
	AllowMassChange bool
	// Resync is how often the leader re-plans without a new commit, to
	// catch drift on DigitalOcean (default 30s).
	Resync time.Duration
	// LeaderRetry is how often a follower tries to take the lead (default
	// 2s); it bounds how long a failover takes.
	LeaderRetry time.Duration
	// LeaderCheck is how often the leader pings its lock's session
	// (default 1s). Between pings, every mutating DigitalOcean request
	// proves the lock itself (see lead).
	LeaderCheck time.Duration
	// Reconciled is called with each commit the leader has planned from, so
	// the source can refuse history rewrites below it.
	Reconciled func(commit string)
	// PrepareTimeout bounds a hibernation's wait for its agent to confirm
	// n8n stopped (default DefaultPrepareTimeout); see actions/hibernate.go.
	PrepareTimeout time.Duration
	// NotifyTargets are where notices to people go (idle warnings, a
	// tenant FAILED, an account failing): queued in Postgres (the outbox,
	// deduplicated and damped for NoticeDamping) and delivered by the
	// leader's sender with retries; none: logged only.
	NotifyTargets []notify.Target
	// NoticeDamping is how long the same notice about the same subject is
	// not queued again (default DefaultNoticeDamping).
	NoticeDamping time.Duration
	// OperatorRequestDeadline is how long an operator's action may wait
	// for the watchdog before a notice says it was not taken (default
	// DefaultOperatorRequestDeadline).
	OperatorRequestDeadline time.Duration
	// WatchdogEvery is how often the leader runs the watchdog (default
	// 15s).
	WatchdogEvery time.Duration
	// Jitter draws the backoff jitter, uniform in [0, 1) (math/rand/v2's
	// Float64 when nil); see queue.go.
	Jitter func() float64
	// Observations stores each observation for every replica's
	// /v1/observed (nil: not stored).
	Observations *Observations
	// NameAuditEvery is how often the leader audits the fleet's DNS zone
	// (names.go; default DefaultNameAuditEvery).
	NameAuditEvery time.Duration
	// SkipDisabledAccounts stops observing the accounts genesis.yaml marks
	// disabled (--skip-disabled-accounts): each is an incomplete listing,
	// never droplets gone.
	SkipDisabledAccounts bool
}

// DefaultPrepareTimeout is Config.PrepareTimeout's default.
const DefaultPrepareTimeout = actions.DefaultPrepareTimeout

// Reconciler is the loop. Deliver hands it desired state; Run leads when it
// can and plans and executes while it leads.
type Reconciler struct {
	cfg  Config
	log  *slog.Logger
	kick chan struct{}

	mu   sync.Mutex
	snap tenants.Snapshot
	have bool
	// syncErr is the last sync's failure (a refused history rewrite, an
	// unreachable remote), shown in /v1/fleet until a sync succeeds.
	syncErr  error
	cloud    *cloud.Pool
	accounts string
	warned   string // the accounts key an unusable change was reported for
	observed plan.Observed
	last     plan.Plan
	leading  bool
	leadCtx  context.Context // while leading: fenced by the epoch
	running  map[string]bool
	// pending holds the tenants to plan in the next scoped pass (changed
	// in git, or whose job just ended); needFull asks for a full pass.
	pending  map[string]bool
	needFull bool
	// wlog is the watchdog's logger; outage whether its guard held at
	// the last run.
	wlog   *slog.Logger
	outage bool
	// lastOutage is when the watchdog last saw an outage: remediation
	// stays held for the policy's OutageGrace after it (zero: never; a new
	// leader starts without, as after a restart).
	lastOutage time.Time
	// holds mirrors the work queue's persisted retry state (queue.go),
	// loaded by every pass and updated by every outcome; holdsLoaded is
	// set once a pass loaded it.
	holds       map[string]plan.Hold
	holdsLoaded bool
	// nameAudit is the last audit of the fleet's DNS zone (names.go).
	nameAudit NameAudit
	// jobs are the workers the loop started (one per workspace with
	// actions, plus watchdog remediations and idle warnings); Wait waits
	// for them. Only the Reconciler adds to it.
	jobs sync.WaitGroup
}

// New makes a Reconciler.
func New(cfg Config) *Reconciler {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Resync == 0 {
		cfg.Resync = 30 * time.Second
	}
	if cfg.LeaderRetry == 0 {
		cfg.LeaderRetry = 2 * time.Second
	}
	if cfg.LeaderCheck == 0 {
		cfg.LeaderCheck = time.Second
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.WatchdogEvery == 0 {
		cfg.WatchdogEvery = DefaultWatchdogEvery
	}
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	if cfg.NameAuditEvery == 0 {
		cfg.NameAuditEvery = DefaultNameAuditEvery
	}
	if cfg.OperatorRequestDeadline == 0 {
		cfg.OperatorRequestDeadline = DefaultOperatorRequestDeadline
	}
	if cfg.NoticeDamping == 0 {
		cfg.NoticeDamping = DefaultNoticeDamping
	}
	return &Reconciler{cfg: cfg, log: cfg.Logger.With("component", "reconciler"), kick: make(chan struct{}, 1),
		running: map[string]bool{}, pending: map[string]bool{}, needFull: true, wlog: cfg.Logger.With("component", "watchdog"),
		holds: map[string]plan.Hold{}}
}

// jitter draws a backoff jitter in [0, 1).
func (r *Reconciler) jitter() float64 { return r.cfg.Jitter() }

// Wait blocks until every job started by Pass, Watch or the journal's
// resume has ended. Jobs end when the context of the call that started
// them ends (Run cancels it when leadership ends, and waits) or their
// actions are done. Callers of Pass and Watch outside Run (tests, tools)
// call it after them.
func (r *Reconciler) Wait() { r.jobs.Wait() }

// Deliver takes a new snapshot from the tenants watcher (or its error) and
// wakes the loop.
func (r *Reconciler) Deliver(ctx context.Context, snap tenants.Snapshot, err error) {
	r.mu.Lock()
	r.syncErr = err
	if err == nil {
		if !r.have || snap.FleetChanged {
			r.needFull = true
		}
		for _, id := range snap.Changed {
			r.pending[id] = true
		}
		r.snap, r.have = snap, true
	}
	r.mu.Unlock()
	m := r.cfg.Metrics
	if err != nil {
		m.gitErrors.Inc()
		r.log.Error("state repository sync failed", "err", err)
		return
	}
	m.lastCommitTime.Set(float64(snap.Time.Unix()))
	m.invalid.Set(float64(len(snap.Invalid())))
	for _, id := range snap.Invalid() {
		r.log.Warn("tenant file invalid; acting on its last valid version", "tenant", id, "errors", snap.Tenants[id].Errors.Error())
	}
	r.Kick()
}

// Kick asks for a pass soon.
func (r *Reconciler) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Snapshot is the latest desired state, and whether there is one.
func (r *Reconciler) Snapshot() (tenants.Snapshot, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snap, r.have
}

// SyncError is the last failure to read the state repository, or nil.
func (r *Reconciler) SyncError() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.syncErr
}

// Leading reports whether this replica is the leader.
func (r *Reconciler) Leading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.leading
}

// LeaderContext is the context of this replica's leadership while it
// leads: it carries the leader epoch (store.WithEpoch), so every journal
// write made with it is refused once another replica leads, and it ends
// when the leadership does. False when this replica does not lead.
func (r *Reconciler) LeaderContext() (context.Context, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.leading || r.leadCtx == nil || r.leadCtx.Err() != nil {
		return nil, false
	}
	return r.leadCtx, true
}

// LastPlan is the plan of the last pass, with the last name audit's
// orphan DNS records among its orphans.
func (r *Reconciler) LastPlan() plan.Plan {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.last
	if len(r.nameAudit.Orphans) > 0 {
		p.Orphans = append(append([]plan.Orphan(nil), p.Orphans...), r.nameAudit.Orphans...)
	}
	return p
}

// skippedAccounts are the accounts not to observe: the disabled ones, with
// SkipDisabledAccounts.
func (r *Reconciler) skippedAccounts(f *schema.Fleet) map[string]string {
	if !r.cfg.SkipDisabledAccounts || f == nil {
		return nil
	}
	skip := map[string]string{}
	for _, a := range f.Spec.Accounts {
		if a.Status == schema.AccountDisabled {
			skip[a.Name] = "disabled in genesis.yaml and not observed (--skip-disabled-accounts): nothing in it is planned"
		}
	}
	return skip
}

// auditNames runs AuditNames in the loop, logging its failure.
func (r *Reconciler) auditNames(ctx context.Context) {
	if _, err := r.AuditNames(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errNoSnapshot) {
		r.log.Error("name audit failed", "err", err)
	}
}

// Run takes the lead when it is free and reconciles while it holds it,
// until ctx ends. Followers keep trying every LeaderRetry.
func (r *Reconciler) Run(ctx context.Context) error {
	for {
		leader, err := r.cfg.Store.TryLead(ctx, r.cfg.LeaderCheck)
		if err != nil && ctx.Err() == nil {
			r.log.Error("leader election failed", "err", err)
		}
		if leader != nil {
			r.lead(ctx, leader)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.cfg.LeaderRetry):
		}
	}
}

// lead runs passes while leader holds; when it is lost (or ctx ends) every
// job in flight is cancelled and waited for before it returns.
//
// Everything lead starts runs under a cloud.Lease of the leader's epoch:
// every mutating DigitalOcean request first proves the lock on its own
// session (Leader.Check) and every journal write is conditioned on the
// epoch (store.WithEpoch). The lease is revoked, and its context
// cancelled, the moment the lock's session is found dead (by the ping, by
// a request's proof) or a journal write finds a newer epoch; a job then
// stops before its next mutating call and leaves its operation in flight
// for the new leader, which resumes it.
func (r *Reconciler) lead(parent context.Context, leader *store.Leader) {
	lease := cloud.NewLease(parent, leader.Epoch, leader.Check)
	ctx := cloud.WithLease(store.WithEpoch(lease.Context(), leader.Epoch, lease.Revoke), lease)
	go func() {
		select {
		case <-leader.Lost:
			lease.Revoke(errors.New("the leader lock's session is gone"))
		case <-ctx.Done():
		}
	}()
	defer func() {
		r.mu.Lock()
		r.leadCtx = nil
		r.mu.Unlock()
		r.setLeading(false)
		lease.Revoke(errors.New("leadership ended"))
		r.Wait()
		leader.Release()
	}()
	r.mu.Lock()
	r.leadCtx = ctx
	r.mu.Unlock()
	r.setLeading(true)
	r.log.Info("leading", "epoch", leader.Epoch)
	if r.cfg.OnLead != nil {
		r.cfg.OnLead()
	}
	if len(r.cfg.NotifyTargets) > 0 {
		// Delivery never blocks the loop: its own goroutine, each
		// target's call bounded.
		r.jobs.Go(func() { r.sender().Run(ctx) })
	}
	resumed := false
	tick := time.NewTicker(r.cfg.Resync)
	defer tick.Stop()
	watch := time.NewTicker(r.cfg.WatchdogEvery)
	defer watch.Stop()
	audit := time.NewTicker(r.cfg.NameAuditEvery)
	defer audit.Stop()
	audited := false
	watched := false
	r.mu.Lock()
	r.needFull = true
	r.mu.Unlock()
	for {
		// The journal is resumed first, once the desired state is known.
		if _, ok := r.Snapshot(); ok && !resumed {
			if err := r.resume(ctx); err != nil {
				r.log.Error("resume journal failed; retrying", "err", err)
			} else {
				resumed = true
			}
		}
		if !watched {
			if _, err := r.Pass(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errNoSnapshot) {
				r.log.Error("reconcile pass failed", "err", err)
			}
		}
		if !audited && resumed {
			// Once per leadership at first, then on its ticker.
			audited = true
			r.auditNames(ctx)
		}
		watched = false
		// Wake for the earliest end of a backoff: the pass plans the
		// workspaces that are due (queue.go).
		// (An unstopped timer is collected once unreachable.)
		var due <-chan time.Time
		if next, ok := r.nextDue(); ok {
			due = time.After(max(next.Sub(r.cfg.Now()), 0))
		}
		select {
		case <-ctx.Done():
			if err := lease.Valid(); err != nil && parent.Err() == nil {
				r.log.Warn("leadership lost", "epoch", leader.Epoch, "err", err)
			}
			return
		case <-r.kick:
		case <-due:
		case <-watch.C:
			if _, err := r.Watch(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, errNoSnapshot) {
				r.log.Error("watchdog failed", "err", err)
			}
			watched = true // a watchdog tick alone needs no pass
		case <-tick.C:
			r.mu.Lock()
			r.needFull = true
			r.mu.Unlock()
		case <-audit.C:
			r.auditNames(ctx)
			watched = true // the audit kicks a pass when it found drift
		}
	}
}

func (r *Reconciler) setLeading(v bool) {
	r.mu.Lock()
	r.leading = v
	r.mu.Unlock()
	if v {
		r.cfg.Metrics.leader.Set(1)
	} else {
		r.cfg.Metrics.leader.Set(0)
	}
}

// cloudFor returns the DigitalOcean pool, building it on first use.
func (r *Reconciler) cloudFor(f *schema.Fleet) (*cloud.Pool, error) {
	key := ""
	for _, a := range f.Spec.Accounts {
		key += a.Name + "=" + a.TokenEnv + ";"
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cloud != nil {
		if r.accounts == key {
			return r.cloud, nil
		}
		// genesis.yaml changed its accounts: the pool takes them without
		// a restart, keeping the rate budgets of unchanged ones. One that
		// cannot be built (its tokenEnv empty) leaves the pool as it was,
		// reported once per change; the planner's create in an account
		// the pool lacks fails as unknown account until it is fixed.
		next, err := r.cfg.NewCloud(f)
		if err != nil {
			if r.warned != key {
				r.warned = key
				r.log.Error("genesis.yaml changed its accounts, but they cannot be used; keeping the previous ones", "err", err)
			}
			return r.cloud, nil
		}
		added, changed, removed := r.cloud.Adopt(next)
		r.accounts = key
		r.log.Info("accounts changed in genesis.yaml; in use without a restart", "added", added, "changed", changed, "removed", removed)
		return r.cloud, nil
	}
	c, err := r.cfg.NewCloud(f)
	if err != nil {
		return nil, err
	}
	r.cloud, r.accounts = c, key
	return c, nil
}

// resume finishes the journal's unfinished operations: their actions are
// idempotent, so running them again completes what a crash interrupted.
func (r *Reconciler) resume(ctx context.Context) error {
	snap, ok := r.Snapshot()
	if !ok || snap.Fleet == nil {
		return nil
	}
	c, err := r.cloudFor(snap.Fleet)
	if err != nil {
		return err
	}
	ops, err := r.cfg.Store.InFlight(ctx)
	if err != nil {
		return err
	}
	for _, op := range ops {
		op := op
		r.log.Info("resuming operation", "op", op.ID, "tenant", op.Workspace, "kind", op.Kind, "step", op.Step)
		if !r.claim(op.Workspace) {
			continue
		}
		r.jobs.Go(func() {
			defer r.release(op.Workspace)
			if err := r.cfg.Store.Retry(ctx, op.ID); err != nil {
				if ctx.Err() != nil {
					return // fenced: the new leader resumes it
				}
				r.log.Error("journal retry failed", "op", op.ID, "err", err)
				return
			}
			// The tenant may have left git since: its action says what
			// was wanted.
			desired := schema.StateRunning
			if towards := op.Action.Kind.Info().Towards; towards != "" {
				desired = towards
			}
			if t := snap.Tenants[op.Workspace].Tenant; t != nil {
				desired = t.Spec.State
			}
			r.run(ctx, c, op.ID, op.Action, desired, snap.Tenants[op.Workspace].ValidBlob, op.Commit, true)
		})
	}
	return nil
}

func (r *Reconciler) claim(ws string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running[ws] {
		return false
	}
	r.running[ws] = true
	return true
}

func (r *Reconciler) release(ws string) {
	r.mu.Lock()
	delete(r.running, ws)
	r.pending[ws] = true
	r.mu.Unlock()
	r.Kick()
}

// Pass is one reconcile: observe, plan, dispatch. Actions run in the
// background (one job per tenant, its actions in order, until ctx ends;
// Wait waits for them); the next pass leaves tenants with a job in flight
// alone, and tenants whose last action failed until their hold ends
// (queue.go).
func (r *Reconciler) Pass(ctx context.Context) (plan.Plan, error) {
	start := r.cfg.Now()
	m := r.cfg.Metrics
	p, err := r.pass(ctx)
	result := "ok"
	switch {
	case err != nil:
		result = "error"
	case len(p.Refused) > 0:
		result = "refused"
	}
	m.reconciles.WithLabelValues(result).Inc()
	m.reconcileSeconds.WithLabelValues(result).Observe(r.cfg.Now().Sub(start).Seconds())
	return p, err
}

func (r *Reconciler) pass(ctx context.Context) (plan.Plan, error) {
	// The snapshot and what changed in it are taken together: a commit
	// delivered while this pass runs stays pending for the next one (taken
	// apart, a Deliver between them lost its tenants until a full pass).
	// A full pass after start, a fleet change or a resync tick; otherwise
	// only the tenants that changed, whose job ended or whose backoff did.
	now := r.cfg.Now()
	r.mu.Lock()
	snap, ok := r.snap, r.have
	if !ok || snap.Fleet == nil {
		r.mu.Unlock()
		if !ok {
			return plan.Plan{}, errNoSnapshot
		}
		return plan.Plan{}, fmt.Errorf("no valid genesis.yaml at %s: %v", snap.Commit, snap.FleetErrors)
	}
	var scope []string
	if !r.needFull {
		for _, id := range r.dueLocked(now) {
			r.pending[id] = true
		}
		scope = make([]string, 0, len(r.pending))
		for id := range r.pending {
			scope = append(scope, id)
		}
		sort.Strings(scope)
	}
	r.needFull, r.pending = false, map[string]bool{}
	r.mu.Unlock()
	if scope != nil && len(scope) == 0 {
		return plan.Plan{}, nil
	}
	// A pass that fails before it plans leaves its tenants pending.
	planned := false
	defer func() {
		if planned {
			return
		}
		r.mu.Lock()
		if scope == nil {
			r.needFull = true
		}
		for _, id := range scope {
			r.pending[id] = true
		}
		r.mu.Unlock()
	}()
	c, err := r.cloudFor(snap.Fleet)
	if err != nil {
		return plan.Plan{}, err
	}
	if err := r.cfg.Store.SyncAccounts(ctx, snap.Fleet); err != nil {
		return plan.Plan{}, err
	}
	d := snap.Desired()
	// Record what git declares: every tenant on a full pass, the scope's
	// on a scoped one (a commit touching one tenant writes one row).
	// With it, what the fleet console filters by (tier, domains); a
	// scoped tenant git no longer declares loses them.
	declared := map[string]schema.State{}
	facts := map[string]store.TenantFacts{}
	if scope == nil {
		for id, t := range d.Tenants {
			declared[id] = t.Spec.State
			facts[id] = store.FactsOf(t)
		}
	} else {
		for _, id := range scope {
			if t, ok := d.Tenants[id]; ok {
				declared[id] = t.Spec.State
			}
			facts[id] = store.FactsOf(d.Tenants[id])
		}
	}
	if err := r.cfg.Store.SetDesired(ctx, declared, snap.Commit); err != nil {
		return plan.Plan{}, err
	}
	if err := r.cfg.Store.SetTenantFacts(ctx, facts, scope == nil); err != nil && ctx.Err() == nil {
		// The console's index only: the pass goes on (the next full pass
		// writes it again).
		r.log.Error("record tenant facts failed", "commit", snap.Commit, "err", err)
	}
	// What is in flight is read first: a job that ends while this pass
	// observes is still skipped, so its outcome (written as it ends) and
	// the droplet it made (listed by Observe) are never half-seen together.
	ops, err := r.cfg.Store.InFlight(ctx)
	if err != nil {
		return plan.Plan{}, err
	}
	inFlight := map[string]string{}
	for _, op := range ops {
		inFlight[op.Workspace] = op.Kind
	}
	r.mu.Lock()
	for ws := range r.running {
		if inFlight[ws] == "" {
			inFlight[ws] = "running"
		}
	}
	r.mu.Unlock()
	status, err := r.cfg.Store.LoadStatus(ctx)
	if err != nil {
		return plan.Plan{}, err
	}
	// The retry state is read after what is in flight, for the same
	// reason: a job records its outcome before it stops being in flight.
	holds, err := r.loadHolds(ctx, d, now)
	if err != nil {
		return plan.Plan{}, err
	}
	obs := c.ObserveExcept(ctx, r.skippedAccounts(snap.Fleet))
	o := plan.Observed{Droplets: obs.Droplets, Snapshots: obs.Snapshots, Incomplete: obs.Incomplete, Status: status, InFlight: inFlight, Held: holds}
	p := plan.Compute(d, o, now, plan.Options{AllowMassChange: r.cfg.AllowMassChange, Scope: scope})
	planned = true
	r.record(o, p, snap, scope)
	r.settleHolds(ctx, holds, p, o, d, scope, now)
	if len(p.IdleWarnings) > 0 {
		r.jobs.Go(func() { r.executor(r.log).WarnIdle(ctx, p.IdleWarnings) })
	}
	if len(p.Refused) > 0 {
		for _, ref := range p.Refused {
			r.log.Warn("plan refused by safety limits", "reason", ref.Reason, "detail", ref.Detail, "withheld", len(p.Withheld), "correlation_id", snap.Correlation)
		}
	}
	if len(p.Actions) > 0 {
		r.log.Info("plan computed", "commit", snap.Commit, "correlation_id", snap.Correlation, "actions", len(p.Actions),
			"scoped", scope != nil, "orphans", len(p.Orphans), "withheld", len(p.Withheld))
	}
	byTenant := map[string][]plan.Action{}
	var order []string
	for _, a := range p.Actions {
		a.Correlation = snap.Correlation
		if _, ok := byTenant[a.Workspace]; !ok {
			order = append(order, a.Workspace)
		}
		byTenant[a.Workspace] = append(byTenant[a.Workspace], a)
	}
	var renderOnly []func()
	var mass []store.HashUpdate
	for _, ws := range order {
		if !r.claim(ws) {
			continue
		}
		list := byTenant[ws]
		desired, hash := actions.DesiredOf(d, ws, list), d.Hashes[ws]
		job := func() {
			defer r.release(ws)
			for _, a := range list {
				if ctx.Err() != nil {
					return // the lease or the process ended: the next leader plans it
				}
				id, err := r.cfg.Store.Begin(ctx, a, desired, snap.Commit)
				if errors.Is(err, store.ErrBusy) || errors.Is(err, store.ErrStaleEpoch) {
					return
				}
				if err != nil {
					r.log.Error("journal failed", "tenant", ws, "action", a.Kind, "err", err)
					return
				}
				if !r.run(ctx, c, id, a, desired, hash, snap.Commit, false) {
					return
				}
			}
		}
		if len(list) == 1 && list[0].Kind == plan.UpdateManifest {
			renderOnly = append(renderOnly, job)
			mass = append(mass, store.HashUpdate{Action: list[0], Hash: hash, Desired: desired})
			continue
		}
		r.jobs.Go(job)
	}
	if len(mass) > eachLogged {
		r.jobs.Go(func() { r.recordMass(ctx, mass, snap.Commit, snap.Correlation) })
	} else {
		r.runBounded(renderOnly)
	}
	if snap.Commit != "" && r.cfg.Reconciled != nil {
		r.cfg.Reconciled(snap.Commit)
	}
	// Stored after dispatch (which only starts jobs), so the write (about
	// 0.5 s at 15,000 tenants) does not delay the actions.
	if r.cfg.Observations != nil {
		r.cfg.Observations.Save(ctx, o, r.cfg.Now())
	}
	return p, nil
}

// Tenants whose only action is update_manifest (their recorded hash
// moves, their manifest is rendered; DigitalOcean is not called) do not
// get a job each. A commit that edits every tenant plans one per tenant
// (100,000 at the scale run), and as many jobs held a goroutine and a
// render each, ten database round trips each on the leader's small pool,
// and the CPU and the connections the manifest sweep needed to issue the
// same manifests to the agents (at 100,000, 83,571 agents had their
// manifest within 5 minutes and 85,460 hashes were recorded in 15).
//
// A few of them (at most eachLogged) run on renderOnlyWorkers jobs
// between them, each rendering its manifest at once as before. More than
// that are a mass change: their manifests are left to the sweep that
// every new snapshot starts (it renders every droplet whose inputs
// changed, in pages, and again on its next round if one fails), and they
// are journaled massChunk at a time by Store.RecordHashes, one statement
// each; their "action started" and "action succeeded" lines are at info
// for the first eachLogged only, at debug past them, after one line at
// info saying how many.
const (
	renderOnlyWorkers = 8
	eachLogged        = 20
	massChunk         = 1000
)

// runBounded runs jobs on at most renderOnlyWorkers goroutines, in order.
func (r *Reconciler) runBounded(jobs []func()) {
	var next atomic.Int64
	for range min(renderOnlyWorkers, len(jobs)) {
		r.jobs.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				jobs[i]()
			}
		})
	}
}

// recordMass journals the update_manifest actions of a mass change (us,
// their tenants claimed by the caller) massChunk at a time, feeds each
// outcome to the work queue and releases every tenant. A tenant left out
// (an operation in flight) or in a chunk that failed is planned again by
// a later pass; when ctx ends, the rest are released unrecorded and the
// next leader plans them.
func (r *Reconciler) recordMass(ctx context.Context, us []store.HashUpdate, commit, correlation string) {
	r.log.Info("update_manifest for many tenants; past the first, their action lines at debug; the manifest sweep renders them", "tenants", len(us),
		"logged_each", eachLogged, "chunk", massChunk, "commit", commit, "correlation_id", correlation)
	logged := 0
	var stale error // a newer leader's epoch: no later chunk can commit
	for lo := 0; lo < len(us); lo += massChunk {
		chunk := us[lo:min(len(us), lo+massChunk)]
		var ids map[string]int64
		err := ctx.Err()
		if err == nil {
			err = stale
		}
		if err == nil {
			start := r.cfg.Now()
			ids, err = r.cfg.Store.RecordHashes(ctx, chunk, commit)
			if err == nil {
				r.log.Debug("update_manifest chunk recorded", "tenants", len(chunk), "recorded", len(ids), "seconds", r.cfg.Now().Sub(start).Seconds())
			} else if ctx.Err() == nil {
				r.log.Error("journal failed", "action", plan.UpdateManifest, "tenants", len(chunk), "first", chunk[0].Action.Workspace, "err", err)
			}
			if errors.Is(err, store.ErrStaleEpoch) {
				stale = err
			}
		}
		for _, u := range chunk {
			a := u.Action
			if id, ok := ids[a.Workspace]; ok {
				level := slog.LevelInfo
				if logged >= eachLogged {
					level = slog.LevelDebug
				}
				logged++
				log := r.log.With("op", id, "tenant", a.Workspace, "action", a.Kind, "correlation_id", a.Correlation)
				log.Log(ctx, level, "action started", "droplet", a.Droplet, "account", a.Account, "reason", a.Reason, "resume", false)
				r.cfg.Metrics.exec.Actions.WithLabelValues(string(a.Kind), "succeeded").Inc()
				r.requeue(ctx, a, u.Hash, commit, nil)
				log.Log(ctx, level, "action succeeded", "droplet_id", a.DropletID, "seconds", 0.0, "rendered_by", "sweep")
			}
			r.release(a.Workspace)
		}
	}
}

// run executes one journaled action with its kind's side steps
// (actions.Executor.Run) and feeds its outcome to the work queue; it
// reports whether the action succeeded.
func (r *Reconciler) run(ctx context.Context, c *cloud.Pool, opID int64, a plan.Action, desired schema.State, hash, commit string, resume bool) bool {
	log := r.log.With("op", opID, "tenant", a.Workspace, "action", a.Kind, "correlation_id", a.Correlation)
	log.Info("action started", "droplet", a.Droplet, "account", a.Account, "reason", a.Reason, "resume", resume)
	start := r.cfg.Now()
	x := r.executor(r.log)
	out := x.Run(ctx, c, actions.Op{ID: opID, Action: a, Desired: desired, Hash: hash, Commit: commit, Resume: resume}, log)
	if !out.Final {
		return false
	}
	r.requeue(ctx, a, hash, commit, out.Err)
	if !out.Executed {
		return false
	}
	if out.Err != nil {
		log.Error("action failed", "err", out.Err, "kind_of_error", holdKind(out.Err), "seconds", r.cfg.Now().Sub(start).Seconds())
		return false
	}
	log.Info("action succeeded", "droplet_id", out.DropletID, "seconds", r.cfg.Now().Sub(start).Seconds())
	x.RenderAfter(ctx, a, log)
	return true
}

// executor is the action executor of the loop's configuration, logging to
// log.
func (r *Reconciler) executor(log *slog.Logger) actions.Executor {
	var names *actions.Names
	var reserved func(schema.Tier) bool
	if snap, ok := r.Snapshot(); ok {
		names, reserved = actions.NamesOf(snap.Fleet), snap.Fleet.ReservedIP
	}
	return actions.Executor{Store: r.cfg.Store, UserData: r.cfg.UserData, Manifest: r.cfg.Manifest, PrepareTimeout: r.cfg.PrepareTimeout,
		Notify: r.queueNotice, Metrics: r.cfg.Metrics.exec, Names: names, ReservedIP: reserved, Now: r.cfg.Now, Log: log}
}

// record keeps the last observation and plan, and updates the gauges.
func (r *Reconciler) record(o plan.Observed, p plan.Plan, snap tenants.Snapshot, scope []string) {
	r.mu.Lock()
	r.observed = o
	if scope != nil {
		// A scoped plan reports only its scope's orphans: keep the
		// others from the last report.
		in := map[string]bool{}
		for _, id := range scope {
			in[id] = true
		}
		for _, orphan := range r.last.Orphans {
			if !in[orphan.Workspace] {
				p.Orphans = append(p.Orphans, orphan)
			}
		}
		// So are the held workspaces (until the next full plan).
		for _, h := range r.last.Held {
			if !in[h.Workspace] {
				p.Held = append(p.Held, h)
			}
		}
		sort.Slice(p.Held, func(i, j int) bool { return p.Held[i].Workspace < p.Held[j].Workspace })
	}
	r.last = p
	r.mu.Unlock()
	m := r.cfg.Metrics
	m.recordCost(snap.Fleet, o)
	m.recordAccounts(snap.Fleet, o)
	m.orphans.Set(float64(len(p.Orphans)))
	m.noCapacity.Set(float64(len(p.NoCapacity)))
	for _, ref := range p.Refused {
		m.refusals.WithLabelValues(ref.Reason).Inc()
	}
	// Every state is exported, at 0 when no tenant is in it: a panel reads
	// 0, not "No data".
	states := map[string]int{}
	for _, s := range lifecycle.All() {
		states[string(s)] = 0
	}
	for _, st := range o.Status {
		states[st.Lifecycle]++
	}
	m.lifecycle.Reset()
	for s, n := range states {
		m.lifecycle.WithLabelValues(s).Set(float64(n))
	}
	m.recordSpares(snap.Fleet, o)
	declared := map[string]int{string(schema.StateRunning): 0, string(schema.StateHibernated): 0, string(schema.StateAbsent): 0}
	for _, ts := range snap.Tenants {
		if ts.Tenant != nil {
			declared[string(ts.Tenant.Spec.State)]++
		}
	}
	m.declared.Reset()
	for s, n := range declared {
		m.declared.WithLabelValues(s).Set(float64(n))
	}
}

// Observed is the last observation (for genesis plan --reconciler).
func (r *Reconciler) Observed() plan.Observed {
	r.mu.Lock()
	defer r.mu.Unlock()
	o := r.observed
	// Copies, so the caller can encode while a pass runs.
	o.Droplets = append([]plan.Droplet(nil), o.Droplets...)
	o.Snapshots = append([]plan.Snapshot(nil), o.Snapshots...)
	sort.Slice(o.Droplets, func(i, j int) bool { return o.Droplets[i].ID < o.Droplets[j].ID })
	return o
}
