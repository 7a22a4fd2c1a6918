package plan

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

var update = flag.Bool("update", false, "rewrite the golden plans in testdata/*.golden.json")

// testCase is a testdata/<name>.yaml file: a desired and an observed world,
// written compactly.
type testCase struct {
	Now             time.Time             `yaml:"now"`
	AllowMassChange bool                  `yaml:"allowMassChange"`
	Tenants         []caseTenant          `yaml:"tenants"`
	Droplets        []Droplet             `yaml:"droplets"`
	Snapshots       []caseSnapshot        `yaml:"snapshots"`
	Status          map[string]caseStatus `yaml:"status"`
	InFlight        map[string]string     `yaml:"inFlight"`
	Incomplete      map[string]string     `yaml:"incomplete"`
}

type caseTenant struct {
	ID        string `yaml:"id"`
	State     string `yaml:"state"`
	Region    string `yaml:"region"`
	Size      string `yaml:"size"`
	Tier      string `yaml:"tier"`
	AfterIdle string `yaml:"afterIdle"`
	Hash      string `yaml:"hash"`
}

type caseSnapshot struct {
	ID        string    `yaml:"id"`
	Name      string    `yaml:"name"`
	Account   string    `yaml:"account"`
	Region    string    `yaml:"region"`
	Workspace string    `yaml:"workspace"`
	Created   time.Time `yaml:"created"`
	SizeGB    float64   `yaml:"sizeGB"`
}

type caseStatus struct {
	Lifecycle          string    `yaml:"lifecycle"`
	Account            string    `yaml:"account"`
	DropletID          int       `yaml:"dropletID"`
	Generation         int       `yaml:"generation"`
	SnapshotID         string    `yaml:"snapshotID"`
	HibernatedByPolicy bool      `yaml:"hibernatedByPolicy"`
	WakeRequested      bool      `yaml:"wakeRequested"`
	LastActivity       time.Time `yaml:"lastActivity"`
	IdleWarnedAt       time.Time `yaml:"idleWarnedAt"`
	TenantHash         string    `yaml:"tenantHash"`
	Replacing          int       `yaml:"replacing"`
	IP                 string    `yaml:"ip"`
	NameTarget         string    `yaml:"nameTarget"`
	ReservedIP         string    `yaml:"reservedIP"`
}

func testFleet(t testing.TB) *schema.Fleet {
	t.Helper()
	data, err := os.ReadFile("testdata/genesis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	f, errs := schema.DecodeFleet("genesis.yaml", data)
	if errs != nil {
		t.Fatal(errs)
	}
	return f
}

// tenant builds a tenant through the real decoder and checks it against
// the fleet, so cases cannot hold a tenant validation would refuse.
func tenant(t testing.TB, f *schema.Fleet, c caseTenant) *schema.Tenant {
	t.Helper()
	tier := c.Tier
	if tier == "" {
		tier = "pro"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: genesis.dev/v1\nkind: Tenant\nmetadata: {id: %s, name: %s, tier: %s}\nspec:\n  state: %s\n  droplet: {region: %s", c.ID, c.ID, tier, c.State, c.Region)
	if c.Size != "" {
		fmt.Fprintf(&b, ", size: %s", c.Size)
	}
	b.WriteString("}\n")
	if c.AfterIdle != "" {
		fmt.Fprintf(&b, "  hibernation: {afterIdle: %s}\n", c.AfterIdle)
	}
	file := "tenants/" + c.ID + ".yaml"
	tn, errs := schema.DecodeTenant(file, []byte(b.String()))
	if errs == nil {
		errs = tn.Check(file, schema.Context{Fleet: f})
	}
	if errs != nil {
		t.Fatalf("tenant %s: %v", c.ID, errs)
	}
	return tn
}

func loadCase(t *testing.T, path string) (Desired, Observed, time.Time, Options) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var c testCase
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	f := testFleet(t)
	d := Desired{Commit: "c0ffee", Fleet: f, Tenants: map[string]*schema.Tenant{}, Hashes: map[string]string{}}
	for _, ct := range c.Tenants {
		d.Tenants[ct.ID] = tenant(t, f, ct)
		d.Hashes[ct.ID] = ct.Hash
	}
	o := Observed{Droplets: c.Droplets, Status: map[string]Status{}, InFlight: c.InFlight, Incomplete: c.Incomplete}
	for _, s := range c.Snapshots {
		o.Snapshots = append(o.Snapshots, Snapshot{ID: s.ID, Name: s.Name, Account: s.Account, Region: s.Region, Workspace: s.Workspace, SizeGB: s.SizeGB, Created: s.Created})
	}
	for id, s := range c.Status {
		o.Status[id] = Status(s)
	}
	return d, o, c.Now, Options{AllowMassChange: c.AllowMassChange}
}

// TestGolden computes the plan of each testdata case and compares it with
// testdata/<case>.golden.json (regenerate with -update, then review).
func TestGolden(t *testing.T) {
	goldens := map[string]bool{}
	for _, g := range testkit.Glob(t, "testdata/*.golden.json") {
		goldens[strings.TrimSuffix(filepath.Base(g), ".golden.json")] = true
	}
	ran := 0
	for _, path := range testkit.Glob(t, "testdata/*.yaml") {
		name := strings.TrimSuffix(filepath.Base(path), ".yaml")
		if name == "genesis" {
			continue
		}
		ran++
		delete(goldens, name)
		t.Run(name, func(t *testing.T) {
			d, o, now, opt := loadCase(t, path)
			got, err := json.MarshalIndent(Compute(d, o, now, opt), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := filepath.Join("testdata", name+".golden.json")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("plan (-want +got):\n%s", diff)
			}
			// Pure: the same inputs give the same plan.
			again, _ := json.MarshalIndent(Compute(d, o, now, opt), "", "  ")
			if !bytes.Equal(append(again, '\n'), got) {
				t.Errorf("a second Compute on the same inputs gave another plan")
			}
		})
	}
	if ran == 0 {
		t.Fatal("no cases in testdata besides genesis.yaml")
	}
	if len(goldens) > 0 {
		t.Errorf("golden plans without a case in testdata: %v", slices.Sorted(maps.Keys(goldens)))
	}
}

// world is a simulated DigitalOcean plus fleet_status: apply does to it what
// the executor would do for an action that succeeds.
type world struct {
	o      Observed
	nextID int
	hashes map[string]string
}

func (w *world) apply(t *testing.T, a Action, d Desired, now time.Time) {
	st := w.o.Status[a.Workspace]
	removeDroplet := func(id int) {
		var keep []Droplet
		for _, dr := range w.o.Droplets {
			if dr.ID != id {
				keep = append(keep, dr)
			}
		}
		w.o.Droplets = keep
	}
	snapshot := func(a Action) string {
		w.nextID++
		id := fmt.Sprintf("snap-%d", w.nextID)
		gen := ParseGeneration(a.Workspace, a.Droplet)
		w.o.Snapshots = append(w.o.Snapshots, Snapshot{ID: id, Name: SnapshotName(a.Workspace, gen), Account: a.Account, Region: a.Region, Workspace: a.Workspace, Created: now})
		return id
	}
	create := func(a Action) {
		w.nextID++
		w.o.Droplets = append(w.o.Droplets, Droplet{ID: w.nextID, Name: a.Droplet, Account: a.Account, Region: a.Region, Size: a.Size, Status: "active", Workspace: a.Workspace, Created: now})
		st.DropletID, st.Generation, st.Account = w.nextID, a.Gen, a.Account
		st.HibernatedByPolicy, st.WakeRequested, st.Lifecycle = false, false, "ACTIVE_HEALTHY"
		st.TenantHash = d.Hashes[a.Workspace]
		st.LastActivity = now
	}
	switch a.Kind {
	case Create, Wake:
		create(a)
	case Adopt:
		st.DropletID, st.Generation, st.Account, st.TenantHash = a.DropletID, a.Gen, a.Account, d.Hashes[a.Workspace]
	case UpdateManifest:
		st.TenantHash = d.Hashes[a.Workspace]
	case Resize:
		st.SnapshotID = snapshot(a)
		removeDroplet(a.DropletID)
		na := a
		na.Droplet = DropletName(a.Workspace, a.Gen)
		create(na)
	case Hibernate:
		st.SnapshotID = snapshot(a)
		removeDroplet(a.DropletID)
		st.DropletID, st.Lifecycle = 0, "HIBERNATED"
		st.HibernatedByPolicy = d.Tenants[a.Workspace].Spec.State == schema.StateRunning
		st.WakeRequested = false
	case Destroy:
		removeDroplet(a.DropletID)
		if st.DropletID == a.DropletID {
			st.DropletID, st.Lifecycle = 0, "DESTROYED"
		}
	case DeleteSnapshot:
		var keep []Snapshot
		for _, s := range w.o.Snapshots {
			if s.ID != a.Snapshot {
				keep = append(keep, s)
			}
		}
		w.o.Snapshots = keep
	default:
		t.Fatalf("unknown action %v", a)
	}
	w.o.Status[a.Workspace] = st
}

// randomWorld makes a desired and observed state that a fleet could really
// be in: tenants in every state, droplets we know and droplets we don't,
// orphans, old and new snapshots, stale hashes, idle tenants.
func randomWorld(t *testing.T, r *rand.Rand, f *schema.Fleet, now time.Time) (Desired, *world) {
	d := Desired{Commit: "c", Fleet: f, Tenants: map[string]*schema.Tenant{}, Hashes: map[string]string{}}
	w := &world{o: Observed{Status: map[string]Status{}}, nextID: 1000}
	regions := []string{"nyc1", "nyc3", "fra1"}
	accountsFor := map[string][]string{"nyc1": {"acct-a"}, "nyc3": {"acct-a", "acct-b"}, "fra1": {"acct-c"}}
	sizes := []string{"s-1vcpu-1gb", "s-1vcpu-2gb"}
	states := []string{"running", "running", "hibernated", "absent"}
	n := 1 + r.IntN(10)
	for i := range n {
		id := fmt.Sprintf("ws-%02d", i)
		ct := caseTenant{ID: id, State: states[r.IntN(len(states))], Region: regions[r.IntN(3)], Size: sizes[r.IntN(2)], Hash: fmt.Sprintf("h%d", r.IntN(2))}
		if r.IntN(3) == 0 {
			ct.AfterIdle = "72h"
		}
		d.Tenants[id] = tenant(t, f, ct)
		d.Hashes[id] = ct.Hash
		st := Status{Generation: r.IntN(3), TenantHash: fmt.Sprintf("h%d", r.IntN(2))}
		for range r.IntN(3) { // 0-2 droplets
			w.nextID++
			gen := 1 + r.IntN(4)
			acct := accountsFor[ct.Region][r.IntN(len(accountsFor[ct.Region]))]
			w.o.Droplets = append(w.o.Droplets, Droplet{ID: w.nextID, Name: DropletName(id, gen), Account: acct, Region: ct.Region, Size: sizes[r.IntN(2)], Workspace: id})
			if r.IntN(2) == 0 {
				st.DropletID = w.nextID
			}
		}
		for range r.IntN(3) {
			w.nextID++
			w.o.Snapshots = append(w.o.Snapshots, Snapshot{ID: fmt.Sprint(w.nextID), Name: SnapshotName(id, 1+r.IntN(4)), Account: "acct-a", Region: ct.Region, Workspace: id,
				Created: now.Add(-time.Duration(r.IntN(90*24)) * time.Hour)})
		}
		if r.IntN(3) == 0 {
			st.LastActivity = now.Add(-time.Duration(r.IntN(200)) * time.Hour)
		}
		st.HibernatedByPolicy = r.IntN(4) == 0
		st.WakeRequested = r.IntN(4) == 0
		w.o.Status[id] = st
	}
	for range r.IntN(3) { // orphans
		w.nextID++
		w.o.Droplets = append(w.o.Droplets, Droplet{ID: w.nextID, Name: "genesis-gone-1", Account: "acct-b", Region: "nyc3", Size: "s-1vcpu-1gb", Workspace: "ws-gone"})
	}
	return d, w
}

// TestPlanConverges is the planner's central property: apply a plan to a
// simulated world and plan again, and there is nothing left to do.
func TestPlanConverges(t *testing.T) {
	f := testFleet(t)
	for i := range f.Spec.Accounts {
		f.Spec.Accounts[i].MaxDroplets = 1000 // capacity is its own test
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for seed := range uint64(500) {
		r := rand.New(rand.NewPCG(seed, 42))
		d, w := randomWorld(t, r, f, now)
		p := Compute(d, w.o, now, Options{AllowMassChange: true})
		for _, a := range p.Actions {
			w.apply(t, a, d, now)
		}
		again := Compute(d, w.o, now, Options{AllowMassChange: true})
		if !again.Empty() {
			t.Fatalf("seed %d: after applying %v the plan is still %v", seed, p.Actions, again.Actions)
		}
		// Orphans are reported, never acted on: every orphan droplet is
		// still there.
		for _, orphan := range p.Orphans {
			if orphan.DropletID == 0 {
				continue
			}
			found := false
			for _, dr := range w.o.Droplets {
				found = found || dr.ID == orphan.DropletID
			}
			if !found {
				t.Fatalf("seed %d: orphan droplet %s was removed", seed, orphan.Droplet)
			}
		}
	}
}

// TestNoDestructionFromIncompleteView: whatever the world, a plan from an
// incomplete observation holds no destroy, hibernate, resize or snapshot
// deletion.
func TestNoDestructionFromIncompleteView(t *testing.T) {
	f := testFleet(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for seed := range uint64(500) {
		r := rand.New(rand.NewPCG(seed, 7))
		d, w := randomWorld(t, r, f, now)
		w.o.Incomplete = map[string]string{"acct-b": "list droplets: 503"}
		for _, allow := range []bool{false, true} {
			p := Compute(d, w.o, now, Options{AllowMassChange: allow})
			for _, a := range p.Actions {
				if a.Kind.Destructive() {
					t.Fatalf("seed %d: incomplete view planned %v", seed, a)
				}
			}
		}
	}
}

// TestOnlyAbsentDestroys: a droplet is destroyed only for a tenant that
// says state: absent, whatever else the world holds.
func TestOnlyAbsentDestroys(t *testing.T) {
	f := testFleet(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for seed := range uint64(500) {
		r := rand.New(rand.NewPCG(seed, 9))
		d, w := randomWorld(t, r, f, now)
		p := Compute(d, w.o, now, Options{AllowMassChange: true})
		for _, a := range p.Actions {
			if a.Kind == Destroy && d.Tenants[a.Workspace].Spec.State != schema.StateAbsent {
				t.Fatalf("seed %d: destroy of %s, whose state is %s", seed, a.Workspace, d.Tenants[a.Workspace].Spec.State)
			}
		}
	}
}

func TestNames(t *testing.T) {
	if got := DropletName("ws-a-b", 12); got != "genesis-ws-a-b-12" {
		t.Errorf("DropletName = %q", got)
	}
	// An operator's snapshot is never the name a hibernation looks for.
	at := time.Date(2026, 12, 7, 5, 40, 1, 0, time.FixedZone("x", 3600))
	if got := ManualSnapshotName("ws-a", 3, at); got != "genesis-ws-a-3-snap-20261207044001" || got == SnapshotName("ws-a", 3) {
		t.Errorf("ManualSnapshotName = %q", got)
	}
	tests := []struct {
		ws, name string
		want     int
	}{
		{"ws-a", "genesis-ws-a-3", 3},
		{"ws-a", "genesis-ws-a-3-snap", 3},
		{"ws-a", ManualSnapshotName("ws-a", 3, time.Date(2026, 12, 7, 5, 40, 1, 0, time.UTC)), 3},
		{"ws-a", "genesis-ws-a-3-snap-2026", 0},
		{"ws-a", "genesis-ws-a-3-snap-20261307054001", 0},
		{"ws-a", "genesis-ws-a-b-3", 0},
		{"ws-a", "genesis-ws-a-0", 0},
		{"ws-a", "other", 0},
	}
	for _, tt := range tests {
		if got := ParseGeneration(tt.ws, tt.name); got != tt.want {
			t.Errorf("ParseGeneration(%q, %q) = %d, want %d", tt.ws, tt.name, got, tt.want)
		}
	}
	if diff := cmp.Diff([]string{"genesis", "genesis:ws:ws-a", "genesis:account:acct-a", "genesis:tier:pro"}, Tags("ws-a", "acct-a", "pro")); diff != "" {
		t.Errorf("Tags (-want +got):\n%s", diff)
	}
	if got := WorkspaceFromTags(Tags("ws-a", "acct-a", "pro")); got != "ws-a" {
		t.Errorf("WorkspaceFromTags = %q", got)
	}
}

// TestScopedPlanMatchesFull: planning one tenant alone decides what the
// full plan decides for it (the account aside, which depends on what the
// full plan placed before it).
func TestScopedPlanMatchesFull(t *testing.T) {
	f := testFleet(t)
	for i := range f.Spec.Accounts {
		f.Spec.Accounts[i].MaxDroplets = 1000
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for seed := range uint64(200) {
		r := rand.New(rand.NewPCG(seed, 3))
		d, w := randomWorld(t, r, f, now)
		full := Compute(d, w.o, now, Options{AllowMassChange: true})
		for id := range d.Tenants {
			var want []Action
			for _, a := range full.Actions {
				if a.Workspace == id {
					want = append(want, a)
				}
			}
			got := Compute(d, w.o, now, Options{AllowMassChange: true, Scope: []string{id}}).Actions
			ignore := cmp.Transformer("noAccount", func(a Action) Action {
				if a.Kind == Create {
					a.Account, a.Alternates = "", nil
				}
				return a
			})
			if diff := cmp.Diff(want, got, ignore); diff != "" {
				t.Fatalf("seed %d tenant %s: scoped plan differs (-full +scoped):\n%s", seed, id, diff)
			}
		}
	}
}
