package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/reconciler/plan"
)

// ExecOptions are the per-call inputs of Execute.
type ExecOptions struct {
	// UserData is the cloud-init document of a created droplet.
	UserData string
	// Progress, when set, is called after each step with the result so
	// far, so the caller can journal it. It runs on Execute's goroutine.
	Progress func(step string, r Result)
	// Resume says the action may have run before (a journaled operation
	// after a crash): a create then looks for its droplet in every
	// candidate account before it creates anything, since the earlier try
	// may have landed in an alternate account.
	Resume bool
}

// Steps reported through ExecOptions.Progress.
const (
	StepFound        = "found"            // create/wake: the droplet exists already
	StepCreated      = "created"          // create/wake: POST accepted, id known
	StepActive       = "active"           // create/wake: active with a public IPv4
	StepStopped      = "stopped"          // hibernate: the droplet is off
	StepSnapshotting = "snapshot_started" // hibernate: snapshot action accepted
	StepSnapshotted  = "snapshotted"      // hibernate: the snapshot exists
	StepDestroyed    = "destroyed"        // the droplet is gone
	StepDeleted      = "deleted"          // the snapshot is gone
	StepFailover     = "failover"         // create: an account failed and made nothing; the next candidate is tried
)

// Result is what an action did.
type Result struct {
	// Account is the account the droplet is (or was) in: for a create,
	// the one actually used, which may be an alternate.
	Account   string
	DropletID int
	// DropletName is the created (or found) droplet's name (create, wake,
	// resize, rebuild, create_spare).
	DropletName string
	IP          string
	// SnapshotID and SnapshotSizeGB are the hibernation snapshot.
	SnapshotID     string
	SnapshotSizeGB float64
	// FailedOver names each candidate account a create gave up on because
	// it kept failing without making anything, with the error.
	FailedOver []string
}

// Execute carries out one planned action in DigitalOcean and returns once
// it is done. It is idempotent: every step first looks at what exists
// (the droplet by its deterministic name and workspace tag, the snapshot
// by its deterministic name), so calling it again after a crash part way
// resumes instead of repeating.
//
//   - Create and Wake find or create the droplet, trying a.Alternates on a
//     capacity error, and wait until it is active with a public IPv4. A
//     wake must run in the account holding its snapshot: snapshots do not
//     cross accounts, so an alternate without it is skipped and a wrong
//     a.Account is a terminal error.
//   - Hibernate stops the droplet (shutdown, power_off if that fails),
//     snapshots it, and destroys it only once the snapshot exists.
//   - Retire (a rebuild's replaced droplet with no newer copy of its
//     data) runs the hibernate steps on that droplet.
//   - Resize is a hibernate followed by a wake of generation a.Gen at
//     a.Size in the same account.
//   - Destroy and DeleteSnapshot treat 404 as done.
//   - Adopt and UpdateManifest make no DigitalOcean calls.
//
// The job waits for a slot in its account (by a.Kind's priority) and every
// request for the account's rate budget.
func (p *Pool) Execute(ctx context.Context, a plan.Action, opt ExecOptions) (Result, error) {
	res := Result{Account: a.Account, DropletID: a.DropletID}
	if a.Kind.Info().APICalls == 0 {
		return res, nil // nothing to do on DigitalOcean (adopt, update_manifest)
	}
	if err := leaseValid(ctx); err != nil {
		return res, fmt.Errorf("%s %s: %w", a.Kind, a.Workspace, err)
	}
	ctx = withPriority(ctx, a.Kind.Priority())
	x := &exec{p: p, a: a, opt: opt, res: &res}
	start := p.now()
	var err error
	switch a.Kind {
	case plan.Create:
		err = x.create(ctx, godo.DropletCreateImage{Slug: a.Image}, "", a.Droplet, a.Size)
	case plan.Wake:
		var id int
		id, err = snapshotImage(a.Account, a.Snapshot)
		if err == nil {
			err = x.create(ctx, godo.DropletCreateImage{ID: id}, a.Snapshot, a.Droplet, a.Size)
		}
	case plan.Hibernate, plan.Retire:
		err = x.inAccount(ctx, a.Account, x.hibernate)
	case plan.Resize:
		err = x.resize(ctx)
	case plan.Destroy:
		err = x.inAccount(ctx, a.Account, x.destroy)
	case plan.DeleteSnapshot:
		err = x.inAccount(ctx, a.Account, x.deleteSnapshot)
	case plan.Reboot, plan.PowerCycle, plan.Rebuild:
		err = x.remediate(ctx)
	case plan.SnapshotNow:
		err = x.inAccount(ctx, a.Account, x.snapshotNow)
	case plan.CreateSpare:
		err = x.create(ctx, godo.DropletCreateImage{Slug: a.Image}, "", a.Droplet, a.Size)
	case plan.DestroySpare:
		err = x.inAccount(ctx, a.Account, x.destroy)
	case plan.AssignSpare:
		err = x.inAccount(ctx, a.Account, x.assignSpare)
	default:
		err = terminalf(a.Account, string(a.Kind), "unknown action kind")
	}
	if IsFenced(err) {
		p.log.Info("action fenced; the leader lease is lost", "kind", a.Kind, "workspace", a.Workspace, "account", res.Account)
		return res, fmt.Errorf("%s %s: %w", a.Kind, a.Workspace, err)
	}
	if err != nil {
		p.log.Warn("action failed", "kind", a.Kind, "workspace", a.Workspace, "account", res.Account, "kind_of_error", KindOf(err).String(), "err", err)
		return res, fmt.Errorf("%s %s: %w", a.Kind, a.Workspace, err)
	}
	p.log.Info("action done", "kind", a.Kind, "workspace", a.Workspace, "account", res.Account, "droplet", res.DropletID, "took", p.now().Sub(start))
	return res, nil
}

func snapshotImage(account, id string) (int, error) {
	n, err := strconv.Atoi(id)
	if err != nil || n < 1 {
		return 0, terminalf(account, "wake", "snapshot id %q is not a number", id)
	}
	return n, nil
}

// exec is one Execute call.
type exec struct {
	p   *Pool
	a   plan.Action
	opt ExecOptions
	res *Result
}

func (x *exec) progress(step string) {
	if x.opt.Progress != nil {
		x.opt.Progress(step, *x.res)
	}
}

// inAccount runs fn holding a job slot of the account.
func (x *exec) inAccount(ctx context.Context, name string, fn func(context.Context, *account) error) error {
	ac, err := x.p.account(name, string(x.a.Kind))
	if err != nil {
		return err
	}
	release, err := ac.slots.acquire(ctx, x.a.Kind.Priority())
	if err != nil {
		return fmt.Errorf("account %s: wait for a job slot: %w", name, err)
	}
	defer release()
	return fn(ctx, ac)
}

// create finds or makes droplet name from image in a.Account or, on a
// capacity error, in each of a.Alternates; snapshot, when set, is the id
// the image comes from (wake, resize), which limits the accounts to the
// ones holding it.
func (x *exec) create(ctx context.Context, image godo.DropletCreateImage, snapshot, name, size string) error {
	cands := append([]string{x.a.Account}, x.a.Alternates...)
	if snapshot != "" && x.a.Kind == plan.Resize {
		cands = cands[:1]
	}
	if x.opt.Resume {
		for _, c := range cands {
			var found *godo.Droplet
			err := x.inAccount(ctx, c, func(ctx context.Context, ac *account) error {
				var err error
				found, err = x.p.findDroplet(ctx, ac, x.a.Workspace, name)
				if err != nil || found == nil {
					return err
				}
				return x.boot(ctx, ac, found, true)
			})
			if err != nil || found != nil {
				return err
			}
		}
	}
	var capErrs []error
	for i, c := range cands {
		unsure, made := false, false
		err := x.inAccount(ctx, c, func(ctx context.Context, ac *account) error {
			if snapshot != "" {
				ok, err := x.p.hasSnapshot(ctx, ac, snapshot)
				if err != nil {
					return err
				}
				if !ok {
					if i == 0 {
						return terminalf(ac.name, "wake from snapshot "+snapshot, "the snapshot is not in this account: a wake must run in the account that holds its snapshot")
					}
					return errSkip
				}
			}
			d, found, err := x.p.findOrCreate(ctx, ac, x.a, name, size, image, x.opt.UserData, &unsure)
			if err != nil {
				return err
			}
			made = true
			return x.boot(ctx, ac, d, found)
		})
		switch {
		case err == errSkip:
			continue
		case IsCapacity(err):
			x.p.log.Info("account full, trying the next", "account", c, "workspace", x.a.Workspace, "err", err)
			capErrs = append(capErrs, err)
			continue
		case i < len(cands)-1 && !made && !unsure && brokenAccount(err):
			// The account fails (a 5xx storm, timeouts, a refused
			// token) and provably made nothing: the next one takes it.
			x.p.log.Warn("account failing, trying the next", "account", c, "next", cands[i+1], "workspace", x.a.Workspace, "err", err)
			x.res.FailedOver = append(x.res.FailedOver, fmt.Sprintf("%s: %v", c, err))
			x.p.m.failovers.WithLabelValues(c).Inc()
			x.progress(StepFailover)
			continue
		}
		return err
	}
	if len(capErrs) == 0 {
		return terminalf(x.a.Account, "create droplet "+name, "no candidate account holds snapshot %s", snapshot)
	}
	return &Error{Kind: KindCapacity, Account: x.a.Account, Op: "create droplet " + name,
		Err: fmt.Errorf("every candidate account is full (%d tried): %w", len(capErrs), capErrs[len(capErrs)-1])}
}

// brokenAccount reports whether err says the account itself fails rather
// than the request: transient errors that outlived their retries (a 5xx
// storm, timeouts, no connection) and a refused token (401, 403).
func brokenAccount(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Kind == KindTransient || e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
}

// errSkip makes create pass over an account that cannot take the action.
var errSkip = &Error{Kind: KindTerminal, Op: "skip", Err: fmt.Errorf("account skipped")}

// boot records d and waits until it is active with a public IPv4.
func (x *exec) boot(ctx context.Context, ac *account, d *godo.Droplet, found bool) error {
	x.res.Account, x.res.DropletID, x.res.DropletName = ac.name, d.ID, d.Name
	if found {
		x.progress(StepFound)
	} else {
		x.progress(StepCreated)
	}
	d, err := x.p.waitActive(ctx, ac, d.ID)
	if err != nil {
		return err
	}
	x.res.IP, _ = d.PublicIPv4()
	x.progress(StepActive)
	return nil
}

// findOrCreate returns the account's droplet called name in workspace
// a.Workspace, creating it when there is none. A create that fails in a
// way that may have gone through (5xx, timeout, connection) is never sent
// again blindly: the next try lists first.
//
// *unsure reports, when it returns an error, whether a POST it sent may
// have made the droplet after all (a 5xx or no answer that no later
// listing cleared): the caller must not make it in another account then.
func (p *Pool) findOrCreate(ctx context.Context, ac *account, a plan.Action, name, size string, image godo.DropletCreateImage, userData string, unsure *bool) (*godo.Droplet, bool, error) {
	op := "create droplet " + name
	req := &godo.DropletCreateRequest{
		Name:     name,
		Region:   a.Region,
		Size:     size,
		Image:    image,
		Tags:     plan.Tags(a.Workspace, ac.name, a.Tier),
		UserData: userData,
	}
	tries, limited := 0, 0
	for {
		d, err := p.findDroplet(ctx, ac, a.Workspace, name)
		if err != nil {
			return nil, false, err
		}
		if d != nil {
			return d, true, nil
		}
		*unsure = false // the listing shows no droplet of an earlier POST
		d, resp, err := ac.client.Droplets.Create(ctx, req)
		if err == nil {
			p.log.Info("droplet created", "account", ac.name, "workspace", a.Workspace, "droplet", d.ID, "name", name)
			return d, false, nil
		}
		if ctx.Err() != nil {
			return nil, false, fmt.Errorf("account %s: %s: %w", ac.name, op, context.Cause(ctx))
		}
		e := classify(ac.name, op, err)
		if e.Kind != KindTransient {
			return nil, false, e
		}
		// A 429 was not carried out; a 5xx or no answer may have been.
		*unsure = resp == nil || resp.StatusCode != http.StatusTooManyRequests
		var wait time.Duration
		if resp != nil && resp.StatusCode == 429 {
			if limited++; limited > p.lim.MaxRateLimited {
				return nil, false, e
			}
		} else {
			if tries++; tries >= p.lim.MaxAttempts {
				return nil, false, e
			}
			wait = p.backoff(tries)
		}
		p.log.Debug("retrying create", "account", ac.name, "name", name, "status", e.Status, "wait", wait, "err", err)
		if err := p.sleep(ctx, wait); err != nil {
			return nil, false, fmt.Errorf("account %s: %s: %w", ac.name, op, err)
		}
	}
}

// findDroplet returns the droplet called name among the account's
// droplets tagged for workspace ws, or nil. With duplicates (which only a
// bug makes) the oldest wins.
func (p *Pool) findDroplet(ctx context.Context, ac *account, ws, name string) (*godo.Droplet, error) {
	tag := plan.WorkspaceTag(ws)
	var found *godo.Droplet
	for page := 1; ; page++ {
		var ds []godo.Droplet
		var resp *godo.Response
		err := p.call(ctx, ac, "find droplet "+name, func(ctx context.Context) (*godo.Response, error) {
			var err error
			ds, resp, err = ac.client.Droplets.ListByTag(ctx, tag, &godo.ListOptions{Page: page, PerPage: perPage})
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for i := range ds {
			if ds[i].Name == name && (found == nil || ds[i].ID < found.ID) {
				if found != nil {
					p.log.Warn("duplicate droplets", "account", ac.name, "name", name, "ids", []int{found.ID, ds[i].ID})
				}
				found = &ds[i]
			}
		}
		if lastPage(resp) || len(ds) == 0 {
			return found, nil
		}
	}
}

// getDroplet fetches a droplet; a 404 is (nil, nil).
func (p *Pool) getDroplet(ctx context.Context, ac *account, id int) (*godo.Droplet, error) {
	var d *godo.Droplet
	err := p.call(ctx, ac, fmt.Sprintf("get droplet %d", id), func(ctx context.Context) (*godo.Response, error) {
		var resp *godo.Response
		var err error
		d, resp, err = ac.client.Droplets.Get(ctx, id)
		return resp, err
	})
	if IsNotFound(err) {
		return nil, nil
	}
	return d, err
}

// poller spaces out the polls of one wait and bounds it.
type poller struct {
	p        *Pool
	delay    time.Duration
	deadline time.Time
}

func (p *Pool) newPoller() *poller {
	return &poller{p: p, delay: p.lim.PollMin, deadline: p.now().Add(p.lim.WaitTimeout)}
}

// wait sleeps before the next poll; false with an error when the wait ran
// out or ctx ended.
func (w *poller) wait(ctx context.Context) error {
	if !w.p.now().Before(w.deadline) {
		return fmt.Errorf("gave up after %s", w.p.lim.WaitTimeout)
	}
	d := w.delay
	w.delay = min(2*w.delay, w.p.lim.PollMax)
	return w.p.sleep(ctx, d)
}

// waitActive polls a droplet until it is active with a public IPv4.
func (p *Pool) waitActive(ctx context.Context, ac *account, id int) (*godo.Droplet, error) {
	op := fmt.Sprintf("wait for droplet %d to boot", id)
	pl := p.newPoller()
	for {
		d, err := p.getDroplet(ctx, ac, id)
		if err != nil {
			return nil, err
		}
		// A droplet that vanished or ended off while booting is
		// DigitalOcean's failure, not bad input: this try is over (the
		// caller rolls the droplet back) and a later one may succeed, so
		// it is transient (the reconciler's queue backs off).
		if d == nil {
			return nil, &Error{Kind: KindTransient, Account: ac.name, Op: op, Err: errors.New("the droplet is gone")}
		}
		ip, _ := d.PublicIPv4()
		switch {
		case d.Status == "active" && ip != "":
			return d, nil
		case d.Status == "off" || d.Status == "archive":
			return nil, &Error{Kind: KindTransient, Account: ac.name, Op: op, Err: fmt.Errorf("the droplet is %s", d.Status)}
		}
		if err := pl.wait(ctx); err != nil {
			return nil, &Error{Kind: KindTransient, Account: ac.name, Op: op, Err: err}
		}
	}
}

// waitAction polls an action until it completes or errors.
func (p *Pool) waitAction(ctx context.Context, ac *account, id int) (*godo.Action, error) {
	op := fmt.Sprintf("wait for action %d", id)
	pl := p.newPoller()
	for {
		var act *godo.Action
		err := p.call(ctx, ac, op, func(ctx context.Context) (*godo.Response, error) {
			var resp *godo.Response
			var err error
			act, resp, err = ac.client.Actions.Get(ctx, id)
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		if act.Status == godo.ActionCompleted || act.Status == "errored" {
			return act, nil
		}
		if err := pl.wait(ctx); err != nil {
			return nil, &Error{Kind: KindTransient, Account: ac.name, Op: op, Err: err}
		}
	}
}

// dropletAction posts one action (KindPending when the droplet is busy).
func (p *Pool) dropletAction(ctx context.Context, ac *account, id int, typ, name string) (*godo.Action, error) {
	var act *godo.Action
	err := p.call(ctx, ac, fmt.Sprintf("%s droplet %d", typ, id), func(ctx context.Context) (*godo.Response, error) {
		var resp *godo.Response
		var err error
		switch typ {
		case "shutdown":
			act, resp, err = ac.client.DropletActions.Shutdown(ctx, id)
		case "power_off":
			act, resp, err = ac.client.DropletActions.PowerOff(ctx, id)
		case "snapshot":
			act, resp, err = ac.client.DropletActions.Snapshot(ctx, id, name)
		default:
			return nil, fmt.Errorf("unsupported droplet action %q", typ)
		}
		return resp, err
	})
	return act, err
}

// findSnapshot returns the account's droplet snapshot called name, or nil.
func (p *Pool) findSnapshot(ctx context.Context, ac *account, name string) (*godo.Snapshot, error) {
	for page := 1; ; page++ {
		var ss []godo.Snapshot
		var resp *godo.Response
		err := p.call(ctx, ac, "find snapshot "+name, func(ctx context.Context) (*godo.Response, error) {
			var err error
			ss, resp, err = ac.client.Snapshots.ListDroplet(ctx, &godo.ListOptions{Page: page, PerPage: perPage})
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for i := range ss {
			if ss[i].Name == name {
				return &ss[i], nil
			}
		}
		if lastPage(resp) || len(ss) == 0 {
			return nil, nil
		}
	}
}

// hasSnapshot reports whether the account holds snapshot id.
func (p *Pool) hasSnapshot(ctx context.Context, ac *account, id string) (bool, error) {
	err := p.call(ctx, ac, "get snapshot "+id, func(ctx context.Context) (*godo.Response, error) {
		_, resp, err := ac.client.Snapshots.Get(ctx, id)
		return resp, err
	})
	if IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// hibernate snapshots the action's droplet and then destroys it. It is a
// loop over what DigitalOcean shows: snapshot there → destroy; droplet
// active → stop it; droplet off → snapshot it; busy → wait. So a second
// call after a crash anywhere takes no second snapshot, and the droplet is
// never destroyed before its snapshot exists.
func (x *exec) hibernate(ctx context.Context, ac *account) error {
	ws := x.a.Workspace
	gen := plan.ParseGeneration(ws, x.a.Droplet)
	if gen == 0 {
		return terminalf(ac.name, "hibernate", "droplet name %q is not a genesis name of workspace %s", x.a.Droplet, ws)
	}
	name := plan.SnapshotName(ws, gen)
	op := fmt.Sprintf("hibernate droplet %s", x.a.Droplet)
	x.res.Account = ac.name
	pl := x.p.newPoller()
	useShutdown := true
	for {
		snap, err := x.p.findSnapshot(ctx, ac, name)
		if err != nil {
			return err
		}
		if snap != nil {
			x.res.SnapshotID, x.res.SnapshotSizeGB = snap.ID, snap.SizeGigaBytes
			x.progress(StepSnapshotted)
			break
		}
		d, err := x.droplet(ctx, ac)
		if err != nil {
			return err
		}
		if d == nil {
			return terminalf(ac.name, op, "the droplet is gone and there is no snapshot %s", name)
		}
		x.res.DropletID = d.ID
		var act *godo.Action
		switch d.Status {
		case "active":
			typ := "shutdown"
			if !useShutdown {
				typ = "power_off"
			}
			act, err = x.p.dropletAction(ctx, ac, d.ID, typ, "")
			if err == nil {
				if act, err = x.p.waitAction(ctx, ac, act.ID); err == nil {
					if act.Status != godo.ActionCompleted {
						if !useShutdown {
							return &Error{Kind: KindTransient, Account: ac.name, Op: op, Err: fmt.Errorf("power_off action %d errored", act.ID)}
						}
						x.p.log.Warn("shutdown failed, powering off", "account", ac.name, "droplet", d.ID)
						useShutdown = false
						continue
					}
					x.progress(StepStopped)
					continue
				}
			}
		case "off":
			act, err = x.p.dropletAction(ctx, ac, d.ID, "snapshot", name)
			if err == nil {
				x.progress(StepSnapshotting)
				if act, err = x.p.waitAction(ctx, ac, act.ID); err == nil {
					if act.Status != godo.ActionCompleted {
						return &Error{Kind: KindTransient, Account: ac.name, Op: op, Err: fmt.Errorf("snapshot action %d errored", act.ID)}
					}
					continue // the loop finds the snapshot
				}
			}
		}
		// Still booting, or busy with another action (a pending event,
		// perhaps the snapshot an earlier call started): wait and look
		// again.
		if err != nil && KindOf(err) != KindPending {
			return err
		}
		if err := pl.wait(ctx); err != nil {
			return &Error{Kind: KindPending, Account: ac.name, Op: op, Err: err}
		}
	}
	// The snapshot exists: now, and only now, the droplet may go. Look it
	// up again (by id with its name checked, or by name): a wrong id must
	// never destroy somebody else's droplet.
	d, err := x.droplet(ctx, ac)
	if err != nil {
		return err
	}
	if d != nil {
		if err := x.p.deleteDroplet(ctx, ac, d.ID); err != nil {
			return err
		}
		x.res.DropletID = d.ID
	}
	x.progress(StepDestroyed)
	return nil
}

// droplet returns the action's droplet: by id when the plan knows it
// (checking that the id still carries the expected name), else by name.
func (x *exec) droplet(ctx context.Context, ac *account) (*godo.Droplet, error) {
	if x.a.DropletID == 0 {
		return x.p.findDroplet(ctx, ac, x.a.Workspace, x.a.Droplet)
	}
	d, err := x.p.getDroplet(ctx, ac, x.a.DropletID)
	if err != nil || d == nil {
		return d, err
	}
	if x.a.Droplet != "" && d.Name != x.a.Droplet {
		return nil, terminalf(ac.name, "hibernate", "droplet %d is called %q, not %q", d.ID, d.Name, x.a.Droplet)
	}
	return d, nil
}

// resize is hibernate's snapshot and destroy, then a create of generation
// a.Gen from that snapshot at a.Size.
func (x *exec) resize(ctx context.Context) error {
	if err := x.inAccount(ctx, x.a.Account, x.hibernate); err != nil {
		return err
	}
	id, err := snapshotImage(x.a.Account, x.res.SnapshotID)
	if err != nil {
		return err
	}
	if x.a.Gen < 1 {
		return terminalf(x.a.Account, "resize", "the action has no new generation")
	}
	name := plan.DropletName(x.a.Workspace, x.a.Gen)
	return x.create(ctx, godo.DropletCreateImage{ID: id}, x.res.SnapshotID, name, x.a.Size)
}

func (x *exec) destroy(ctx context.Context, ac *account) error {
	if x.a.DropletID == 0 {
		return terminalf(ac.name, "destroy", "the action names no droplet id")
	}
	if err := x.p.deleteDroplet(ctx, ac, x.a.DropletID); err != nil {
		return err
	}
	x.progress(StepDestroyed)
	return nil
}

// deleteDroplet deletes a droplet; a 404 means it is gone already.
func (p *Pool) deleteDroplet(ctx context.Context, ac *account, id int) error {
	err := p.call(ctx, ac, fmt.Sprintf("destroy droplet %d", id), func(ctx context.Context) (*godo.Response, error) {
		return ac.client.Droplets.Delete(ctx, id)
	})
	if IsNotFound(err) {
		return nil
	}
	return err
}

func (x *exec) deleteSnapshot(ctx context.Context, ac *account) error {
	if x.a.Snapshot == "" {
		return terminalf(ac.name, "delete snapshot", "the action names no snapshot")
	}
	err := x.p.call(ctx, ac, "delete snapshot "+x.a.Snapshot, func(ctx context.Context) (*godo.Response, error) {
		return ac.client.Snapshots.Delete(ctx, x.a.Snapshot)
	})
	if err != nil && !IsNotFound(err) {
		return err
	}
	x.res.SnapshotID = x.a.Snapshot
	x.progress(StepDeleted)
	return nil
}
