package plan

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/schema"
)

// spareFleet is the test fleet with spares declared.
func spareFleet(t testing.TB, spares ...schema.Spare) *schema.Fleet {
	f := testFleet(t)
	for i := range spares {
		if spares[i].Size == "" {
			spares[i].Size = f.Spec.Defaults.Size
		}
	}
	f.Spec.Spares = spares
	return f
}

func spareDroplet(id int, region string, slot, gen int, account, size string) Droplet {
	ws := schema.SpareWorkspace(region, slot)
	return Droplet{ID: id, Name: DropletName(ws, gen), Account: account, Region: region, Size: size, Status: "active", Workspace: ws}
}

func ready(id, gen int, account string) Status {
	return Status{Lifecycle: ReadyLifecycle, Account: account, DropletID: id, Generation: gen}
}

// brief is an action as the tests compare it.
type brief struct {
	Kind      Kind
	Workspace string
	Account   string
	Droplet   string
	DropletID int
	Spare     string
}

func briefs(as []Action) []brief {
	var out []brief
	for _, a := range as {
		out = append(out, brief{a.Kind, a.Workspace, a.Account, a.Droplet, a.DropletID, a.Spare})
	}
	return out
}

func TestSpares(t *testing.T) {
	const small = "s-1vcpu-1gb"
	enterprise := []schema.Tier{schema.TierEnterprise}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	type tc struct {
		name       string
		spares     []schema.Spare
		tenants    []caseTenant
		droplets   []Droplet
		snapshots  []Snapshot
		status     map[string]Status
		inFlight   map[string]string
		incomplete map[string]string
		want       []brief
		withheld   []brief
		refused    []string
		noCapacity []string
	}
	tests := []tc{
		{
			name:   "keep count spares",
			spares: []schema.Spare{{Region: "nyc3", Count: 2, Tiers: enterprise}},
			want: []brief{
				{Kind: CreateSpare, Workspace: "spare-nyc3-1", Account: "acct-a", Droplet: "genesis-spare-nyc3-1-1"},
				{Kind: CreateSpare, Workspace: "spare-nyc3-2", Account: "acct-b", Droplet: "genesis-spare-nyc3-2-1"},
			},
		},
		{
			name:     "provisioning spares are kept, not doubled",
			spares:   []schema.Spare{{Region: "nyc3", Count: 2, Tiers: enterprise}},
			droplets: []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small)},
			status:   map[string]Status{"spare-nyc3-1": {Lifecycle: "CONFIGURING", DropletID: 11, Generation: 1}},
			inFlight: map[string]string{"spare-nyc3-2": "create_spare"},
		},
		{
			name:     "assign instead of create for an allowed tier, and refill",
			spares:   []schema.Spare{{Region: "nyc3", Count: 2, Tiers: enterprise}},
			tenants:  []caseTenant{{ID: "ws-big", State: "running", Region: "nyc3", Tier: "enterprise"}},
			droplets: []Droplet{spareDroplet(12, "nyc3", 2, 1, "acct-b", small), spareDroplet(11, "nyc3", 1, 3, "acct-a", small)},
			status:   map[string]Status{"spare-nyc3-1": ready(11, 3, "acct-a"), "spare-nyc3-2": ready(12, 1, "acct-b")},
			want: []brief{
				{Kind: AssignSpare, Workspace: "ws-big", Account: "acct-a", Droplet: "genesis-ws-big-1", DropletID: 11, Spare: "spare-nyc3-1"},
				{Kind: CreateSpare, Workspace: "spare-nyc3-1", Account: "acct-a", Droplet: "genesis-spare-nyc3-1-4"},
			},
		},
		{
			name:     "two tenants take two spares",
			spares:   []schema.Spare{{Region: "nyc3", Count: 2, Tiers: []schema.Tier{schema.TierPro, schema.TierEnterprise}}},
			tenants:  []caseTenant{{ID: "ws-a", State: "running", Region: "nyc3", Tier: "enterprise"}, {ID: "ws-b", State: "running", Region: "nyc3", Tier: "pro"}, {ID: "ws-c", State: "running", Region: "nyc3", Tier: "pro"}},
			droplets: []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small), spareDroplet(12, "nyc3", 2, 1, "acct-b", small)},
			status:   map[string]Status{"spare-nyc3-1": ready(11, 1, "acct-a"), "spare-nyc3-2": ready(12, 1, "acct-b")},
			want: []brief{
				{Kind: AssignSpare, Workspace: "ws-a", Account: "acct-a", Droplet: "genesis-ws-a-1", DropletID: 11, Spare: "spare-nyc3-1"},
				{Kind: AssignSpare, Workspace: "ws-b", Account: "acct-b", Droplet: "genesis-ws-b-1", DropletID: 12, Spare: "spare-nyc3-2"},
				{Kind: Create, Workspace: "ws-c", Account: "acct-a", Droplet: "genesis-ws-c-1"},
				{Kind: CreateSpare, Workspace: "spare-nyc3-1", Account: "acct-a", Droplet: "genesis-spare-nyc3-1-2"},
				{Kind: CreateSpare, Workspace: "spare-nyc3-2", Account: "acct-b", Droplet: "genesis-spare-nyc3-2-2"},
			},
		},
		{
			name:     "not for a tier the region's spares do not serve",
			spares:   []schema.Spare{{Region: "nyc3", Count: 1, Tiers: enterprise}},
			tenants:  []caseTenant{{ID: "ws-pro", State: "running", Region: "nyc3", Tier: "pro"}},
			droplets: []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small)},
			status:   map[string]Status{"spare-nyc3-1": ready(11, 1, "acct-a")},
			want:     []brief{{Kind: Create, Workspace: "ws-pro", Account: "acct-b", Droplet: "genesis-ws-pro-1"}},
		},
		{
			name:     "not in another region",
			spares:   []schema.Spare{{Region: "nyc3", Count: 1, Tiers: enterprise}},
			tenants:  []caseTenant{{ID: "ws-big", State: "running", Region: "nyc1", Tier: "enterprise"}},
			droplets: []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small)},
			status:   map[string]Status{"spare-nyc3-1": ready(11, 1, "acct-a")},
			want:     []brief{{Kind: Create, Workspace: "ws-big", Account: "acct-a", Droplet: "genesis-ws-big-1"}},
		},
		{
			name:      "a tenant with a snapshot wakes from it: its data is there",
			spares:    []schema.Spare{{Region: "nyc3", Count: 1, Tiers: enterprise}},
			tenants:   []caseTenant{{ID: "ws-big", State: "running", Region: "nyc3", Tier: "enterprise"}},
			droplets:  []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small)},
			snapshots: []Snapshot{{ID: "77", Name: "genesis-ws-big-1-snap", Account: "acct-b", Region: "nyc3", Workspace: "ws-big", Created: now.Add(-time.Hour)}},
			status:    map[string]Status{"spare-nyc3-1": ready(11, 1, "acct-a"), "ws-big": {Lifecycle: "HIBERNATED", Generation: 1, SnapshotID: "77"}},
			want:      []brief{{Kind: Wake, Workspace: "ws-big", Account: "acct-b", Droplet: "genesis-ws-big-2"}},
		},
		{
			name:     "a spare not yet healthy is not taken",
			spares:   []schema.Spare{{Region: "nyc3", Count: 1, Tiers: enterprise}},
			tenants:  []caseTenant{{ID: "ws-big", State: "running", Region: "nyc3", Tier: "enterprise"}},
			droplets: []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small)},
			status:   map[string]Status{"spare-nyc3-1": {Lifecycle: "CONFIGURING", DropletID: 11, Generation: 1}},
			want:     []brief{{Kind: Create, Workspace: "ws-big", Account: "acct-b", Droplet: "genesis-ws-big-1"}},
		},
		{
			name:     "a spare of another size is not taken",
			spares:   []schema.Spare{{Region: "nyc3", Count: 1, Tiers: enterprise}},
			tenants:  []caseTenant{{ID: "ws-big", State: "running", Region: "nyc3", Tier: "enterprise", Size: "s-1vcpu-2gb"}},
			droplets: []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small)},
			status:   map[string]Status{"spare-nyc3-1": ready(11, 1, "acct-a")},
			want:     []brief{{Kind: Create, Workspace: "ws-big", Account: "acct-b", Droplet: "genesis-ws-big-1"}},
		},
		{
			name:   "surplus spares are destroyed when the count is lowered",
			spares: []schema.Spare{{Region: "nyc3", Count: 1, Tiers: enterprise}},
			droplets: []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small), spareDroplet(12, "nyc3", 2, 1, "acct-b", small),
				spareDroplet(13, "nyc3", 3, 1, "acct-a", small)},
			status: map[string]Status{"spare-nyc3-1": ready(11, 1, "acct-a"), "spare-nyc3-2": ready(12, 1, "acct-b"), "spare-nyc3-3": ready(13, 1, "acct-a")},
			want: []brief{
				{Kind: DestroySpare, Workspace: "spare-nyc3-2", Account: "acct-b", Droplet: "genesis-spare-nyc3-2-1", DropletID: 12},
				{Kind: DestroySpare, Workspace: "spare-nyc3-3", Account: "acct-a", Droplet: "genesis-spare-nyc3-3-1", DropletID: 13},
			},
		},
		{
			name: "spares of a region no longer declared are destroyed, never orphans; they count against maxDestroyPerRun",
			droplets: []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small), spareDroplet(12, "nyc3", 2, 1, "acct-b", small),
				spareDroplet(13, "fra1", 1, 1, "acct-c", small)},
			status: map[string]Status{"spare-nyc3-1": ready(11, 1, "acct-a")},
			withheld: []brief{
				{Kind: DestroySpare, Workspace: "spare-fra1-1", Account: "acct-c", Droplet: "genesis-spare-fra1-1-1", DropletID: 13},
				{Kind: DestroySpare, Workspace: "spare-nyc3-1", Account: "acct-a", Droplet: "genesis-spare-nyc3-1-1", DropletID: 11},
				{Kind: DestroySpare, Workspace: "spare-nyc3-2", Account: "acct-b", Droplet: "genesis-spare-nyc3-2-1", DropletID: 12},
			},
			refused: []string{"max_destroy"},
		},
		{
			name:       "nothing destroyed from an incomplete view",
			spares:     []schema.Spare{{Region: "nyc3", Count: 0, Tiers: enterprise}},
			droplets:   []Droplet{spareDroplet(11, "nyc3", 1, 1, "acct-a", small)},
			status:     map[string]Status{"spare-nyc3-1": ready(11, 1, "acct-a")},
			incomplete: map[string]string{"acct-b": "list droplets: 503"},
			withheld:   []brief{{Kind: DestroySpare, Workspace: "spare-nyc3-1", Account: "acct-a", Droplet: "genesis-spare-nyc3-1-1", DropletID: 11}},
		},
		{
			name:     "a spare of the wrong size is replaced",
			spares:   []schema.Spare{{Region: "fra1", Count: 1, Size: "s-1vcpu-2gb", Tiers: enterprise}},
			droplets: []Droplet{spareDroplet(13, "fra1", 1, 1, "acct-c", small)},
			status:   map[string]Status{"spare-fra1-1": ready(13, 1, "acct-c")},
			want: []brief{
				{Kind: DestroySpare, Workspace: "spare-fra1-1", Account: "acct-c", Droplet: "genesis-spare-fra1-1-1", DropletID: 13},
				{Kind: CreateSpare, Workspace: "spare-fra1-1", Account: "acct-c", Droplet: "genesis-spare-fra1-1-2"},
			},
		},
		{
			name:       "spares count against capacity",
			spares:     []schema.Spare{{Region: "fra1", Count: 3, Tiers: enterprise}},
			want:       []brief{{Kind: CreateSpare, Workspace: "spare-fra1-1", Account: "acct-c", Droplet: "genesis-spare-fra1-1-1"}, {Kind: CreateSpare, Workspace: "spare-fra1-2", Account: "acct-c", Droplet: "genesis-spare-fra1-2-1"}},
			noCapacity: []string{"spare-fra1-3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := spareFleet(t, tt.spares...)
			d := Desired{Fleet: f, Tenants: map[string]*schema.Tenant{}, Hashes: map[string]string{}}
			for _, ct := range tt.tenants {
				d.Tenants[ct.ID] = tenant(t, f, ct)
			}
			status := tt.status
			if status == nil {
				status = map[string]Status{}
			}
			o := Observed{Droplets: tt.droplets, Snapshots: tt.snapshots, Status: status, InFlight: tt.inFlight, Incomplete: tt.incomplete}
			p := Compute(d, o, now, Options{})
			if diff := cmp.Diff(tt.want, briefs(p.Actions)); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.withheld, briefs(p.Withheld)); diff != "" {
				t.Errorf("withheld (-want +got):\n%s", diff)
			}
			var refused []string
			for _, r := range p.Refused {
				refused = append(refused, r.Reason)
			}
			if diff := cmp.Diff(tt.refused, refused); diff != "" {
				t.Errorf("refused (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.noCapacity, p.NoCapacity); diff != "" {
				t.Errorf("no capacity (-want +got):\n%s", diff)
			}
			if len(p.Orphans) != 0 {
				t.Errorf("orphans %v: a spare is never an orphan", p.Orphans)
			}
		})
	}
}

// applySpare does to the world what the executor does for a spare action
// that succeeds (and defers the rest to world.apply).
func (w *world) applySpare(t *testing.T, a Action, d Desired, now time.Time) {
	switch a.Kind {
	case CreateSpare:
		w.nextID++
		w.o.Droplets = append(w.o.Droplets, Droplet{ID: w.nextID, Name: a.Droplet, Account: a.Account, Region: a.Region, Size: a.Size, Status: "active", Workspace: a.Workspace, Created: now})
		w.o.Status[a.Workspace] = Status{Lifecycle: ReadyLifecycle, Account: a.Account, DropletID: w.nextID, Generation: a.Gen}
	case AssignSpare:
		for i := range w.o.Droplets {
			if w.o.Droplets[i].ID == a.DropletID {
				w.o.Droplets[i].Workspace, w.o.Droplets[i].Name = a.Workspace, a.Droplet
			}
		}
		st := w.o.Status[a.Workspace]
		st.DropletID, st.Generation, st.Account, st.Lifecycle = a.DropletID, a.Gen, a.Account, "CONFIGURING"
		st.TenantHash, st.LastActivity = d.Hashes[a.Workspace], now
		w.o.Status[a.Workspace] = st
		if sp := w.o.Status[a.Spare]; sp.DropletID == a.DropletID {
			sp.DropletID, sp.Lifecycle = 0, "PENDING"
			w.o.Status[a.Spare] = sp
		}
	case DestroySpare:
		var keep []Droplet
		for _, dr := range w.o.Droplets {
			if dr.ID != a.DropletID {
				keep = append(keep, dr)
			}
		}
		w.o.Droplets = keep
		if w.o.Status[a.Workspace].DropletID == a.DropletID {
			delete(w.o.Status, a.Workspace)
		}
	default:
		w.apply(t, a, d, now)
	}
}

// TestSparesConverge: in random worlds with random spares, applying a plan
// and planning again leaves nothing to do, a spare is never an orphan, and
// a tenant with a snapshot is never given a spare.
func TestSparesConverge(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	regions := []string{"nyc1", "nyc3", "fra1"}
	accountsFor := map[string][]string{"nyc1": {"acct-a"}, "nyc3": {"acct-a", "acct-b"}, "fra1": {"acct-c"}}
	sizes := []string{"s-1vcpu-1gb", "s-1vcpu-2gb"}
	tiers := []schema.Tier{schema.TierStarter, schema.TierPro, schema.TierEnterprise}
	assigned := 0
	for seed := range uint64(500) {
		r := rand.New(rand.NewPCG(seed, 11))
		var spares []schema.Spare
		for _, region := range regions {
			if r.IntN(2) == 0 {
				spares = append(spares, schema.Spare{Region: region, Count: r.IntN(3), Size: sizes[r.IntN(2)], Tiers: []schema.Tier{tiers[r.IntN(3)], schema.TierPro}})
			}
		}
		f := spareFleet(t, spares...)
		for i := range f.Spec.Accounts {
			f.Spec.Accounts[i].MaxDroplets = 1000
		}
		d, w := randomWorld(t, r, f, now)
		for range r.IntN(5) {
			region := regions[r.IntN(3)]
			slot, gen := 1+r.IntN(3), 1+r.IntN(3)
			w.nextID++
			acct := accountsFor[region][r.IntN(len(accountsFor[region]))]
			dr := spareDroplet(w.nextID, region, slot, gen, acct, sizes[r.IntN(2)])
			w.o.Droplets = append(w.o.Droplets, dr)
			if r.IntN(3) > 0 {
				lc := ReadyLifecycle
				if r.IntN(3) == 0 {
					lc = "CONFIGURING"
				}
				w.o.Status[dr.Workspace] = Status{Lifecycle: lc, Account: acct, DropletID: dr.ID, Generation: gen}
			}
		}
		p := Compute(d, w.o, now, Options{AllowMassChange: true})
		if len(p.Orphans) > 0 {
			for _, o := range p.Orphans {
				if schema.IsSpareWorkspace(o.Workspace) {
					t.Fatalf("seed %d: spare reported as orphan: %v", seed, o)
				}
			}
		}
		for _, a := range p.Actions {
			if a.Kind == AssignSpare {
				assigned++
				for _, s := range w.o.Snapshots {
					if s.Workspace == a.Workspace {
						t.Fatalf("seed %d: %s has snapshot %s but was given a spare", seed, a.Workspace, s.Name)
					}
				}
			}
			w.applySpare(t, a, d, now)
		}
		again := Compute(d, w.o, now, Options{AllowMassChange: true})
		if !again.Empty() {
			t.Fatalf("seed %d: after applying %v the plan is still %v", seed, p.Actions, again.Actions)
		}
	}
	if assigned == 0 {
		t.Fatal("no world assigned a spare: the property tested nothing about assignment")
	}
	t.Logf("%d assignments checked", assigned)
}

func TestSpareTags(t *testing.T) {
	want := []string{"genesis", "genesis:ws:spare-nyc3-2", "genesis:account:acct-a", "genesis:spare", "genesis:spare:nyc3"}
	if diff := cmp.Diff(want, Tags("spare-nyc3-2", "acct-a", "")); diff != "" {
		t.Errorf("Tags (-want +got):\n%s", diff)
	}
	// Part way through an assignment a droplet carries both workspace
	// tags: the tenant's wins.
	for _, tags := range [][]string{
		{"genesis", "genesis:ws:spare-nyc3-2", "genesis:ws:ws-a"},
		{"genesis", "genesis:ws:ws-a", "genesis:ws:spare-nyc3-2"},
	} {
		if got := WorkspaceFromTags(tags); got != "ws-a" {
			t.Errorf("WorkspaceFromTags(%v) = %q, want ws-a", tags, got)
		}
	}
	if got := WorkspaceFromTags(want); got != "spare-nyc3-2" {
		t.Errorf("WorkspaceFromTags(spare) = %q", got)
	}
}
