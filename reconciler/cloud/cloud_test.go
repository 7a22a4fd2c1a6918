package cloud

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/plan"
)

// seed creates n droplets genesis-<prefix><i>-1 in account name, each
// tagged for its workspace as the reconciler tags them.
func (e *env) seed(name, prefix string, n int) {
	e.t.Helper()
	c := e.client(name)
	for i := range n {
		ws := fmt.Sprintf("%s%d", prefix, i)
		_, _, err := c.Droplets.Create(context.Background(), &godo.DropletCreateRequest{
			Name: plan.DropletName(ws, 1), Region: "nyc3", Size: "s-1vcpu-1gb",
			Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}, Tags: plan.Tags(ws, name, "starter"),
		})
		if err != nil {
			e.t.Fatalf("seed %s: %v", ws, err)
		}
	}
}

func TestObservePaginatesAcrossAccounts(t *testing.T) {
	e := newEnv(t, envOpts{
		accounts: []dosim.Account{{Name: "a", Token: "tok-a", DropletLimit: 1000}, {Name: "b", Token: "tok-b", DropletLimit: 1000}},
		sim:      unlimitedSim(),
	})
	e.seed("a", "wa", 300)
	e.seed("b", "wb", 150)
	// Not ours: no genesis tag, and a snapshot not named genesis-*.
	ctx := context.Background()
	ca := e.client("a")
	other, _, err := ca.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "web-1", Region: "nyc3", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.DropletActions.PowerOff(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.DropletActions.Snapshot(ctx, other.ID, "manual"); err != nil {
		t.Fatal(err)
	}
	ds, _, err := ca.Droplets.ListByName(ctx, plan.DropletName("wa7", 1), nil)
	if err != nil || len(ds) != 1 {
		t.Fatalf("find wa7: %v %d", err, len(ds))
	}
	if _, _, err := ca.DropletActions.PowerOff(ctx, ds[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.DropletActions.Snapshot(ctx, ds[0].ID, plan.SnapshotName("wa7", 1)); err != nil {
		t.Fatal(err)
	}

	obs := e.pool.Observe(ctx)
	if len(obs.Incomplete) != 0 {
		t.Fatalf("Incomplete = %v, want none", obs.Incomplete)
	}
	per := map[string]int{}
	ids := map[int]bool{}
	for _, d := range obs.Droplets {
		per[d.Account]++
		if ids[d.ID] {
			t.Errorf("droplet %d listed twice", d.ID)
		}
		ids[d.ID] = true
		if want := plan.DropletName(d.Workspace, 1); d.Name != want {
			t.Errorf("droplet %d: workspace %q does not match name %q", d.ID, d.Workspace, d.Name)
		}
		if d.Region != "nyc3" || d.Size != "s-1vcpu-1gb" || d.Created.IsZero() || d.Status == "" {
			t.Errorf("droplet %+v: missing region, size, status or created", d)
		}
	}
	if per["a"] != 300 || per["b"] != 150 {
		t.Errorf("droplets per account = %v, want a:300 b:150", per)
	}
	// The listing reads only some of a droplet's fields (listedDroplet):
	// each is what godo's own decoding of the same droplets gives.
	byID := map[int]godo.Droplet{}
	for opt := (&godo.ListOptions{Page: 1, PerPage: 200}); ; opt.Page++ {
		ds, resp, err := ca.Droplets.ListByTag(ctx, "genesis", opt)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range ds {
			byID[d.ID] = d
		}
		if resp.Links == nil || resp.Links.IsLastPage() {
			break
		}
	}
	for _, d := range obs.Droplets {
		if d.Account != "a" {
			continue
		}
		g, ok := byID[d.ID]
		if !ok || g.Name != d.Name || g.Status != d.Status || g.SizeSlug != d.Size || g.Region == nil || g.Region.Slug != d.Region ||
			plan.WorkspaceFromTags(g.Tags) != d.Workspace || !parseTime(g.Created).Equal(d.Created) {
			t.Errorf("observed %+v, godo lists %+v", d, g)
		}
	}
	if len(byID) != 300 {
		t.Errorf("godo lists %d droplets tagged genesis in a, want 300", len(byID))
	}
	if len(obs.Snapshots) != 1 {
		t.Fatalf("snapshots = %+v, want only genesis-wa7-1-snap", obs.Snapshots)
	}
	if s := obs.Snapshots[0]; s.Workspace != "wa7" || s.Account != "a" || s.Name != "genesis-wa7-1-snap" || s.Region != "nyc3" {
		t.Errorf("snapshot = %+v", s)
	}
	// 300 droplets at 200 a page are two pages, 150 one.
	if got := e.counter("genesis_do_requests_total", map[string]string{"account": "a", "endpoint": "droplets_list"}); got != 2 {
		t.Errorf("droplets_list requests for a = %v, want 2", got)
	}
	if got := e.counter("genesis_do_requests_total", map[string]string{"account": "b", "endpoint": "droplets_list"}); got != 1 {
		t.Errorf("droplets_list requests for b = %v, want 1", got)
	}
}

func TestObserveFaultMidPaginationMarksAccountIncomplete(t *testing.T) {
	e := newEnv(t, envOpts{
		accounts: []dosim.Account{{Name: "a", Token: "tok-a", DropletLimit: 1000}, {Name: "b", Token: "tok-b", DropletLimit: 1000}},
		sim:      unlimitedSim(),
		limits:   Limits{MaxAttempts: 3},
	})
	e.seed("a", "wa", 250)
	e.seed("b", "wb", 250)
	// Account a: page 1 is served cut in half, then every try at page 2
	// fails (more failures than the retries).
	if _, err := e.sim.InjectFault(dosim.Fault{Kind: dosim.FaultPartialList, Route: "GET /v2/droplets", Account: "a", OKPages: 1, Truncate: true, Count: 10, Status: 503}); err != nil {
		t.Fatal(err)
	}
	obs := e.pool.Observe(context.Background())
	if !obs.Partial("a") || !strings.Contains(obs.Incomplete["a"], "page 2") {
		t.Errorf("Incomplete = %v, want account a incomplete at page 2", obs.Incomplete)
	}
	if obs.Partial("b") {
		t.Errorf("account b incomplete: %v", obs.Incomplete["b"])
	}
	per := map[string]int{}
	for _, d := range obs.Droplets {
		per[d.Account]++
	}
	if per["a"] != 100 || per["b"] != 250 {
		t.Errorf("droplets per account = %v, want a:100 (the partial page, still returned) b:250", per)
	}
}

func TestCreateIsIdempotent(t *testing.T) {
	t.Run("twice", func(t *testing.T) {
		e := newEnv(t, envOpts{sim: unlimitedSim()})
		a := createAction("acme", "a")
		var st steps
		r1, err := e.pool.Execute(context.Background(), a, ExecOptions{UserData: "#cloud-config\n", Progress: st.add})
		if err != nil {
			t.Fatalf("first: %v", err)
		}
		if r1.Account != "a" || r1.DropletID == 0 || r1.IP == "" {
			t.Errorf("result = %+v, want account a, an id and an ip", r1)
		}
		r2, err := e.pool.Execute(context.Background(), a, ExecOptions{Progress: st.add})
		if err != nil {
			t.Fatalf("second: %v", err)
		}
		if !reflect.DeepEqual(r2, r1) {
			t.Errorf("second result = %+v, want %+v", r2, r1)
		}
		if got, want := st.list(), []string{StepCreated, StepActive, StepFound, StepActive}; !slices.Equal(got, want) {
			t.Errorf("steps = %v, want %v", got, want)
		}
		ds := e.droplets()["genesis-acme-1"]
		if len(ds) != 1 {
			t.Fatalf("droplets named genesis-acme-1: %d, want 1", len(ds))
		}
		tags := fmt.Sprint(ds[0]["tags"])
		for _, tag := range plan.Tags("acme", "a", "starter") {
			if !strings.Contains(tags, tag) {
				t.Errorf("tags %s lack %s", tags, tag)
			}
		}
	})
	t.Run("crash after the POST", func(t *testing.T) {
		e := newEnv(t, envOpts{sim: unlimitedSim(), limits: Limits{MaxAttempts: 2}})
		a := createAction("acme", "a")
		// Every poll of the new droplet fails: the first Execute gives up
		// after the droplet was made, as a crash would.
		if _, err := e.sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "GET /v2/droplets/*", Count: 100}); err != nil {
			t.Fatal(err)
		}
		_, err := e.pool.Execute(context.Background(), a, ExecOptions{})
		if !IsTransient(err) {
			t.Fatalf("first Execute: %v, want a transient error", err)
		}
		if n := len(e.droplets()["genesis-acme-1"]); n != 1 {
			t.Fatalf("after the crash: %d droplets, want 1", n)
		}
		e.sim.ClearFaults()
		var st steps
		r, err := e.pool.Execute(context.Background(), a, ExecOptions{Progress: st.add})
		if err != nil {
			t.Fatalf("second Execute: %v", err)
		}
		if got := st.list(); len(got) == 0 || got[0] != StepFound {
			t.Errorf("steps = %v, want found first", got)
		}
		if ds := e.droplets()["genesis-acme-1"]; len(ds) != 1 || num(ds[0]["id"]) != r.DropletID {
			t.Errorf("droplets = %v, want exactly droplet %d", ds, r.DropletID)
		}
	})
	t.Run("cancelled after created", func(t *testing.T) {
		e := newEnv(t, envOpts{sim: unlimitedSim()})
		a := createAction("acme", "a")
		ctx, cancel := context.WithCancel(context.Background())
		_, err := e.pool.Execute(ctx, a, ExecOptions{Progress: func(step string, _ Result) {
			if step == StepCreated {
				cancel()
			}
		}})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("first Execute: %v, want context.Canceled", err)
		}
		if _, err := e.pool.Execute(context.Background(), a, ExecOptions{}); err != nil {
			t.Fatalf("second Execute: %v", err)
		}
		if n := len(e.droplets()["genesis-acme-1"]); n != 1 {
			t.Errorf("%d droplets, want 1", n)
		}
	})
	t.Run("5xx on the POST is retried after a fresh look", func(t *testing.T) {
		e := newEnv(t, envOpts{sim: unlimitedSim()})
		if _, err := e.sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "POST /v2/droplets", Count: 2, Status: 502}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.pool.Execute(context.Background(), createAction("acme", "a"), ExecOptions{}); err != nil {
			t.Fatalf("Execute: %v", err)
		}
		if n := len(e.droplets()["genesis-acme-1"]); n != 1 {
			t.Errorf("%d droplets, want 1", n)
		}
		// Each POST was preceded by its own look: 3 lists, 3 POSTs.
		if got := e.counter("genesis_do_requests_total", map[string]string{"endpoint": "droplets_list"}); got != 3 {
			t.Errorf("lists = %v, want 3", got)
		}
	})
	t.Run("422 validation is terminal", func(t *testing.T) {
		e := newEnv(t, envOpts{sim: unlimitedSim()})
		a := createAction("acme", "a")
		a.Size = "no-such-size"
		_, err := e.pool.Execute(context.Background(), a, ExecOptions{})
		if !IsTerminal(err) || IsCapacity(err) {
			t.Fatalf("err = %v, want terminal (not capacity)", err)
		}
		if got := e.counter("genesis_do_requests_total", map[string]string{"endpoint": "droplet_create"}); got != 1 {
			t.Errorf("creates = %v, want 1 (no retry)", got)
		}
	})
}

func TestCapacityErrorUsesAlternate(t *testing.T) {
	accts := []dosim.Account{{Name: "a", Token: "tok-a", DropletLimit: 1}, {Name: "b", Token: "tok-b", DropletLimit: 1}, {Name: "c", Token: "tok-c", DropletLimit: 5}}
	e := newEnv(t, envOpts{accounts: accts, sim: unlimitedSim()})
	e.seed("a", "full", 1)
	e.seed("b", "full", 1)
	r, err := e.pool.Execute(context.Background(), createAction("acme", "a", "b", "c"), ExecOptions{})
	if err != nil {
		t.Fatalf("Execute: %v", err)
	}
	if r.Account != "c" {
		t.Errorf("account = %q, want c", r.Account)
	}
	ds := e.droplets()["genesis-acme-1"]
	if len(ds) != 1 || ds[0]["account"] != "c" || !strings.Contains(fmt.Sprint(ds[0]["tags"]), "genesis:account:c") {
		t.Errorf("droplets = %v, want one in c tagged genesis:account:c", ds)
	}
	// Again, as a resumed operation: found in c, nothing created.
	r2, err := e.pool.Execute(context.Background(), createAction("acme", "a", "b", "c"), ExecOptions{Resume: true})
	if err != nil || r2.DropletID != r.DropletID {
		t.Fatalf("resume: %+v %v, want droplet %d", r2, err, r.DropletID)
	}

	_, err = e.pool.Execute(context.Background(), createAction("other", "a", "b"), ExecOptions{})
	if !IsCapacity(err) || !IsTerminal(err) {
		t.Errorf("all full: err = %v, want a capacity error", err)
	}
}

// hibernateAction is the plan's hibernate of generation 1 of ws.
func hibernateAction(ws, account string, id int) plan.Action {
	return plan.Action{Kind: plan.Hibernate, Workspace: ws, Account: account, Droplet: plan.DropletName(ws, 1), DropletID: id, Size: "s-1vcpu-1gb"}
}

// guardDestroy fails the test when a droplet is destroyed while no
// genesis snapshot of it exists.
func guardDestroy(t *testing.T, e **env) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/v2/droplets/") && *e != nil {
				id := strings.TrimPrefix(r.URL.Path, "/v2/droplets/")
				ok := false
				for _, s := range (*e).snapshots() {
					ok = ok || fmt.Sprint(s["resource_id"]) == id && strings.HasPrefix(fmt.Sprint(s["name"]), "genesis-")
				}
				if !ok {
					t.Errorf("droplet %s destroyed before its snapshot exists", id)
				}
			}
			h.ServeHTTP(w, r)
		})
	}
}

func TestHibernate(t *testing.T) {
	setup := func(t *testing.T, sim dosim.Limits) (*env, Result) {
		var e *env
		e = newEnv(t, envOpts{sim: sim, wrap: guardDestroy(t, &e)})
		r, err := e.pool.Execute(context.Background(), createAction("acme", "a"), ExecOptions{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		return e, r
	}
	check := func(t *testing.T, e *env, r Result) {
		t.Helper()
		if n := len(e.droplets()["genesis-acme-1"]); n != 0 {
			t.Errorf("droplet still there (%d)", n)
		}
		snaps := e.snapshots()
		if len(snaps) != 1 || snaps[0]["name"] != "genesis-acme-1-snap" {
			t.Fatalf("snapshots = %v, want exactly genesis-acme-1-snap", snaps)
		}
		if r.SnapshotID != fmt.Sprint(num(snaps[0]["id"])) {
			t.Errorf("result snapshot %q, want %v", r.SnapshotID, snaps[0]["id"])
		}
	}
	t.Run("snapshot then destroy", func(t *testing.T) {
		e, c := setup(t, unlimitedSim())
		var st steps
		r, err := e.pool.Execute(context.Background(), hibernateAction("acme", "a", c.DropletID), ExecOptions{Progress: st.add})
		if err != nil {
			t.Fatalf("hibernate: %v", err)
		}
		check(t, e, r)
		want := []string{StepStopped, StepSnapshotting, StepSnapshotted, StepDestroyed}
		if got := st.list(); !slices.Equal(got, want) {
			t.Errorf("steps = %v, want %v", got, want)
		}
		// Once more: nothing left to do but confirm.
		if _, err := e.pool.Execute(context.Background(), hibernateAction("acme", "a", c.DropletID), ExecOptions{}); err != nil {
			t.Fatalf("again: %v", err)
		}
		check(t, e, r)
	})
	t.Run("crash between snapshot and destroy", func(t *testing.T) {
		e, c := setup(t, unlimitedSim())
		ctx, cancel := context.WithCancel(context.Background())
		_, err := e.pool.Execute(ctx, hibernateAction("acme", "a", c.DropletID), ExecOptions{Progress: func(step string, _ Result) {
			if step == StepSnapshotted {
				cancel()
			}
		}})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("first: %v, want cancelled", err)
		}
		if n := len(e.droplets()["genesis-acme-1"]); n != 1 {
			t.Fatalf("droplet gone before the retry (%d)", n)
		}
		var st steps
		r, err := e.pool.Execute(context.Background(), hibernateAction("acme", "a", c.DropletID), ExecOptions{Progress: st.add})
		if err != nil {
			t.Fatalf("second: %v", err)
		}
		check(t, e, r)
		if got, want := st.list(), []string{StepSnapshotted, StepDestroyed}; !slices.Equal(got, want) {
			t.Errorf("steps = %v, want %v", got, want)
		}
	})
	t.Run("crash while the snapshot runs", func(t *testing.T) {
		// Actions take a simulated minute: the second call meets the
		// pending snapshot (422 pending event), waits, and finds it.
		e, c := setup(t, dosim.Limits{RatePerMinute: -1, RatePerHour: -1, ActionDelay: dosim.Duration(time.Minute)})
		ctx, cancel := context.WithCancel(context.Background())
		_, err := e.pool.Execute(ctx, hibernateAction("acme", "a", c.DropletID), ExecOptions{Progress: func(step string, _ Result) {
			if step == StepSnapshotting {
				cancel()
			}
		}})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("first: %v, want cancelled", err)
		}
		r, err := e.pool.Execute(context.Background(), hibernateAction("acme", "a", 0), ExecOptions{})
		if err != nil {
			t.Fatalf("second: %v", err)
		}
		check(t, e, r)
		if got := e.counter("genesis_do_requests_total", map[string]string{"endpoint": "droplet_action", "code": "422"}); got < 1 {
			t.Errorf("no 422 pending event seen; the test did not exercise the wait")
		}
	})
	t.Run("failed shutdown falls back to power_off", func(t *testing.T) {
		e, c := setup(t, unlimitedSim())
		if _, err := e.sim.InjectFault(dosim.Fault{Kind: dosim.FaultActionError, Count: 1}); err != nil {
			t.Fatal(err)
		}
		r, err := e.pool.Execute(context.Background(), hibernateAction("acme", "a", c.DropletID), ExecOptions{})
		if err != nil {
			t.Fatalf("hibernate: %v", err)
		}
		check(t, e, r)
		var types []string
		for _, a := range e.sim.Snapshot().Actions {
			types = append(types, fmt.Sprint(a["type"], ":", a["status"]))
		}
		if !slices.Contains(types, "shutdown:errored") || !slices.Contains(types, "power_off:completed") {
			t.Errorf("actions = %v, want an errored shutdown then a power_off", types)
		}
	})
}

func TestWakeFromSnapshot(t *testing.T) {
	accts := []dosim.Account{{Name: "a", Token: "tok-a", DropletLimit: 10}, {Name: "b", Token: "tok-b", DropletLimit: 10}}
	e := newEnv(t, envOpts{accounts: accts, sim: unlimitedSim()})
	ctx := context.Background()
	c, err := e.pool.Execute(ctx, createAction("acme", "a"), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.pool.Execute(ctx, hibernateAction("acme", "a", c.DropletID), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wake := plan.Action{Kind: plan.Wake, Workspace: "acme", Account: "a", Region: "nyc3", Size: "s-1vcpu-1gb", Tier: "starter",
		Snapshot: h.SnapshotID, Droplet: plan.DropletName("acme", 2), Gen: 2}

	wrong := wake
	wrong.Account = "b"
	_, err = e.pool.Execute(ctx, wrong, ExecOptions{})
	if !IsTerminal(err) || !strings.Contains(err.Error(), "account that holds its snapshot") {
		t.Errorf("wake in the wrong account: %v, want a terminal error naming the constraint", err)
	}

	r, err := e.pool.Execute(ctx, wake, ExecOptions{})
	if err != nil {
		t.Fatalf("wake: %v", err)
	}
	ds := e.droplets()["genesis-acme-2"]
	if len(ds) != 1 || r.IP == "" || r.Account != "a" {
		t.Fatalf("droplets = %v, result %+v", ds, r)
	}
	img := ds[0]["image"].(map[string]any)
	if fmt.Sprint(num(img["id"])) != h.SnapshotID || img["type"] != "snapshot" {
		t.Errorf("image = %v, want snapshot %s", img, h.SnapshotID)
	}
}

func TestResize(t *testing.T) {
	e := newEnv(t, envOpts{sim: unlimitedSim()})
	ctx := context.Background()
	c, err := e.pool.Execute(ctx, createAction("acme", "a"), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a := plan.Action{Kind: plan.Resize, Workspace: "acme", Account: "a", Region: "nyc3", Size: "s-2vcpu-4gb", Tier: "starter",
		Droplet: plan.DropletName("acme", 1), DropletID: c.DropletID, Gen: 2}
	for i := range 2 { // the second run finds everything done
		r, err := e.pool.Execute(ctx, a, ExecOptions{})
		if err != nil {
			t.Fatalf("resize %d: %v", i, err)
		}
		ds := e.droplets()
		if len(ds["genesis-acme-1"]) != 0 || len(ds["genesis-acme-2"]) != 1 || ds["genesis-acme-2"][0]["size_slug"] != "s-2vcpu-4gb" {
			t.Fatalf("run %d: droplets = %v", i, ds)
		}
		if num(ds["genesis-acme-2"][0]["id"]) != r.DropletID || len(e.snapshots()) != 1 {
			t.Errorf("run %d: result %+v, snapshots %d", i, r, len(e.snapshots()))
		}
	}
}

func TestDestroyAndDeleteSnapshotAreIdempotent(t *testing.T) {
	e := newEnv(t, envOpts{sim: unlimitedSim()})
	ctx := context.Background()
	c, err := e.pool.Execute(ctx, createAction("acme", "a"), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d := plan.Action{Kind: plan.Destroy, Workspace: "acme", Account: "a", Droplet: plan.DropletName("acme", 1), DropletID: c.DropletID}
	for i := range 2 {
		if _, err := e.pool.Execute(ctx, d, ExecOptions{}); err != nil {
			t.Fatalf("destroy %d: %v", i, err)
		}
	}
	if n := len(e.droplets()); n != 0 {
		t.Errorf("%d droplets left", n)
	}
	if got := e.counter("genesis_do_requests_total", map[string]string{"endpoint": "droplet_delete", "code": "404"}); got != 1 {
		t.Errorf("404s on delete = %v, want 1 (the second destroy)", got)
	}

	c, err = e.pool.Execute(ctx, createAction("acme", "a"), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.pool.Execute(ctx, hibernateAction("acme", "a", c.DropletID), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ds := plan.Action{Kind: plan.DeleteSnapshot, Workspace: "acme", Account: "a", Snapshot: h.SnapshotID}
	for i := range 2 {
		if _, err := e.pool.Execute(ctx, ds, ExecOptions{}); err != nil {
			t.Fatalf("delete snapshot %d: %v", i, err)
		}
	}
	if n := len(e.snapshots()); n != 0 {
		t.Errorf("%d snapshots left", n)
	}
}

func TestAdoptAndUpdateManifestMakeNoCalls(t *testing.T) {
	e := newEnv(t, envOpts{sim: unlimitedSim()})
	for _, k := range []plan.Kind{plan.Adopt, plan.UpdateManifest} {
		r, err := e.pool.Execute(context.Background(), plan.Action{Kind: k, Workspace: "acme", Account: "a", DropletID: 7}, ExecOptions{})
		if err != nil || r.DropletID != 7 {
			t.Errorf("%s: %+v %v", k, r, err)
		}
	}
	if got := e.counter("genesis_do_requests_total", nil); got != 0 {
		t.Errorf("requests = %v, want 0", got)
	}
}

// runCreates executes n creates at once and fails the test on any error.
func runCreates(t testing.TB, p *Pool, accounts []string, n int) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			a := createAction(fmt.Sprintf("ws%04d", i), accounts[i%len(accounts)])
			if _, err := p.Execute(context.Background(), a, ExecOptions{}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("create: %v", err)
	}
}

func TestRateLimitStorm(t *testing.T) {
	// The simulator allows 30 requests a simulated minute. With a budget
	// that believes DigitalOcean's 250 the storm of 429s must end with
	// every droplet made once; with a budget at the real limit there
	// must be no 429 at all.
	for _, tc := range []struct {
		name     string
		limits   Limits
		max429   float64
		min429   float64
		accounts int
	}{
		{name: "budget above the real limit", limits: Limits{}, min429: 1, max429: 60},
		{name: "budget at the real limit", limits: Limits{PerMinute: 30}, max429: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, envOpts{sim: dosim.Limits{RatePerMinute: 30, RatePerHour: 5000}, limits: tc.limits})
			const n = 40
			start := e.sim.Now()
			runCreates(t, e.pool, []string{"a"}, n)
			ds := e.droplets()
			for i := range n {
				if got := len(ds[plan.DropletName(fmt.Sprintf("ws%04d", i), 1)]); got != 1 {
					t.Errorf("ws%04d: %d droplets, want 1", i, got)
				}
			}
			if len(ds) != n {
				t.Errorf("%d droplet names, want %d", len(ds), n)
			}
			got429 := e.counter("genesis_do_429_total", nil)
			total := e.counter("genesis_do_requests_total", nil)
			t.Logf("%v requests, %v 429s, %s simulated", total, got429, e.sim.Now().Sub(start))
			if got429 < tc.min429 || got429 > tc.max429 {
				t.Errorf("429s = %v, want %v..%v", got429, tc.min429, tc.max429)
			}
		})
	}
}

func TestPriorityWakeBeforeCreates(t *testing.T) {
	e := newEnv(t, envOpts{sim: unlimitedSim(), limits: Limits{MaxInFlight: 1}})
	ctx := context.Background()
	// A snapshot to wake from.
	c, err := e.pool.Execute(ctx, createAction("sleepy", "a"), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.pool.Execute(ctx, hibernateAction("sleepy", "a", c.DropletID), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}

	// The first job holds the only slot until the others are queued.
	hold := make(chan struct{})
	var wg sync.WaitGroup
	run := func(a plan.Action, progress func(string, Result)) {
		wg.Go(func() {
			if _, err := e.pool.Execute(ctx, a, ExecOptions{Progress: progress}); err != nil {
				t.Errorf("%s: %v", a, err)
			}
		})
	}
	started := make(chan struct{})
	run(createAction("first", "a"), func(step string, _ Result) {
		if step == StepCreated {
			close(started)
			<-hold
		}
	})
	<-started
	slots := e.pool.accounts["a"].slots
	for i := range 3 {
		run(createAction(fmt.Sprintf("c%d", i), "a"), nil)
		testkit.WaitForFast(t, "the next create queued", func() bool { return slots.queued() == i+1 })
	}
	run(plan.Action{Kind: plan.Wake, Workspace: "sleepy", Account: "a", Region: "nyc3", Size: "s-1vcpu-1gb", Tier: "starter",
		Snapshot: h.SnapshotID, Droplet: plan.DropletName("sleepy", 2), Gen: 2}, nil)
	testkit.WaitForFast(t, "four creates queued", func() bool { return slots.queued() == 4 })
	close(hold)
	wg.Wait()

	ds := e.droplets()
	wakeID := num(ds["genesis-sleepy-2"][0]["id"])
	for i := range 3 {
		if id := num(ds[plan.DropletName(fmt.Sprintf("c%d", i), 1)][0]["id"]); id < wakeID {
			t.Errorf("create c%d (droplet %d) ran before the wake (droplet %d)", i, id, wakeID)
		}
	}
	if a, b := num(ds["genesis-c0-1"][0]["id"]), num(ds["genesis-c2-1"][0]["id"]); a > b {
		t.Errorf("creates ran out of order: c0=%d c2=%d", a, b)
	}
}

func TestMetricsEndpoints(t *testing.T) {
	e := newEnv(t, envOpts{sim: dosim.Limits{RatePerMinute: -1, RatePerHour: 5000}})
	if _, err := e.pool.Execute(context.Background(), createAction("acme", "a"), ExecOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ep := range []string{"droplets_list", "droplet_create", "droplet_get"} {
		if got := e.counter("genesis_do_requests_total", map[string]string{"account": "a", "endpoint": ep, "code": "200"}) +
			e.counter("genesis_do_requests_total", map[string]string{"account": "a", "endpoint": ep, "code": "202"}); got < 1 {
			t.Errorf("%s: no requests counted", ep)
		}
	}
	if got := e.counter("genesis_do_rate_remaining", map[string]string{"account": "a"}); got != 5000-3 {
		t.Errorf("rate remaining = %v, want 4997", got)
	}
}

// TestFailoverOnBrokenAccount: a create moves to the next candidate when
// its account keeps failing and provably made nothing — a 5xx storm on
// every request, or a refused token — with the decision in the result
// (the journal) and the failover counter; a 5xx answering the POST itself
// (the droplet may exist) never moves it, so nothing is made twice.
func TestFailoverOnBrokenAccount(t *testing.T) {
	accts := []dosim.Account{{Name: "a", Token: "tok-a", DropletLimit: 5}, {Name: "b", Token: "tok-b", DropletLimit: 5}}
	for _, c := range []struct {
		name     string
		fault    dosim.Fault
		wantIn   string // "" : an error, nothing made in b
		failover bool
	}{
		{"5xx storm", dosim.Fault{Kind: dosim.FaultError, Account: "a", Status: 503, Count: 1000}, "b", true},
		{"refused token", dosim.Fault{Kind: dosim.FaultError, Account: "a", Status: 401, Count: 1000}, "b", true},
		{"5xx on the POST", dosim.Fault{Kind: dosim.FaultError, Account: "a", Route: "POST /v2/droplets", Status: 500, Count: 1000}, "", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, envOpts{accounts: accts, sim: unlimitedSim(), limits: Limits{MaxAttempts: 3}})
			if _, err := e.sim.InjectFault(c.fault); err != nil {
				t.Fatal(err)
			}
			var st steps
			r, err := e.pool.Execute(context.Background(), createAction("acme", "a", "b"), ExecOptions{UserData: "#cloud-config\n", Progress: st.add})
			ds := e.droplets()["genesis-acme-1"]
			switch {
			case c.wantIn != "":
				if err != nil || r.Account != c.wantIn || len(ds) != 1 || ds[0]["account"] != c.wantIn {
					t.Fatalf("result %+v err %v droplets %v, want one in %s", r, err, ds, c.wantIn)
				}
			default:
				if err == nil || len(ds) > 1 || (len(ds) == 1 && ds[0]["account"] != "a") {
					t.Fatalf("result %+v err %v droplets %v, want an error and nothing outside a", r, err, ds)
				}
			}
			if got := len(r.FailedOver) > 0 && slices.Contains(st.list(), StepFailover); got != c.failover {
				t.Errorf("failed over: %v (%v, steps %v), want %v", got, r.FailedOver, st.list(), c.failover)
			}
			if n := e.counter("genesis_do_account_failovers_total", map[string]string{"account": "a"}); (n > 0) != c.failover {
				t.Errorf("genesis_do_account_failovers_total{account=a} = %v", n)
			}
		})
	}
}
