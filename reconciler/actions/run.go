package actions

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// Executor runs journaled actions. It is a value the loop fills from its
// configuration for each use; its zero hooks mean "none".
type Executor struct {
	Store *store.Store
	// UserData renders the cloud-init document of a droplet about to be
	// created (nil: none).
	UserData func(ctx context.Context, a plan.Action) (string, error)
	// Manifest renders and signs the tenant's manifest for an action
	// (nil: none); see plan.KindInfo.Renders.
	Manifest func(ctx context.Context, a plan.Action) error
	// PrepareTimeout bounds a hibernation's wait for its agent to confirm
	// n8n stopped (DefaultPrepareTimeout when not positive).
	PrepareTimeout time.Duration
	// Names is the fleet's spec.dns (nil: tenants have no stable names).
	Names *Names
	// ReservedIP reports whether tenants of a tier hold a reserved IP
	// (spec.tiers.<t>.reservedIP; nil: none do).
	ReservedIP func(schema.Tier) bool
	// Notify queues a notice for people (idle warnings, a tenant FAILED,
	// an account failing); nil: logged only.
	Notify  func(ctx context.Context, n notify.Notification) error
	Metrics *Metrics
	Now     func() time.Time
	Log     *slog.Logger
}

// Op is one journaled action to run: the journal's operation id, the
// action, the declared state it works towards, the tenant content and
// commit it comes from, and whether it resumes an operation a crash or a
// lost leadership left in flight.
type Op struct {
	ID      int64
	Action  plan.Action
	Desired schema.State
	Hash    string
	Commit  string
	Resume  bool
}

// Outcome is how an Op ended.
type Outcome struct {
	// Err is the action's error; nil when it succeeded.
	Err error
	// Final: the action ended and its outcome goes to the work queue.
	// False when it was interrupted (leadership ended: the journal keeps
	// it in flight for the next leader) or its outcome could not be
	// journaled.
	Final bool
	// Executed: the action reached DigitalOcean. False when it failed
	// before, rendering its user data (logged here).
	Executed bool
	// DropletID is the droplet the outcome recorded.
	DropletID int
}

// Run executes op with its kind's side steps and records its outcome. A
// create that fails after its droplet exists is rolled back: the half-made
// droplet is destroyed, freeing the account's slot, and the failure
// recorded. log carries the operation's attributes.
func (e Executor) Run(ctx context.Context, c *cloud.Pool, op Op, log *slog.Logger) Outcome {
	a, desired, hash, commit := op.Action, op.Desired, op.Hash, op.Commit
	opt := cloud.ExecOptions{Resume: op.Resume, Progress: func(step string, res cloud.Result) {
		record := e.Store.Step
		if step == cloud.StepCreated || step == cloud.StepFound {
			// The droplet id is known: its provisioning token binds it.
			record = func(ctx context.Context, id int64, step string, droplet int) error {
				return e.Store.Created(ctx, id, step, droplet, res.DropletName)
			}
		}
		if err := record(ctx, op.ID, step, res.DropletID); err != nil {
			log.Error("journal step failed", "step", step, "err", err)
		}
	}}
	if e.UserData != nil && a.Kind.Info().NeedsUserData {
		ud, err := e.UserData(ctx, a)
		if err != nil {
			log.Error("render user data failed", "err", err)
			err = fmt.Errorf("render user data: %w", err)
			if ferr := e.Store.Finish(ctx, op.ID, a, store.Outcome{Desired: desired, Commit: commit}, err); ferr != nil {
				log.Error("journal finish failed", "err", ferr)
			}
			return Outcome{Err: err, Final: true}
		}
		opt.UserData = ud
	}
	if a.Kind == plan.Hibernate {
		e.prepareHibernate(ctx, op.ID, a, log)
	}
	var res cloud.Result
	var err error
	if a.Kind == plan.PointName {
		res.Account = a.Account
	} else {
		res, err = c.Execute(ctx, a, opt)
	}
	if a.Kind == plan.AssignSpare {
		err = e.assignSpare(ctx, c, a, res, desired, err)
	}
	for _, f := range res.FailedOver {
		account, why, _ := strings.Cut(f, ": ")
		e.notice(ctx, notify.Notification{Kind: notify.AccountFailing, Account: account,
			Summary: "DigitalOcean account " + account + " fails; creates move to other accounts", Detail: why})
	}
	if err == nil && a.Kind == plan.UpdateManifest && e.Manifest != nil {
		if merr := e.Manifest(ctx, a); merr != nil {
			err = fmt.Errorf("render manifest: %w", merr)
		}
	}
	if ctx.Err() != nil {
		// Leadership ended mid-action: the journal keeps it in flight
		// and the next leader resumes it.
		log.Info("action interrupted; left for resume")
		return Outcome{Err: err, Executed: true}
	}
	if err != nil && a.RollBack(res.DropletID) {
		err = e.rollBack(ctx, c, a, res, err)
	}
	var name *store.NameWrite
	var reserved *store.ReservedIP
	if err == nil {
		var addr string
		reserved, addr, err = e.holdReserved(ctx, c, op, res, log)
		if err == nil {
			name, err = e.writeName(ctx, c, op, res, addr, log)
		} else if a.RollBack(res.DropletID) {
			err = e.rollBack(ctx, c, a, res, err)
		}
		if ctx.Err() != nil {
			log.Info("action interrupted; left for resume")
			return Outcome{Err: err, Executed: true}
		}
	}
	out := store.Outcome{Account: res.Account, DropletID: res.DropletID, DropletName: a.Droplet, IP: res.IP,
		SnapshotID: res.SnapshotID, SnapshotGB: res.SnapshotSizeGB, TenantHash: hash, Desired: desired, Commit: commit,
		ByPolicy: a.Kind == plan.Hibernate && desired == schema.StateRunning, Name: name, Reserved: reserved,
		FailedOver: res.FailedOver}
	if out.Account == "" {
		out.Account = a.Account
	}
	if a.Kind == plan.Resize {
		out.DropletName = plan.DropletName(a.Workspace, a.Gen)
	}
	if out.DropletID == 0 {
		out.DropletID = a.DropletID
	}
	result := "succeeded"
	if err != nil {
		result = "failed"
	}
	e.Metrics.Actions.WithLabelValues(string(a.Kind), result).Inc()
	if ferr := e.Store.Finish(ctx, op.ID, a, out, err); ferr != nil {
		log.Error("journal finish failed", "err", ferr)
		return Outcome{Err: err, Executed: true, DropletID: out.DropletID}
	}
	return Outcome{Err: err, Final: true, Executed: true, DropletID: out.DropletID}
}

// rollBack destroys the droplet a failed action a made (res.DropletID)
// and returns its error, which says whether that worked.
func (e Executor) rollBack(ctx context.Context, c *cloud.Pool, a plan.Action, res cloud.Result, err error) error {
	rb := plan.Action{Kind: plan.Destroy, Workspace: a.Workspace, Account: res.Account, Droplet: a.Droplet, DropletID: res.DropletID}
	if _, rbErr := c.Execute(ctx, rb, cloud.ExecOptions{}); rbErr != nil {
		return fmt.Errorf("%w (rollback of droplet %d failed: %v)", err, res.DropletID, rbErr)
	}
	return fmt.Errorf("%w (rolled back: droplet %d destroyed)", err, res.DropletID)
}

// RenderAfter renders the tenant's manifest again once a succeeded: the
// droplet's agent may have enrolled (and got a manifest without the
// droplet's address) before the action recorded the droplet, so it gets
// its complete manifest now rather than at the next sweep.
func (e Executor) RenderAfter(ctx context.Context, a plan.Action, log *slog.Logger) {
	if e.Manifest != nil && a.Kind.Info().RenderAfter {
		if merr := e.Manifest(ctx, a); merr != nil {
			log.Warn("render manifest of the recorded droplet failed; the sweep retries", "err", merr)
		}
	}
}
