package plan

import (
	"fmt"
	"sort"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// Hot spares (genesis.yaml spec.spares, seed "VIP pre-warm").
//
// A spare is a droplet made like a tenant's for the pseudo-workspace
// spare-<region>-<slot>: it boots, its agent enrolls and parks on a
// manifest with no tenant in it. The planner keeps slots 1..count of each
// region filled (a spare counts against its account's capacity like any
// droplet), destroys the spares of slots past count (a spare holds no
// tenant data; each counts against safety.maxDestroyPerRun), and never
// reports a spare as an orphan.
//
// A tenant that onboards (running, no droplet and no snapshot) in a region
// whose spares its tier may take gets a ready spare instead of a fresh
// droplet: an assign_spare action, and the slot is refilled in the same
// plan. A tenant with a snapshot always wakes from it: its data (n8n's
// executions, its Postgres) is on that disk, which a spare does not have.

// TagSpare marks every spare droplet; SpareRegionTag(region) its region.
const TagSpare = "genesis:spare"

// SpareRegionTag is the tag of the spares of region.
func SpareRegionTag(region string) string { return "genesis:spare:" + region }

// SpareTags are the tags of a spare's droplet.
func SpareTags(workspace, account, region string) []string {
	return []string{TagFleet, WorkspaceTag(workspace), "genesis:account:" + account, TagSpare, SpareRegionTag(region)}
}

// ReadyLifecycle is the lifecycle state in which a spare may be taken: its
// agent enrolled, applied its spare manifest and reports healthy.
const ReadyLifecycle = string(lifecycle.ActiveHealthy)

// sparePool holds the observed spares and hands out ready ones.
type sparePool struct {
	fleet *schema.Fleet
	o     Observed
	// byWS are each spare workspace's droplets, by id.
	byWS map[string][]Droplet
	// taken are the spare workspaces given to a tenant in this plan.
	taken map[string]bool
}

func newSparePool(f *schema.Fleet, o Observed, drops []Droplet) *sparePool {
	sp := &sparePool{fleet: f, o: o, byWS: map[string][]Droplet{}, taken: map[string]bool{}}
	for _, dr := range drops {
		sp.byWS[dr.Workspace] = append(sp.byWS[dr.Workspace], dr)
	}
	for _, ds := range sp.byWS {
		sort.Slice(ds, func(i, j int) bool { return ds[i].ID < ds[j].ID })
	}
	return sp
}

// primary is the droplet of spare workspace ws that its status names, else
// its newest; nil when it has none.
func (sp *sparePool) primary(ws string) *Droplet {
	ds := sp.byWS[ws]
	if len(ds) == 0 {
		return nil
	}
	for i := range ds {
		if ds[i].ID == sp.o.Status[ws].DropletID {
			return &ds[i]
		}
	}
	return &ds[len(ds)-1]
}

// ready reports whether spare ws may be taken now: nothing in flight for
// it, its droplet active in a reachable account, and its agent healthy on
// that droplet.
func (sp *sparePool) ready(ws string) (*Droplet, bool) {
	dr := sp.primary(ws)
	st := sp.o.Status[ws]
	if dr == nil || sp.taken[ws] || sp.o.InFlight[ws] != "" || dr.Status != "active" {
		return nil, false
	}
	if _, down := sp.o.Incomplete[dr.Account]; down {
		return nil, false
	}
	return dr, st.DropletID == dr.ID && st.Lifecycle == ReadyLifecycle
}

// assign turns a, a create for tenant t, into an assign_spare of a ready
// spare when t's tier may take one in its region and one of its size is
// ready; it reports whether it did. Spares are taken lowest slot first.
func (sp *sparePool) assign(a *Action, acct *accounts, t *schema.Tenant) bool {
	if sp == nil {
		return false
	}
	if _, ok := sp.fleet.SpareFor(a.Region, t.Metadata.Tier); !ok {
		return false
	}
	var best *Droplet
	bestSlot := 0
	for ws := range sp.byWS {
		region, slot, ok := schema.ParseSpareWorkspace(ws)
		if !ok || region != a.Region {
			continue
		}
		dr, ok := sp.ready(ws)
		if !ok || dr.Size != a.Size || dr.Region != a.Region {
			continue
		}
		if best == nil || slot < bestSlot {
			best, bestSlot = dr, slot
		}
	}
	if best == nil {
		return false
	}
	sp.taken[best.Workspace] = true
	a.Kind, a.Account, a.DropletID, a.Spare = AssignSpare, best.Account, best.ID, best.Workspace
	a.Reason = fmt.Sprintf("tenant is running and has no droplet; taking ready spare %s (droplet %s)", best.Workspace, best.Name)
	// The spare's droplet is paid for already; its replacement is the
	// create_spare's cost.
	a.CostDelta = 0
	return true
}

// planSpares keeps each region's spare slots filled and removes surplus
// spares. It runs after the tenants, so a slot whose spare was just taken
// is refilled in the same plan.
func planSpares(p *Plan, d Desired, o Observed, acct *accounts) {
	sp := acct.spares
	f := d.Fleet
	declared := map[string]schema.Spare{}
	regions := map[string]bool{}
	for _, s := range f.Spec.Spares {
		declared[s.Region] = s
		regions[s.Region] = true
	}
	// Slots that exist anywhere: droplets, or records.
	slots := map[string]map[int]bool{}
	note := func(ws string) {
		region, slot, ok := schema.ParseSpareWorkspace(ws)
		if !ok {
			return
		}
		regions[region] = true
		if slots[region] == nil {
			slots[region] = map[int]bool{}
		}
		slots[region][slot] = true
	}
	for ws := range sp.byWS {
		if _, _, ok := schema.ParseSpareWorkspace(ws); !ok {
			for _, dr := range sp.byWS[ws] {
				p.Orphans = append(p.Orphans, Orphan{Workspace: ws, Account: dr.Account, Droplet: dr.Name, DropletID: dr.ID,
					Reason: "tagged as a spare but its workspace is not spare-<region>-<slot>"})
			}
			continue
		}
		note(ws)
	}
	for ws := range o.Status {
		note(ws)
	}
	add := func(a Action) {
		a.APICalls = a.Kind.Info().APICalls
		p.Actions = append(p.Actions, a)
	}
	for _, region := range sortedKeys(regions) {
		want := declared[region]
		count := want.Count
		for slot := 1; slot <= count; slot++ {
			slots[region] = setSlot(slots[region], slot)
		}
		for _, slot := range sortedSlots(slots[region]) {
			ws := schema.SpareWorkspace(region, slot)
			if o.InFlight[ws] != "" {
				continue
			}
			st := o.Status[ws]
			ds := sp.byWS[ws]
			gen := st.Generation
			for _, dr := range ds {
				gen = max(gen, ParseGeneration(ws, dr.Name))
			}
			base := Action{Workspace: ws, Region: region, Size: want.Size, Image: f.Spec.Defaults.Image}
			destroy := func(dr Droplet, reason string) {
				a := base
				a.Kind, a.Account, a.Droplet, a.DropletID, a.Size = DestroySpare, dr.Account, dr.Name, dr.ID, dr.Size
				a.Reason = reason
				a.CostDelta = -f.MonthlyUSD(dr.Size)
				add(a)
			}
			if slot > count {
				// Surplus (count lowered, or the region's spares removed).
				for _, dr := range ds {
					if !sp.taken[ws] || dr.ID != sp.primary(ws).ID {
						destroy(dr, fmt.Sprintf("spare slot %d of %s is past the region's count %d", slot, region, count))
					}
				}
				continue
			}
			prim := sp.primary(ws)
			for _, dr := range ds {
				if dr.ID != prim.ID {
					destroy(dr, fmt.Sprintf("second droplet for spare %s (primary is %s)", ws, prim.Name))
				}
			}
			need := prim == nil || sp.taken[ws]
			if prim != nil && !sp.taken[ws] && prim.Size != want.Size {
				// Replaced at the declared size: destroy, then create
				// (one job, in this order).
				destroy(*prim, fmt.Sprintf("spare size %s → %s", prim.Size, want.Size))
				need = true
			}
			if !need {
				continue
			}
			if prim == nil && !o.Complete() && st.DropletID != 0 {
				p.Deferred = append(p.Deferred, fmt.Sprintf("%s: its droplet %d is not in an incomplete listing; not recreating", ws, st.DropletID))
				continue
			}
			a := base
			a.Kind, a.Gen = CreateSpare, gen+1
			a.Droplet = DropletName(ws, a.Gen)
			a.Reason = fmt.Sprintf("keep %d spares in %s", count, region)
			if sp.taken[ws] {
				a.Reason = fmt.Sprintf("replace spare %s, given to a tenant", ws)
			}
			chosen, alts := acct.pick(region)
			if chosen == "" {
				p.NoCapacity = append(p.NoCapacity, ws)
				continue
			}
			a.Account, a.Alternates = chosen, alts
			a.CostDelta = f.MonthlyUSD(want.Size)
			add(a)
		}
	}
}

func setSlot(m map[int]bool, slot int) map[int]bool {
	if m == nil {
		m = map[int]bool{}
	}
	m[slot] = true
	return m
}

func sortedSlots(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	sort.Ints(out)
	return out
}
