package plan

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// TestKindsTable: every kind has a complete, consistent row, and the table
// holds nothing else.
func TestKindsTable(t *testing.T) {
	all := Kinds()
	if len(all) != len(kinds) {
		t.Errorf("Kinds() lists %d kinds, the table has %d rows", len(all), len(kinds))
	}
	seen := map[Kind]bool{}
	for _, k := range all {
		t.Run(string(k), func(t *testing.T) {
			if seen[k] {
				t.Fatalf("%s listed twice", k)
			}
			seen[k] = true
			if !k.Valid() {
				t.Fatalf("%s has no row", k)
			}
			i := k.Info()
			if i.Priority < 0 || i.Priority > unknownKind.Priority {
				t.Errorf("priority %d out of 0..%d", i.Priority, unknownKind.Priority)
			}
			if i.Priority != k.Priority() || i.Destructive != k.Destructive() {
				t.Errorf("Priority/Destructive do not read the row")
			}
			if i.NeedsUserData != i.CreatesDroplet {
				t.Errorf("NeedsUserData %v, CreatesDroplet %v: every droplet made boots from cloud-init, and only those", i.NeedsUserData, i.CreatesDroplet)
			}
			if i.CreatesDroplet && !i.RenderAfter && k != CreateSpare {
				t.Errorf("creates a droplet but renders no manifest for it after")
			}
			if i.RenderAfter && !i.Renders {
				t.Errorf("RenderAfter without Renders: the renderer would ignore the call")
			}
			if i.Limit != "" && !i.Destructive {
				t.Errorf("counts against %s but is not destructive", i.Limit)
			}
			if i.Limit != "" && i.Limit != LimitDestroy && i.Limit != LimitHibernate {
				t.Errorf("limit %q is no safety limit", i.Limit)
			}
			if i.APICalls == 0 && (i.CreatesDroplet || i.Destructive || i.StartState != "") {
				t.Errorf("no DigitalOcean calls, yet it creates, destroys or moves the lifecycle: %+v", i)
			}
			if i.APICalls < 0 {
				t.Errorf("APICalls %d", i.APICalls)
			}
			if i.StartState != "" && !i.StartState.Valid() {
				t.Errorf("start state %q is not a stored state", i.StartState)
			}
			if got, want := i.StartState, lifecycle.Start(lifecycle.Action(k)); got != want {
				t.Errorf("start state %q, lifecycle.Start says %q", got, want)
			}
			if i.CreatesDroplet && !i.StartState.In(append(lifecycle.AwaitingDroplet(), lifecycle.Hibernating)) {
				t.Errorf("creates a droplet from start state %q, which does not wait for one", i.StartState)
			}
			switch i.Towards {
			case "", schema.StateRunning, schema.StateHibernated, schema.StateAbsent:
			default:
				t.Errorf("towards %q is not a declared state", i.Towards)
			}
			if i.CreatesDroplet && i.Towards != schema.StateRunning {
				t.Errorf("creates a droplet towards %q", i.Towards)
			}
		})
	}
	if Kind("teleport").Valid() || Kind("teleport").Info() != unknownKind {
		t.Errorf("an unknown kind has a row")
	}
}

// TestKindsAgree pins which kinds have each property, as the executor, the
// journal and the renderer read them. Before the table, these lists were
// switches that disagreed: resize creates a droplet, yet it was neither
// rolled back nor rendered after, and the renderer ignored it.
func TestKindsAgree(t *testing.T) {
	with := func(p func(KindInfo) bool) []Kind {
		var ks []Kind
		for _, k := range Kinds() {
			if p(k.Info()) {
				ks = append(ks, k)
			}
		}
		return ks
	}
	for _, c := range []struct {
		name string
		got  []Kind
		want []Kind
	}{
		{"creates a droplet (user data, rollback)", with(func(i KindInfo) bool { return i.CreatesDroplet }),
			[]Kind{Wake, Create, Resize, Rebuild, CreateSpare}},
		{"rendered after", with(func(i KindInfo) bool { return i.RenderAfter }),
			[]Kind{Wake, Create, Adopt, Resize, Rebuild}},
		{"rendered", with(func(i KindInfo) bool { return i.Renders }),
			[]Kind{Wake, Create, Adopt, Resize, UpdateManifest, Rebuild, Hibernate, AssignSpare}},
		{"destructive", with(func(i KindInfo) bool { return i.Destructive }),
			[]Kind{Resize, Hibernate, Destroy, DeleteSnapshot, DestroySpare, Retire}},
		{"no DigitalOcean call", with(func(i KindInfo) bool { return i.APICalls == 0 }),
			[]Kind{Adopt, UpdateManifest}},
		{"counts as a destroy", with(func(i KindInfo) bool { return i.Limit == LimitDestroy }),
			[]Kind{Destroy, DestroySpare}},
		{"counts as a hibernation", with(func(i KindInfo) bool { return i.Limit == LimitHibernate }),
			[]Kind{Hibernate}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if diff := cmp.Diff(c.want, c.got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	// The scheduler's order: wake > create > reboot > hibernate > cleanup.
	order := slices.Clone(Kinds())
	slices.SortStableFunc(order, func(a, b Kind) int { return a.Priority() - b.Priority() })
	if diff := cmp.Diff([]Kind{Wake, Create, Adopt, AssignSpare, Resize, UpdateManifest, PointName, Reboot, PowerCycle, Rebuild, SnapshotNow, Hibernate,
		Destroy, DestroySpare, Retire, DeleteSnapshot, CreateSpare}, order); diff != "" {
		t.Errorf("priority order (-want +got):\n%s", diff)
	}
}

// TestRollBack: a failed action that made a droplet destroys it again,
// resize included (before the table it left the half-made droplet of a
// failed resize behind); a droplet the action started from is never
// destroyed, and nothing is when no droplet was made.
func TestRollBack(t *testing.T) {
	for _, c := range []struct {
		a       Action
		droplet int
		want    bool
	}{
		{Action{Kind: Create}, 7, true},
		{Action{Kind: Create}, 0, false},
		{Action{Kind: Wake}, 7, true},
		{Action{Kind: Rebuild}, 7, true},
		{Action{Kind: CreateSpare}, 7, true},
		{Action{Kind: Resize, DropletID: 3}, 7, true},  // the new generation's droplet
		{Action{Kind: Resize, DropletID: 3}, 3, false}, // failed before its snapshot: the tenant's droplet
		{Action{Kind: Hibernate, DropletID: 3}, 3, false},
		{Action{Kind: Destroy, DropletID: 3}, 3, false},
		{Action{Kind: AssignSpare, DropletID: 3}, 3, false},
		{Action{Kind: Reboot, DropletID: 3}, 3, false},
		{Action{Kind: Adopt, DropletID: 3}, 3, false},
	} {
		if got := c.a.RollBack(c.droplet); got != c.want {
			t.Errorf("%s (droplet %d) RollBack(%d) = %v, want %v", c.a.Kind, c.a.DropletID, c.droplet, got, c.want)
		}
	}
}
