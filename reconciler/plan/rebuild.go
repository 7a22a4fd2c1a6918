package plan

import (
	"errors"
	"fmt"
	"sort"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// failedHold reports whether the planner leaves a tenant alone because the
// watchdog gave up on it: a FAILED tenant that should run stays as it is
// (nothing re-created) until a person retries it or changes its file.
// Hibernating or removing it (state: absent) still goes ahead.
func failedHold(t *schema.Tenant, st Status) bool {
	return lifecycle.State(st.Lifecycle) == lifecycle.Failed && t.Spec.State == schema.StateRunning
}

// ErrNotObserved means the observation cannot say where a rebuild should
// go (an account's listing is incomplete, or nothing was observed yet): a
// snapshot may be missing from it. Try again after a complete one.
var ErrNotObserved = errors.New("no complete observation of DigitalOcean")

// RebuildAction is the watchdog's rebuild of workspace id: a new droplet of
// the next generation beside the dead one, from the workspace's latest
// snapshot (in the account holding it) or, when there is none, fresh in the
// least-loaded account serving the region. The dead droplet is not part of
// the action: it is destroyed only once the new one is healthy. It fails
// when the tenant is not declared, or no account has room, and with
// ErrNotObserved when o is incomplete or empty.
func RebuildAction(d Desired, o Observed, id string) (Action, error) {
	if !o.Complete() || o.Status == nil {
		return Action{}, fmt.Errorf("rebuild %s: %w", id, ErrNotObserved)
	}
	t := d.Tenants[id]
	if t == nil || d.Fleet == nil {
		return Action{}, fmt.Errorf("rebuild %s: the tenant is not declared", id)
	}
	f := d.Fleet
	st := o.Status[id]
	gen := st.Generation
	load := map[string]int{}
	for _, dr := range o.Droplets {
		load[dr.Account]++
		if dr.Workspace == id {
			gen = max(gen, ParseGeneration(id, dr.Name))
		}
	}
	var ss []Snapshot
	for _, s := range o.Snapshots {
		if s.Workspace == id {
			gen = max(gen, ParseGeneration(id, s.Name))
			ss = append(ss, s)
		}
	}
	sort.Slice(ss, func(i, j int) bool {
		return ss[i].Created.Before(ss[j].Created) || (ss[i].Created.Equal(ss[j].Created) && ss[i].ID < ss[j].ID)
	})
	size := t.Size(f)
	a := Action{Kind: Rebuild, Workspace: id, Region: t.Spec.Droplet.Region, Size: size, Image: f.Spec.Defaults.Image,
		Tier: string(t.Metadata.Tier), Gen: gen + 1, APICalls: Rebuild.Info().APICalls, CostDelta: f.MonthlyUSD(size)}
	a.Droplet = DropletName(id, a.Gen)
	acct := newAccounts(f, o, load)
	if len(ss) > 0 {
		latest := ss[len(ss)-1]
		if !acct.take(latest.Account) {
			return Action{}, fmt.Errorf("rebuild %s: account %s, which holds snapshot %s, has no room", id, latest.Account, latest.Name)
		}
		a.Account, a.Snapshot = latest.Account, latest.ID
		a.Reason = "watchdog: rebuild from snapshot " + latest.Name
		return a, nil
	}
	chosen, alts := acct.pick(t.Spec.Droplet.Region)
	if chosen == "" {
		return Action{}, fmt.Errorf("rebuild %s: no account serving %s has room", id, t.Spec.Droplet.Region)
	}
	a.Account, a.Alternates = chosen, alts
	a.Reason = "watchdog: rebuild fresh (no snapshot)"
	return a, nil
}
