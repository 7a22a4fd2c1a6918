// Package rollouts runs progressive rollouts of fleet-wide changes
// (genesis.yaml spec.rollout): it turns a change of the fleet-wide
// manifest inputs (the default n8n version, the agent build, the golden
// templates; rollout.Inputs) into a rollout with an id, persisted state
// and a wave schedule, and moves it one step at a time while this replica
// leads.
//
// A step reads the current wave's members and what their droplets report,
// then, in one transaction fenced by the leader epoch:
//
//   - a released member whose droplet reports applied a manifest of the
//     target and is ACTIVE_HEALTHY counts as applied; one whose agent
//     rejected such a manifest (schema.Rejection), whose droplet is FAILED,
//     that went unhealthy after applying, or that took longer than
//     spec.rollout.progressDeadline counts as failed; one whose tenant is
//     not running (hibernated, pending, being destroyed) is skipped;
//   - more failures than the wave's budget (plus those a person accepted by
//     resuming) pause the rollout, or with onFailure: rollback end it
//     rolled back (every tenant renders what it had before);
//   - else up to maxUnavailable members are in flight at once: new ones
//     are released in the rollout's rank order, inside a maintenance
//     window of their tenant's time zone when windows are declared;
//   - when every member has settled the wave bakes, and after its bake the
//     next wave starts; after the last the rollout is done.
//
// Manifests follow from the state alone (rollout.Effective, read with
// each render target in the same query), so a crash between steps, a
// restart or a new leader continue from the stored state: nothing is held
// only in memory. A newer fleet-wide change supersedes an unfinished
// rollout: the new rollout starts from its own first wave, and each tenant
// keeps what it had under the old one (the old target if it was released)
// until its wave of the new rollout releases it, so nobody goes back and
// forth.
package rollouts

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/rollout"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// DefaultEvery is how often a step runs.
const DefaultEvery = 5 * time.Second

// Config configures an Executor. Store and Desired are required.
type Config struct {
	Store   *store.Store
	Desired func() (tenants.Snapshot, bool)
	// Kick asks for a manifest sweep after members were released or the
	// rollout changed state (nil: none; the periodic sweep catches up).
	Kick       func()
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
	// Every is the time between steps; default DefaultEvery.
	Every time.Duration
	// Notify tells people a rollout paused at a failure budget or rolled
	// back (nil: only logged); reconciler.Reconciler.Notice.
	Notify func(context.Context, notify.Notification) error
}

// Executor runs rollouts.
type Executor struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	inputs rollout.Cache
	// warned: the not-yet-acted-on tenantChanges: rollout was logged.
	warned bool
}

// New makes an Executor.
func New(cfg Config) *Executor {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultEvery
	}
	return &Executor{cfg: cfg, log: cfg.Logger.With("component", "rollout"), m: newMetrics(cfg.Registerer)}
}

// Run steps every cfg.Every until ctx ends: leading() says whether this
// replica leads (then lead() is the leader's fenced context); followers
// only refresh the metrics.
func (x *Executor) Run(ctx context.Context, leading func() (context.Context, bool)) error {
	t := time.NewTicker(x.cfg.Every)
	defer t.Stop()
	for {
		if lctx, ok := leading(); ok {
			if err := x.Step(lctx); err != nil && lctx.Err() == nil && !errors.Is(err, store.ErrStaleEpoch) {
				x.log.Error("rollout step failed", "err", err)
			}
		} else if err := x.Observe(ctx); err != nil && ctx.Err() == nil {
			x.log.Warn("rollout metrics not refreshed", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Step starts a rollout for a new fleet-wide change and moves the newest
// rollout one step. ctx should carry the leader's epoch
// (store.WithEpoch): every write is refused once another replica leads.
func (x *Executor) Step(ctx context.Context) error {
	snap, ok := x.cfg.Desired()
	if !ok || snap.Fleet == nil || snap.Fleet.Spec.Rollout == nil {
		return x.Observe(ctx)
	}
	if snap.Fleet.Spec.Rollout.TenantChanges == schema.TenantChangesRollout && !x.warned {
		x.warned = true
		x.log.Warn("spec.rollout.tenantChanges: rollout is not acted on yet: a change of one tenant's file applies at once")
	}
	latest, have, err := x.cfg.Store.LatestRollout(ctx)
	if err != nil {
		return fmt.Errorf("read the newest rollout: %w", err)
	}
	_, body, digest, err := x.inputs.Desired(snap.Fleet, snap.Templates)
	if err != nil {
		return fmt.Errorf("fleet inputs: %w", err)
	}
	if !have || latest.Target != digest {
		if latest, err = x.start(ctx, snap, body, digest, latest, have); err != nil {
			return err
		}
	}
	if latest.State == rollout.Running {
		if err := x.advance(ctx, snap, latest); err != nil {
			if errors.Is(err, store.ErrRolloutMoved) {
				x.log.Info("rollout changed under this step; next step reads it again", "rollout", latest.ID, "err", err)
			} else {
				return err
			}
		}
	}
	return x.Observe(ctx)
}

// start creates the rollout of digest, superseding latest. The first
// rollout a fleet ever has (no rollout yet) adopts what the fleet runs:
// it is done at once, nothing moves.
func (x *Executor) start(ctx context.Context, snap tenants.Snapshot, body []byte, digest string, latest store.Rollout, have bool) (store.Rollout, error) {
	now := x.cfg.Now().UTC()
	if err := x.cfg.Store.PutRolloutInputs(ctx, digest, body); err != nil {
		return latest, fmt.Errorf("store fleet inputs: %w", err)
	}
	seq := int64(1)
	if have {
		seq = latest.Seq + 1
	}
	policy := snap.Fleet.Spec.Rollout
	r := store.Rollout{ID: fmt.Sprintf("r%d-%s", seq, digest[:10]), Commit: snap.Commit, Correlation: snap.Correlation,
		Target: digest, Policy: storedPolicy(policy)}
	if !have {
		r.Baseline, r.State, r.Reason, r.FinishedAt = digest, rollout.Done, "adopted: the fleet's inputs when rollouts began", &now
		r.Waves = []store.RolloutWave{}
		if err := x.cfg.Store.CreateRollout(ctx, r, nil); err != nil {
			return latest, err
		}
		x.log.Info("rollout state adopted", "rollout", r.ID, "inputs", digest, "commit", snap.Commit)
		x.kick()
		return x.cfg.Store.RolloutByID(ctx, r.ID)
	}
	prev, err := x.cfg.Store.RolloutMembers(ctx, latest.ID)
	if err != nil {
		return latest, fmt.Errorf("read members of %s: %w", latest.ID, err)
	}
	before := make(map[string]rollout.Position, len(prev))
	for _, m := range prev {
		before[m.Workspace] = rollout.Position{Member: true, Released: m.Released, From: m.From}
	}
	effective := func(ws string) string {
		p := before[ws]
		p.State, p.Baseline, p.Target = latest.State, latest.Baseline, latest.Target
		return rollout.Effective(p)
	}
	r.Baseline = effective("") // a tenant the old rollout did not have
	target, _, _, err := x.inputs.Desired(snap.Fleet, snap.Templates)
	if err != nil {
		return latest, err
	}
	// Only the tenants the change affects take part in the waves; the
	// rest are settled at once (each keeps rendering the same content).
	// Tenants declared hibernated (or absent) take part too, but last: a
	// canary must be a droplet that runs.
	members, unaffected, asleep := map[string]*schema.Tenant{}, []string{}, []string{}
	for ws, t := range Members(snap) {
		before, err := x.inputs.Stored(effective(ws), func(d string) ([]byte, error) { return x.cfg.Store.RolloutInputs(ctx, d) })
		if err != nil {
			return latest, fmt.Errorf("inputs of %s before the rollout: %w", ws, err)
		}
		switch {
		case !rollout.Affects(before, target, t):
			unaffected = append(unaffected, ws)
		case t.Spec.State != schema.StateRunning:
			asleep = append(asleep, ws)
		default:
			members[ws] = t
		}
	}
	waves := rollout.Assign(policy, members, r.ID)
	last := len(waves) - 1
	waves[last].Tenants = append(waves[last].Tenants, asleep...)
	var list []store.RolloutMember
	for _, ws := range unaffected {
		list = append(list, store.RolloutMember{Workspace: ws, Wave: last, Unaffected: true})
	}
	for i, w := range waves {
		r.Waves = append(r.Waves, store.RolloutWave{Name: w.Name, Size: len(w.Tenants), BakeSeconds: w.Bake.Seconds(),
			MaxUnavailable: w.MaxUnavailable, FailureBudget: w.FailureBudget})
		for _, ws := range w.Tenants {
			m := store.RolloutMember{Workspace: ws, Wave: i}
			if e := effective(ws); e != r.Baseline {
				m.From = e
			}
			list = append(list, m)
		}
	}
	r.State, r.WaveStartedAt, r.CreatedAt = rollout.Running, &now, now
	if err := x.cfg.Store.CreateRollout(ctx, r, list); err != nil {
		return latest, err
	}
	x.log.Info("rollout started", "rollout", r.ID, "commit", snap.Commit, "correlation_id", snap.Correlation,
		"from", r.Baseline, "to", digest, "waves", len(r.Waves), "tenants", len(list)-len(unaffected), "unaffected", len(unaffected),
		"supersedes", latest.ID, "superseded_state", latest.State)
	return x.cfg.Store.RolloutByID(ctx, r.ID)
}

// Members are the tenants a rollout takes: every tenant with a valid
// version in snap (spares take their inputs at assignment).
func Members(snap tenants.Snapshot) map[string]*schema.Tenant {
	out := make(map[string]*schema.Tenant, len(snap.Tenants))
	for ws, ts := range snap.Tenants {
		if ts.Tenant != nil && !schema.IsSpareWorkspace(ws) {
			out[ws] = ts.Tenant
		}
	}
	return out
}

// storedPolicy is the part of p a rollout keeps.
func storedPolicy(p *schema.Rollout) store.RolloutPolicy {
	sp := store.RolloutPolicy{OnFailure: string(p.OnFailure), ProgressDeadlineSeconds: p.ProgressDeadline.Std().Seconds()}
	if len(p.MaintenanceWindows) > 0 {
		sp.Windows = mustJSON(p.MaintenanceWindows)
	}
	return sp
}

func (x *Executor) kick() {
	if x.cfg.Kick != nil {
		x.cfg.Kick()
	}
}

// advance moves running rollout r one step.
func (x *Executor) advance(ctx context.Context, snap tenants.Snapshot, r store.Rollout) error {
	now := x.cfg.Now().UTC()
	if r.Wave >= len(r.Waves) {
		return x.cfg.Store.AdvanceRollout(ctx, r.ID, store.RolloutUpdate{Now: now, ExpectState: r.State, ExpectWave: r.Wave,
			State: rollout.Done, Wave: r.Wave, Progress: true, Finished: true})
	}
	ms, err := x.cfg.Store.WaveStatus(ctx, r.ID, r.Wave)
	if err != nil {
		return fmt.Errorf("read wave %d of %s: %w", r.Wave, r.ID, err)
	}
	d := Decide(r, ms, windowsOf(r.Policy), func(ws string) *time.Location { return zoneOf(snap, ws) }, now)
	if d.Idle() {
		return nil
	}
	if err := x.cfg.Store.AdvanceRollout(ctx, r.ID, d.RolloutUpdate); err != nil {
		return err
	}
	x.report(r, d)
	if x.cfg.Notify != nil && d.State != r.State && (d.State == rollout.Paused || d.State == rollout.RolledBack) {
		what := "paused: resume it (genesis rollout resume) or abort it"
		if d.State == rollout.RolledBack {
			what = "rolled back"
		}
		n := notify.Notification{Kind: notify.RolloutPaused, Rollout: r.ID, Summary: "rollout " + r.ID + " " + what, Detail: d.Reason}
		if err := x.cfg.Notify(ctx, n); err != nil && ctx.Err() == nil {
			x.log.Error("queue notice failed", "rollout", r.ID, "err", err)
		}
	}
	if len(d.Release) > 0 || d.State != r.State {
		x.kick()
	}
	return nil
}

// report logs what a step did.
func (x *Executor) report(r store.Rollout, d Decision) {
	wave := r.Waves[min(r.Wave, len(r.Waves)-1)].Name
	for ws, why := range d.Failed {
		x.log.Warn("rollout member failed", "rollout", r.ID, "wave", wave, "tenant", ws, "reason", why)
	}
	if len(d.Release) > 0 {
		x.log.Info("rollout released tenants", "rollout", r.ID, "wave", wave, "tenants", len(d.Release), "first", d.Release[0])
	}
	switch {
	case d.State == rollout.Paused:
		x.log.Error("rollout paused", "rollout", r.ID, "wave", wave, "reason", d.Reason)
	case d.State == rollout.RolledBack:
		x.log.Error("rollout rolled back", "rollout", r.ID, "wave", wave, "reason", d.Reason)
	case d.State == rollout.Done:
		x.log.Info("rollout done", "rollout", r.ID)
	case d.Wave != r.Wave:
		x.log.Info("rollout wave passed", "rollout", r.ID, "wave", wave, "next", r.Waves[d.Wave].Name)
	}
}

// zoneOf is ws's metadata.timezone (UTC when unset or unknown).
func zoneOf(snap tenants.Snapshot, ws string) *time.Location {
	ts, ok := snap.Tenants[ws]
	if !ok || ts.Tenant == nil || ts.Tenant.Metadata.Timezone == "" {
		return time.UTC
	}
	loc, err := time.LoadLocation(ts.Tenant.Metadata.Timezone)
	if err != nil {
		return time.UTC
	}
	return loc
}

// Observe refreshes the metrics from the newest rollout.
func (x *Executor) Observe(ctx context.Context) error {
	r, have, err := x.cfg.Store.LatestRollout(ctx)
	if err != nil || !have {
		x.m.set(store.Rollout{}, nil, have)
		return err
	}
	var counts []store.WaveCount
	if rollout.Open(r.State) {
		if counts, _, err = x.cfg.Store.RolloutProgress(ctx, r.ID, 0); err != nil {
			return err
		}
	}
	x.m.set(r, counts, true)
	return nil
}

// running lifecycle states: the droplet exists and its agent runs.
var running = []string{"CONFIGURING", "DEPLOYING", "ACTIVE_HEALTHY", "ACTIVE_DEGRADED", "ACTIVE_CRITICAL", "REBOOTING"}

// unhealthy states of a droplet that had applied the change.
var unhealthy = []string{"ACTIVE_DEGRADED", "ACTIVE_CRITICAL", "FAILED"}

// Decision is what one step does.
type Decision struct {
	store.RolloutUpdate
}

// Idle reports whether the step changes nothing.
func (d Decision) Idle() bool {
	u := d.RolloutUpdate
	return len(u.Release) == 0 && len(u.Applied) == 0 && len(u.Skipped) == 0 && len(u.Failed) == 0 &&
		u.State == u.ExpectState && u.Wave == u.ExpectWave && !u.Progress
}

// Decide is one step of running rollout r whose current wave's members
// are ms (pure: the clock, the windows and the zones are given).
func Decide(r store.Rollout, ms []store.MemberStatus, windows []schema.MaintenanceWindow, zone func(string) *time.Location, now time.Time) Decision {
	w := r.Waves[r.Wave]
	u := store.RolloutUpdate{Now: now, ExpectState: r.State, ExpectWave: r.Wave, State: r.State, Wave: r.Wave,
		WaveStartedAt: r.WaveStartedAt, BakingSince: r.BakingSince, AckedFailures: r.AckedFailures, Reason: r.Reason,
		Failed: map[string]string{}}
	if u.WaveStartedAt == nil {
		u.WaveStartedAt, u.Progress = &now, true
	}
	deadline := time.Duration(r.Policy.ProgressDeadlineSeconds * float64(time.Second))
	if deadline <= 0 {
		deadline = schema.DefaultProgressDeadline
	}
	failed, inflight := 0, 0
	var waiting []string
	var reasons []string
	fail := func(ws, why string) {
		u.Failed[ws] = why
		failed++
		reasons = append(reasons, ws+": "+why)
	}
	for _, m := range ms {
		switch {
		case m.Failed != nil:
			failed++
			reasons = append(reasons, m.Workspace+": "+m.Reason)
		case m.Released == nil:
			waiting = append(waiting, m.Workspace)
		case m.Applied != nil:
			switch {
			case m.Skipped:
			case m.Rejected != "":
				// An agent build that failed after the manifest was
				// applied: its watcher rolled it back.
				fail(m.Workspace, "the agent rejected the change after applying it: "+m.Rejected)
			case slices.Contains(unhealthy, m.State):
				fail(m.Workspace, "unhealthy after applying the change: "+m.State)
			}
		case m.Rejected != "":
			fail(m.Workspace, "the agent rejected the change: "+m.Rejected)
		case m.State == "FAILED":
			fail(m.Workspace, "the droplet is FAILED")
		case !slices.Contains(running, m.State):
			u.Skipped = append(u.Skipped, m.Workspace)
		case m.AppliedTarget && m.State == "ACTIVE_HEALTHY":
			u.Applied, u.Progress = append(u.Applied, m.Workspace), true
		case now.Sub(*m.Released) > deadline:
			fail(m.Workspace, fmt.Sprintf("did not apply the change and report healthy within %s (state %s)", deadline, m.State))
		default:
			inflight++
		}
	}
	if failed > w.FailureBudget+r.AckedFailures {
		u.Reason = fmt.Sprintf("wave %s: %d of %d droplets failed (budget %d", w.Name, failed, len(ms), w.FailureBudget)
		if r.AckedFailures > 0 {
			u.Reason += fmt.Sprintf(", %d accepted", r.AckedFailures)
		}
		u.Reason += "): " + strings.Join(first(reasons, 3), "; ")
		u.State, u.Progress = rollout.Paused, true
		if r.Policy.OnFailure == string(schema.OnFailureRollback) {
			u.State, u.Finished = rollout.RolledBack, true
		}
		return Decision{u}
	}
	// Release in rank order, as many as maxUnavailable allows.
	sort.Slice(waiting, func(i, j int) bool {
		a, b := rollout.Rank(r.ID, waiting[i]), rollout.Rank(r.ID, waiting[j])
		return string(a[:]) < string(b[:])
	})
	slots := w.MaxUnavailable - inflight
	for _, ws := range waiting {
		if slots <= 0 {
			break
		}
		if !rollout.InWindow(windows, zone(ws), now) {
			continue // outside its tenant's maintenance windows
		}
		u.Release, u.Progress = append(u.Release, ws), true
		slots--
	}
	settled := len(waiting) == 0 && inflight == 0
	if !settled {
		return Decision{u}
	}
	if len(ms) > 0 && u.BakingSince == nil {
		u.BakingSince, u.Progress = &now, true
	}
	bake := time.Duration(w.BakeSeconds * float64(time.Second))
	if len(ms) == 0 || !now.Before(u.BakingSince.Add(bake)) {
		u.Wave, u.WaveStartedAt, u.BakingSince, u.AckedFailures, u.Progress = r.Wave+1, &now, nil, 0, true
		if u.Wave >= len(r.Waves) {
			u.State, u.Finished, u.Reason = rollout.Done, true, ""
		}
	}
	return Decision{u}
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}
