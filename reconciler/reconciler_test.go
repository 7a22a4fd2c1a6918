package reconciler

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testFleet has two accounts: acct-a serves nyc3, acct-b nyc3 and fra1.
func testFleet() *schema.Fleet {
	f := testkit.Fleet()
	f.Spec.Accounts = append(f.Spec.Accounts, schema.Account{Name: "acct-b", Regions: []string{"nyc3", "fra1"}, MaxDroplets: 20, TokenEnv: "TOKEN_B"})
	return f
}

// tenant is a pro tenant in state and region.
func tenant(id, state, region string) *schema.Tenant {
	t := testkit.Tenant(id, region)
	t.Spec.State = schema.State(state)
	return t
}

// harness is a reconciler wired to real parts: a git repository edited with
// the git CLI, Postgres, and the DigitalOcean simulator through godo.
type harness struct {
	t     *testing.T
	state *testkit.StateRepo
	repo  string
	sim   *dosimtest.Server
	store *store.Store
	src   *tenants.Source
	rec   *Reconciler
	pool  *cloud.Pool
	// api is the DigitalOcean API the reconciler talks to: the simulator
	// unless a test puts something in front of it before the first pass.
	api string
	// tokens are the accounts' tokens the reconciler's pool is built with
	// (tokens, plus what a test adds).
	tokens map[string]string
}

var tokens = map[string]string{"acct-a": "tok-a", "acct-b": "tok-b"}

func newHarness(t *testing.T, limits dosim.Limits) *harness {
	t.Helper()
	h := &harness{t: t, state: testkit.NewStateRepo(t), tokens: maps.Clone(tokens)}
	h.repo = h.state.Dir
	h.state.WriteFleet(testFleet())
	h.state.Commit("fleet")
	h.sim = dosimtest.Start(t, dosim.Config{Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 50}, {Name: "acct-b", Token: "tok-b", DropletLimit: 50}}, Limits: limits})
	h.api = h.sim.URL
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	var err error
	h.store, err = store.Open(t.Context(), pgtest.New(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.store.Close)
	h.src, err = tenants.Open(tenants.Config{Repo: h.repo, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	h.rec = New(Config{Store: h.store, Logger: log, NewCloud: func(f *schema.Fleet) (*cloud.Pool, error) {
		var accts []cloud.Account
		for _, a := range f.Spec.Accounts {
			accts = append(accts, cloud.Account{Name: a.Name, Token: h.tokens[a.Name], BaseURL: h.api})
		}
		p, err := cloud.New(cloud.Config{Accounts: accts, Logger: log, Limits: cloud.Limits{PollMin: 5 * time.Millisecond, PollMax: 20 * time.Millisecond, RetryBase: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond}})
		h.pool = p
		return p, err
	}})
	return h
}

// converge syncs git and runs passes, waiting for each pass's jobs, until a
// pass plans nothing (or gives up after a bound); it returns the last plan.
func (h *harness) converge(ctx context.Context) plan.Plan {
	h.t.Helper()
	snap, err := h.src.Sync(ctx)
	h.rec.Deliver(ctx, snap, err)
	var p plan.Plan
	for range 20 {
		p, err = h.rec.Pass(ctx)
		if err != nil {
			h.t.Fatal(err)
		}
		h.rec.Wait()
		if p.Empty() {
			return p
		}
	}
	h.t.Fatalf("no convergence after 20 passes; last plan %v", p.Actions)
	return p
}

// droplets lists the simulator's droplets through godo: name → account.
func (h *harness) droplets() map[string]string {
	h.t.Helper()
	out := map[string]string{}
	for acct, tok := range tokens {
		c := h.sim.Client(tok)
		ds, _, err := c.Droplets.List(h.t.Context(), &godo.ListOptions{PerPage: 200})
		if err != nil {
			h.t.Fatal(err)
		}
		for _, d := range ds {
			if prev, dup := out[d.Name]; dup {
				h.t.Fatalf("droplet %s exists twice (%s and %s)", d.Name, prev, acct)
			}
			out[d.Name] = acct
		}
	}
	return out
}

func names(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func (h *harness) lifecycle(ws string) lifecycle.State {
	h.t.Helper()
	st, err := h.store.LoadStatus(h.t.Context())
	if err != nil {
		h.t.Fatal(err)
	}
	return lifecycle.State(st[ws].Lifecycle)
}

func TestReconcileStory(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()

	// Onboarding by commit.
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.WriteTenant(tenant("ws-b", "running", "fra1"))
	h.state.Commit("onboard ws-a, ws-b")
	h.converge(ctx)
	if diff := cmp.Diff([]string{"genesis-ws-a-1", "genesis-ws-b-1"}, names(h.droplets())); diff != "" {
		t.Fatalf("droplets after onboarding (-want +got):\n%s", diff)
	}
	if got := h.droplets()["genesis-ws-b-1"]; got != "acct-b" {
		t.Errorf("ws-b (fra1) landed in %s; only acct-b serves fra1", got)
	}
	if got := h.lifecycle("ws-a"); got != "INITIALIZING" {
		t.Errorf("ws-a lifecycle = %s, want INITIALIZING (booted, waiting for its agent)", got)
	}

	// A broken file leaves its tenant at its last valid version and the
	// rest reconciling.
	h.state.Write("tenants/ws-a.yaml", "apiVersion: genesis.dev/v1\nkind: Tenant\nmetadata: {id: ws-a}\nspec: {state: bogus}\n")
	h.state.WriteTenant(tenant("ws-c", "running", "nyc3"))
	h.state.Commit("break ws-a, add ws-c")
	h.converge(ctx)
	if diff := cmp.Diff([]string{"genesis-ws-a-1", "genesis-ws-b-1", "genesis-ws-c-1"}, names(h.droplets())); diff != "" {
		t.Fatalf("droplets after a broken file (-want +got):\n%s", diff)
	}
	snap, _ := h.rec.Snapshot()
	if snap.Tenants["ws-a"].Status != tenants.StatusInvalid || snap.Tenants["ws-a"].Tenant == nil {
		t.Errorf("ws-a should be invalid and kept at its last valid version: %+v", snap.Tenants["ws-a"])
	}

	// Deleting a tenant file reports an orphan and destroys nothing.
	h.state.Git("rm", "-q", "tenants/ws-c.yaml")
	h.state.Commit("remove ws-c's file")
	p := h.converge(ctx)
	if _, ok := h.droplets()["genesis-ws-c-1"]; !ok {
		t.Fatalf("removing a tenant file destroyed its droplet")
	}
	if len(p.Orphans) != 1 || p.Orphans[0].Droplet != "genesis-ws-c-1" {
		t.Errorf("orphans = %+v, want genesis-ws-c-1", p.Orphans)
	}

	// state: absent destroys.
	h.state.WriteTenant(tenant("ws-a", "absent", "nyc3"))
	h.state.Commit("offboard ws-a")
	h.converge(ctx)
	if _, ok := h.droplets()["genesis-ws-a-1"]; ok {
		t.Fatalf("state: absent did not destroy ws-a's droplet")
	}
	if got := h.lifecycle("ws-a"); got != "DESTROYED" {
		t.Errorf("ws-a lifecycle = %s, want DESTROYED", got)
	}

	// Mass deletion is refused: three absent against maxDestroyPerRun 2.
	for _, id := range []string{"ws-d", "ws-e", "ws-f"} {
		h.state.WriteTenant(tenant(id, "running", "nyc3"))
	}
	h.state.Commit("three more")
	h.converge(ctx)
	for _, id := range []string{"ws-b", "ws-d", "ws-e"} {
		region := "nyc3"
		if id == "ws-b" {
			region = "fra1"
		}
		h.state.WriteTenant(tenant(id, "absent", region))
	}
	h.state.Commit("offboard three at once")
	snap, err := h.src.Sync(ctx)
	h.rec.Deliver(ctx, snap, err)
	p, err = h.rec.Pass(ctx)
	h.rec.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Refused) != 1 || len(p.Actions) != 0 || len(p.Withheld) != 3 {
		t.Fatalf("mass destroy: refused %v, actions %v, withheld %d", p.Refused, p.Actions, len(p.Withheld))
	}
	if got := len(h.droplets()); got != 5 {
		t.Errorf("droplets after a refused plan = %d, want 5 (nothing destroyed)", got)
	}

	// Every action and its outcome is in the audit log with its commit.
	var n int
	if err := h.store.Pool().QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE commit IS NOT NULL`).Scan(&n); err != nil || n < 7 {
		t.Errorf("audit entries with a commit = %d (%v), want ≥ 7", n, err)
	}
}

// TestRateLimitStorm: with DigitalOcean's limit at 20 requests a minute on
// the simulator, onboarding converges with no duplicate droplets.
func TestRateLimitStorm(t *testing.T) {
	h := newHarness(t, dosim.Limits{RatePerMinute: 20, RatePerHour: -1})
	ctx := t.Context()
	for i := range 6 {
		id := fmt.Sprintf("ws-%02d", i)
		h.state.WriteTenant(tenant(id, "running", "nyc3"))
	}
	h.state.Commit("six tenants")
	// Run the clock fast: every real millisecond is 100 simulated ones.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
				h.sim.Sim.Advance(time.Second)
			}
		}
	}()
	h.converge(ctx)
	if got := len(h.droplets()); got != 6 {
		t.Errorf("droplets = %d, want 6", got)
	}
}

func TestResumeAfterCrash(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.Commit("onboard")
	snap, err := h.src.Sync(ctx)
	h.rec.Deliver(ctx, snap, err)
	// A crash after the create was journaled and sent, before its outcome
	// was recorded: journal it, create it by hand as the dead leader did.
	if err := h.store.SyncAccounts(ctx, snap.Fleet); err != nil {
		t.Fatal(err)
	}
	a := plan.Action{Kind: plan.Create, Workspace: "ws-a", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Image: "ubuntu-22-04-x64", Tier: "pro", Droplet: "genesis-ws-a-1", Gen: 1}
	if _, err := h.store.Begin(ctx, a, schema.StateRunning, snap.Commit); err != nil {
		t.Fatal(err)
	}
	c := h.sim.Client("tok-a")
	if _, _, err := c.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "genesis-ws-a-1", Region: "nyc3", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "ubuntu-22-04-x64"}, Tags: plan.Tags("ws-a", "acct-a", "pro")}); err != nil {
		t.Fatal(err)
	}
	// The new leader resumes the journal, then plans: one droplet.
	if _, err := h.rec.cloudFor(snap.Fleet); err != nil {
		t.Fatal(err)
	}
	if err := h.rec.resume(ctx); err != nil {
		t.Fatal(err)
	}
	h.rec.Wait()
	h.converge(ctx)
	if diff := cmp.Diff([]string{"genesis-ws-a-1"}, names(h.droplets())); diff != "" {
		t.Errorf("droplets after resume (-want +got):\n%s", diff)
	}
	if ops, _ := h.store.InFlight(ctx); len(ops) != 0 {
		t.Errorf("operations still in flight: %+v", ops)
	}
	if got := h.lifecycle("ws-a"); got != "INITIALIZING" {
		t.Errorf("lifecycle = %s", got)
	}
}

func TestObservedHandlerAndFleet(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.Write("tenants/ws-bad.yaml", "apiVersion: genesis.dev/v1\nkind: Tenant\n")
	h.state.Commit("one good, one bad")
	h.converge(ctx)
	o := h.rec.Observed()
	if len(o.Droplets) != 1 || o.Status["ws-a"].DropletID == 0 {
		t.Errorf("observed = %+v", o)
	}
	rows, err := h.store.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	doc := fleetapi.View(rows, h.rec)
	var got []string
	for _, tv := range doc.Tenants {
		got = append(got, fmt.Sprintf("%s %s valid=%v errors=%d", tv.Workspace, tv.Lifecycle, tv.Valid, len(tv.FileErrors)))
	}
	if diff := cmp.Diff([]string{"ws-a INITIALIZING valid=true errors=0", "ws-bad PENDING valid=false errors=5"}, got); diff != "" {
		t.Errorf("fleet view (-want +got):\n%s\n%s", diff, strings.Join(got, "\n"))
	}
}

// TestProvisioningRollback: a droplet whose create action errors (it ends
// off, never active) is destroyed again, the account's slot freed, and the
// failure recorded; the tenant backs off, and the first pass after its
// backoff provisions it afresh.
func TestProvisioningRollback(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	h.rec.cfg.Now = h.sim.Sim.Now
	ctx := t.Context()
	if _, err := h.sim.Sim.InjectFault(dosim.Fault{Kind: "action_error", Count: 1}); err != nil {
		t.Fatal(err)
	}
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.Commit("onboard")
	snap, err := h.src.Sync(ctx)
	h.rec.Deliver(ctx, snap, err)
	if _, err := h.rec.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	h.rec.Wait()
	if got := h.droplets(); len(got) != 0 {
		t.Fatalf("droplets after a failed create = %v, want none (rolled back)", got)
	}
	rows, _ := h.store.Fleet(ctx)
	if len(rows) != 1 || !strings.Contains(rows[0].LastError, "rolled back") {
		t.Fatalf("fleet after the failed create = %+v, want last_error naming the rollback", rows)
	}
	var failed int
	h.store.Pool().QueryRow(ctx, `SELECT count(*) FROM operations WHERE state = 'failed' AND kind = 'create'`).Scan(&failed)
	if failed != 1 {
		t.Errorf("failed create operations = %d, want 1", failed)
	}
	// It backs off: the next pass leaves it alone and says until when.
	if p, err := h.rec.Pass(ctx); err != nil || len(p.Actions) != 0 || len(p.Held) != 1 || p.Held[0].Workspace != "ws-a" {
		t.Fatalf("pass during the backoff: %v, actions %v, held %v; want ws-a held", err, p.Actions, p.Held)
	}
	// The first pass after it provisions it afresh.
	h.sim.Sim.Advance(BackoffMax)
	h.converge(ctx)
	if got := names(h.droplets()); len(got) != 1 {
		t.Errorf("droplets after retry = %v", got)
	}
}

// TestForcePushReported: a head that rewrites history is refused, the fleet
// stays reconciled at the last good commit, and /v1/fleet says why.
func TestForcePushReported(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.Commit("onboard ws-a")
	h.converge(ctx)
	good, _ := h.rec.Snapshot()
	if err := h.src.MarkReconciled(good.Commit); err != nil {
		t.Fatal(err)
	}
	// Rewrite history: the branch now holds an unrelated commit that
	// declares ws-a absent.
	h.state.Git("checkout", "-q", "--orphan", "rewrite")
	h.state.WriteTenant(tenant("ws-a", "absent", "nyc3"))
	h.state.Commit("rewritten")
	h.state.Git("branch", "-q", "-f", "main", "rewrite")
	h.state.Git("checkout", "-q", "main")
	snap, err := h.src.Sync(ctx)
	if !errors.Is(err, tenants.ErrNotDescendant) {
		t.Fatalf("sync of a rewritten branch: err = %v, want ErrNotDescendant", err)
	}
	h.rec.Deliver(ctx, snap, err)
	if _, err := h.rec.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	h.rec.Wait()
	if got := names(h.droplets()); len(got) != 1 {
		t.Fatalf("droplets after a refused rewrite = %v, want ws-a's still there", got)
	}
	rows, _ := h.store.Fleet(ctx)
	doc := fleetapi.View(rows, h.rec)
	if doc.Commit != good.Commit || !strings.Contains(doc.SyncError, "does not descend") {
		t.Errorf("fleet view: commit %s (want %s), sync_error %q", doc.Commit, good.Commit, doc.SyncError)
	}
}
