package plan

import (
	"fmt"
	"sort"
	"time"

	"genesis.dev/fleet/schema"
)

// Options change what Compute may decide.
type Options struct {
	// AllowMassChange lets a plan through the fleet's safety limits
	// (genesis-reconciler --allow-mass-change).
	AllowMassChange bool
	// Scope, when not nil, plans only these tenants (an incremental plan
	// after a commit that changed them). A scoped plan reports the orphans
	// of its scope only (a tenant file just removed); a full plan reports
	// every orphan.
	Scope []string
}

// Compute decides what to do to make observed match desired at time now. It
// is pure: no I/O, no clock, the same inputs give the same plan. Its rules:
//
//   - only state: absent destroys a droplet; a tenant missing from git, or
//     a droplet git does not explain, is reported as an orphan;
//   - a tenant with an operation in flight is left alone, and so is one
//     whose last action failed while its hold holds (Observed.Held: a
//     transient failure until its backoff ends, a terminal one until its
//     file changes); it is reported in Plan.Held;
//   - nothing destructive is decided from an incomplete view;
//   - a plan past the fleet's safety limits is refused whole, unless
//     Options.AllowMassChange;
//   - applying a plan and computing again gives an empty plan.
func Compute(d Desired, o Observed, now time.Time, opt Options) Plan {
	var p Plan
	if d.Fleet == nil {
		return p
	}
	var scope, removed map[string]bool
	if opt.Scope != nil {
		scope, removed = make(map[string]bool, len(opt.Scope)), map[string]bool{}
		for _, id := range opt.Scope {
			if _, ok := d.Tenants[id]; ok {
				scope[id] = true
			} else {
				removed[id] = true
			}
		}
	}
	drops := map[string][]Droplet{}
	load := map[string]int{}
	fleetSize := 0
	var spareDrops []Droplet
	for _, dr := range o.Droplets {
		load[dr.Account]++
		if schema.IsSpareWorkspace(dr.Workspace) {
			spareDrops = append(spareDrops, dr) // planned by planSpares, never orphans
			continue
		}
		if scope != nil {
			// Scoped: every droplet still counts for capacity and the
			// safety limits, but only the scope's are looked at.
			fleetSize++
			if scope[dr.Workspace] {
				drops[dr.Workspace] = append(drops[dr.Workspace], dr)
			} else if removed[dr.Workspace] {
				fleetSize--
				p.Orphans = append(p.Orphans, Orphan{Workspace: dr.Workspace, Account: dr.Account, Droplet: dr.Name, DropletID: dr.ID, Reason: "no tenant file declares this workspace"})
			}
			continue
		}
		if _, ok := d.Tenants[dr.Workspace]; ok {
			fleetSize++
			drops[dr.Workspace] = append(drops[dr.Workspace], dr)
			continue
		}
		reason := "no tenant file declares this workspace"
		if dr.Workspace == "" {
			reason = "tagged genesis but names no workspace"
		}
		p.Orphans = append(p.Orphans, Orphan{Workspace: dr.Workspace, Account: dr.Account, Droplet: dr.Name, DropletID: dr.ID, Reason: reason})
	}
	snaps := map[string][]Snapshot{}
	for _, s := range o.Snapshots {
		if scope != nil {
			if scope[s.Workspace] {
				snaps[s.Workspace] = append(snaps[s.Workspace], s)
			} else if removed[s.Workspace] {
				p.Orphans = append(p.Orphans, Orphan{Workspace: s.Workspace, Account: s.Account, Snapshot: s.ID, Reason: "snapshot of a workspace no tenant file declares"})
			}
			continue
		}
		if _, ok := d.Tenants[s.Workspace]; ok {
			snaps[s.Workspace] = append(snaps[s.Workspace], s)
			continue
		}
		p.Orphans = append(p.Orphans, Orphan{Workspace: s.Workspace, Account: s.Account, Snapshot: s.ID, Reason: "snapshot of a workspace no tenant file declares"})
	}
	acct := newAccounts(d.Fleet, o, load)
	acct.spares = newSparePool(d.Fleet, o, spareDrops)
	var ids []string
	if scope != nil {
		ids = sortedKeys(scope)
	} else {
		ids = sortedKeys(d.Tenants)
	}
	for _, id := range ids {
		if o.InFlight[id] != "" {
			continue
		}
		if h, ok := o.Held[id]; ok && h.Holds(d.Hashes[id], now) {
			p.Held = append(p.Held, Held{Workspace: id, Hold: h})
			continue
		}
		t := d.Tenants[id]
		if failedHold(t, o.Status[id]) {
			continue
		}
		ds := drops[id]
		sort.Slice(ds, func(i, j int) bool { return ds[i].ID < ds[j].ID })
		ss := snaps[id]
		sort.Slice(ss, func(i, j int) bool {
			return ss[i].Created.Before(ss[j].Created) || (ss[i].Created.Equal(ss[j].Created) && ss[i].ID < ss[j].ID)
		})
		st := o.Status[id]
		before := len(p.Actions)
		planTenant(&p, d, o, acct, t, st, ds, ss, now)
		if len(p.Actions) == before {
			planName(&p, d, t, st, len(ds))
		}
	}
	planSpares(&p, d, o, acct)
	holdSpares(&p, o, now)
	if !o.Complete() {
		var keep []Action
		for _, a := range p.Actions {
			if a.Kind.Destructive() {
				p.Withheld = append(p.Withheld, a)
				continue
			}
			keep = append(keep, a)
		}
		p.Actions = keep
		for _, name := range sortedKeys(o.Incomplete) {
			p.Deferred = append(p.Deferred, fmt.Sprintf("account %s: %s", name, o.Incomplete[name]))
		}
	}
	checkSafety(&p, d.Fleet, fleetSize, opt)
	sortActions(p.Actions)
	sortActions(p.Withheld)
	sort.Slice(p.Orphans, func(i, j int) bool {
		a, b := p.Orphans[i], p.Orphans[j]
		if a.Workspace != b.Workspace {
			return a.Workspace < b.Workspace
		}
		return a.Droplet+a.Snapshot < b.Droplet+b.Snapshot
	})
	return p
}

// planTenant adds the actions for one tenant. ds are its droplets by id, ss
// its snapshots oldest first.
func planTenant(p *Plan, d Desired, o Observed, acct *accounts, t *schema.Tenant, st Status, ds []Droplet, ss []Snapshot, now time.Time) {
	id := t.Metadata.ID
	f := d.Fleet
	size := t.Size(f)
	gen := st.Generation
	for _, dr := range ds {
		gen = max(gen, ParseGeneration(id, dr.Name))
	}
	for _, s := range ss {
		gen = max(gen, ParseGeneration(id, s.Name))
	}
	// The primary droplet is the one our records name, else the newest.
	var primary *Droplet
	for i := range ds {
		if ds[i].ID == st.DropletID {
			primary = &ds[i]
		}
	}
	if primary == nil && len(ds) > 0 {
		primary = &ds[len(ds)-1]
	}
	var latest *Snapshot
	if len(ss) > 0 {
		latest = &ss[len(ss)-1]
	}
	base := Action{Workspace: id, Region: t.Spec.Droplet.Region, Size: size, Image: f.Spec.Defaults.Image, Tier: string(t.Metadata.Tier)}
	add := func(a Action) {
		a.APICalls = a.Kind.Info().APICalls
		a.CostDelta += reservedIPCost(f, t, st, a.Kind)
		p.Actions = append(p.Actions, a)
	}
	if t.Spec.State == schema.StateAbsent {
		for _, dr := range ds {
			a := base
			a.Kind, a.Account, a.Droplet, a.DropletID, a.Size = Destroy, dr.Account, dr.Name, dr.ID, dr.Size
			a.Reason = "tenant says state: absent"
			a.CostDelta = -f.MonthlyUSD(dr.Size)
			add(a)
		}
	} else if t.Spec.State == schema.StateRunning {
		for _, dr := range ds {
			if primary != nil && dr.ID != primary.ID && dr.ID != st.Replacing {
				p.Orphans = append(p.Orphans, Orphan{Workspace: id, Account: dr.Account, Droplet: dr.Name, DropletID: dr.ID,
					Reason: fmt.Sprintf("second droplet for the workspace (primary is %s)", primary.Name)})
			}
		}
	}
	switch t.Spec.State {
	case schema.StateRunning:
		if primary == nil {
			if st.HibernatedByPolicy && !st.WakeRequested {
				break // hibernated for idleness: stays so until woken
			}
			if !o.Complete() && st.DropletID != 0 {
				p.Deferred = append(p.Deferred, fmt.Sprintf("%s: its droplet %d is not in an incomplete listing; not recreating", id, st.DropletID))
				break
			}
			a := base
			a.Kind, a.Gen = Create, gen+1
			a.Droplet = DropletName(id, a.Gen)
			a.Reason = "tenant is running and has no droplet"
			if latest != nil {
				a.Kind, a.Snapshot = Wake, latest.ID
				a.Reason = "tenant is running; waking from snapshot " + latest.Name
			}
			if a.Kind == Create && acct.spares.assign(&a, acct, t) {
				add(a) // a ready spare instead of a fresh droplet
				break
			}
			var chosen string
			var alts []string
			if a.Kind == Wake {
				// A snapshot lives in one account: wake there or not at all.
				if !acct.take(latest.Account) {
					p.NoCapacity = append(p.NoCapacity, id)
					break
				}
				chosen = latest.Account
			} else if chosen, alts = acct.pick(t.Spec.Droplet.Region); chosen == "" {
				p.NoCapacity = append(p.NoCapacity, id)
				break
			}
			a.Account, a.Alternates = chosen, alts
			a.CostDelta = f.MonthlyUSD(size)
			add(a)
			break
		}
		if st.DropletID != primary.ID {
			a := base
			a.Kind, a.Account, a.Droplet, a.DropletID, a.Gen = Adopt, primary.Account, primary.Name, primary.ID, ParseGeneration(id, primary.Name)
			a.Reason = "droplet carries our tags but we have no record of it"
			add(a)
		} else if h := d.Hashes[id]; h != "" && h != st.TenantHash {
			a := base
			a.Kind, a.Account, a.Droplet, a.DropletID = UpdateManifest, primary.Account, primary.Name, primary.ID
			a.Reason = "tenant changed in git"
			add(a)
		}
		if primary.Size != size {
			a := base
			a.Kind, a.Account, a.Droplet, a.DropletID, a.Gen = Resize, primary.Account, primary.Name, primary.ID, gen+1
			a.Reason = fmt.Sprintf("size %s → %s", primary.Size, size)
			a.CostDelta = f.MonthlyUSD(size) - f.MonthlyUSD(primary.Size)
			add(a)
			break
		}
		// Idle hibernation waits while a second droplet is reported: which
		// one holds the data is for a person to say.
		// It warns first and hibernates only once the warning is out for
		// the fleet's warning period (idle.go).
		if len(ds) != 1 {
			break
		}
		switch dec, w := idlePolicy(t.Spec.Hibernation, f.Spec.Hibernation.Warning.Std(), st, now); dec {
		case idleWarn:
			w.Workspace = id
			p.IdleWarnings = append(p.IdleWarnings, w)
		case idleHibernate:
			a := base
			a.Kind, a.Account, a.Droplet, a.DropletID, a.Size = Hibernate, primary.Account, primary.Name, primary.ID, primary.Size
			a.Reason = idleReason(st, t.Spec.Hibernation)
			a.CostDelta = -f.MonthlyUSD(primary.Size)
			add(a)
		}
	case schema.StateHibernated:
		// Every droplet is snapshotted before it goes, so a second one is
		// hibernated too: nothing is lost, and nothing is left running.
		for _, dr := range ds {
			a := base
			a.Kind, a.Account, a.Droplet, a.DropletID, a.Size = Hibernate, dr.Account, dr.Name, dr.ID, dr.Size
			a.Reason = "tenant says state: hibernated"
			a.CostDelta = -f.MonthlyUSD(dr.Size)
			add(a)
		}
	}
	// Retention: a tenant's latest snapshot is what a wake needs and is
	// kept, and so is the one fleet_status names. An older one is deleted
	// once the retention has passed since a newer one superseded it; an
	// absent tenant's once the retention has passed since it was taken.
	keep := f.Spec.SnapshotRetention.Std()
	for i, s := range ss {
		since := s.Created
		if t.Spec.State != schema.StateAbsent {
			if i == len(ss)-1 || s.ID == st.SnapshotID {
				continue
			}
			since = ss[i+1].Created
		}
		if now.Sub(since) < keep {
			continue
		}
		a := base
		a.Kind, a.Account, a.Snapshot = DeleteSnapshot, s.Account, s.ID
		a.CostDelta = -f.SnapshotMonthlyUSD(s.SizeGB)
		a.Reason = fmt.Sprintf("snapshot %s of an absent tenant is older than the %s retention", s.Name, keep)
		if t.Spec.State != schema.StateAbsent {
			a.Reason = fmt.Sprintf("snapshot %s was superseded more than %s ago", s.Name, keep)
		}
		add(a)
	}
}

// checkSafety refuses the whole plan when it destroys or hibernates more
// than the fleet allows.
func checkSafety(p *Plan, f *schema.Fleet, fleetSize int, opt Options) {
	destroys, hibernates := 0, 0
	for _, a := range p.Actions {
		switch a.Kind.Info().Limit {
		case LimitDestroy:
			destroys++
		case LimitHibernate:
			hibernates++
		}
	}
	s := f.Spec.Safety
	if destroys > s.MaxDestroyPerRun {
		p.Refused = append(p.Refused, Refusal{Reason: LimitDestroy,
			Detail: fmt.Sprintf("plan destroys %d droplets; safety.maxDestroyPerRun is %d", destroys, s.MaxDestroyPerRun)})
	}
	if hibernates > 0 {
		pct := 100 * float64(hibernates) / float64(max(fleetSize, 1))
		if pct > s.MaxHibernatePercent {
			p.Refused = append(p.Refused, Refusal{Reason: LimitHibernate,
				Detail: fmt.Sprintf("plan hibernates %d of %d droplets (%.1f%%); safety.maxHibernatePercent is %g", hibernates, fleetSize, pct, s.MaxHibernatePercent)})
		}
	}
	if len(p.Refused) > 0 && !opt.AllowMassChange {
		p.Withheld = append(p.Withheld, p.Actions...)
		p.Actions = nil
	}
}

func sortActions(as []Action) {
	sort.SliceStable(as, func(i, j int) bool {
		a, b := as[i], as[j]
		if a.Kind.Priority() != b.Kind.Priority() {
			return a.Kind.Priority() < b.Kind.Priority()
		}
		if a.Workspace != b.Workspace {
			return a.Workspace < b.Workspace
		}
		return a.Droplet+a.Snapshot < b.Droplet+b.Snapshot
	})
}

// accounts chooses where new droplets go (seed 3.1).
type accounts struct {
	fleet *schema.Fleet
	load  map[string]int
	down  map[string]string
	// spares are the ready spares new tenants may take (spares.go).
	spares *sparePool
}

func newAccounts(f *schema.Fleet, o Observed, load map[string]int) *accounts {
	l := make(map[string]int, len(load))
	for k, v := range load {
		l[k] = v
	}
	return &accounts{fleet: f, load: l, down: o.Incomplete}
}

// take counts a new droplet against account name if it is reachable and
// has room.
//
// A draining account still takes a wake (the snapshot is there and
// snapshots do not cross accounts); a disabled one takes nothing.
func (a *accounts) take(name string) bool {
	ac, ok := a.fleet.Account(name)
	if _, down := a.down[name]; !ok || down || a.load[name] >= ac.MaxDroplets || ac.Status == schema.AccountDisabled {
		return false
	}
	a.load[name]++
	return true
}

// pick returns the least-loaded reachable active account (not draining
// or disabled) serving region with free capacity, and the others that
// could take it in order, and counts the new droplet against the chosen
// one.
func (a *accounts) pick(region string) (string, []string) {
	type cand struct {
		name string
		fill float64
	}
	var cs []cand
	for _, ac := range a.fleet.Spec.Accounts {
		if _, down := a.down[ac.Name]; down || a.load[ac.Name] >= ac.MaxDroplets || !ac.TakesNew() {
			continue
		}
		serves := false
		for _, r := range ac.Regions {
			serves = serves || r == region
		}
		if serves {
			cs = append(cs, cand{ac.Name, float64(a.load[ac.Name]) / float64(ac.MaxDroplets)})
		}
	}
	if len(cs) == 0 {
		return "", nil
	}
	sort.SliceStable(cs, func(i, j int) bool {
		if cs[i].fill != cs[j].fill {
			return cs[i].fill < cs[j].fill
		}
		return cs[i].name < cs[j].name
	})
	a.load[cs[0].name]++
	var alts []string
	for _, c := range cs[1:] {
		alts = append(alts, c.name)
	}
	return cs[0].name, alts
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// holdSpares drops the spare pool's actions for spare workspaces whose
// hold holds (a spare has no tenant file: only time or an operator ends a
// hold), and reports them.
func holdSpares(p *Plan, o Observed, now time.Time) {
	if len(o.Held) == 0 {
		return
	}
	keep := p.Actions[:0]
	reported := map[string]bool{}
	for _, a := range p.Actions {
		if h, ok := o.Held[a.Workspace]; ok && schema.IsSpareWorkspace(a.Workspace) && h.Holds("", now) {
			if !reported[a.Workspace] {
				reported[a.Workspace] = true
				p.Held = append(p.Held, Held{Workspace: a.Workspace, Hold: h})
			}
			continue
		}
		keep = append(keep, a)
	}
	p.Actions = keep
	sort.Slice(p.Held, func(i, j int) bool { return p.Held[i].Workspace < p.Held[j].Workspace })
}
