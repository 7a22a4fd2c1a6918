package reconciler

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/digitalocean/godo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/agent"
	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/reconciler/cloud"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

// spareFleet keeps one spare in nyc3 for enterprise tenants.
func spareFleet() *schema.Fleet {
	f := testFleet()
	f.Spec.Spares = []schema.Spare{{Region: "nyc3", Count: 1, Tiers: []schema.Tier{schema.TierEnterprise}}}
	return f
}

// enterprise is an enterprise tenant in nyc3 with the domain <id>.example.com.
func enterprise(id string) *schema.Tenant {
	t := tenant(id, "running", "nyc3")
	t.Metadata.Tier, t.Spec.Domains = schema.TierEnterprise, []string{id + ".example.com"}
	return t
}

// spareWorld is the reconciler with everything real around it: git,
// Postgres, the simulator (with its clock), the agent protocol served on
// 127.0.0.1, and an in-process genesis agent on every droplet that boots.
type spareWorld struct {
	*harness
	svc     *agentapi.Service
	reg     *prometheus.Registry
	applied sync.Map // droplet id → *recordingApplier
}

func newSpareWorld(t *testing.T, boot time.Duration) *spareWorld {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	work := t.TempDir()
	h := &harness{t: t, state: testkit.NewStateRepo(t)}
	h.repo = h.state.Dir
	h.state.WriteFleet(spareFleet())
	h.state.Commit("fleet")
	h.sim = dosimtest.Start(t, dosim.Config{WorkDir: work,
		Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 50}, {Name: "acct-b", Token: "tok-b", DropletLimit: 50}},
		Limits:   dosim.Limits{BootDelay: dosim.Duration(boot), ActionDelay: dosim.Duration(100 * time.Millisecond)}})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	var err error
	if h.store, err = store.Open(ctx, pgtest.New(t), log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.store.Close)
	if h.src, err = tenants.Open(tenants.Config{Repo: h.repo, Logger: log}); err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	fleetID, _ := age.GenerateX25519Identity()
	w := &spareWorld{harness: h, reg: prometheus.NewRegistry()}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(nil)
	srv.Listener.Close()
	srv.Listener = ln
	w.svc = agentapi.New(agentapi.Config{Store: h.store, Logger: log, Signer: dsse.NewSigner(priv), Identities: []age.Identity{fleetID},
		PublicURL: "http://" + ln.Addr().String(), Desired: func() (tenants.Snapshot, bool) { return h.rec.Snapshot() },
		BatchInterval: 20 * time.Millisecond})
	srv.Config.Handler = w.svc.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	// Cleanups run last-in first-out: stop the agents (their long-polls)
	// before closing the server, which waits for open requests.
	t.Cleanup(cancel)
	wg.Add(1)
	go func() { defer wg.Done(); _ = w.svc.Run(ctx) }()
	h.rec = New(Config{Store: h.store, Logger: log, Metrics: NewMetrics(w.reg), UserData: w.svc.UserData, Manifest: w.svc.RenderAction,
		NewCloud: func(f *schema.Fleet) (*cloud.Pool, error) {
			var accts []cloud.Account
			for _, a := range f.Spec.Accounts {
				accts = append(accts, cloud.Account{Name: a.Name, Token: tokens[a.Name], BaseURL: h.sim.URL})
			}
			p, err := cloud.New(cloud.Config{Accounts: accts, Logger: log, Limits: cloud.Limits{PollMin: 50 * time.Millisecond, PollMax: 250 * time.Millisecond, RetryBase: 5 * time.Millisecond, RetryMax: 50 * time.Millisecond}})
			h.pool = p
			return p, err
		}})
	// The boot hook: every droplet that turns active runs an agent with its
	// user data, as cloud-init would start it.
	wg.Add(1)
	go func() {
		defer wg.Done()
		started := map[int]bool{}
		for ctx.Err() == nil {
			for _, tok := range tokens {
				ds, _, err := h.sim.Client(tok).Droplets.List(ctx, &godo.ListOptions{PerPage: 200})
				if err != nil {
					continue
				}
				for _, d := range ds {
					if d.Status != "active" || started[d.ID] {
						continue
					}
					started[d.ID] = true
					w.boot(ctx, t, &wg, work, d.ID, log)
				}
			}
			// Every 300 ms: these listings count against the same tokens'
			// rate limit (250/minute) as the reconciler's own requests.
			select {
			case <-ctx.Done():
			case <-time.After(300 * time.Millisecond):
			}
		}
	}()
	return w
}

// boot starts droplet id's agent.
func (w *spareWorld) boot(ctx context.Context, t *testing.T, wg *sync.WaitGroup, work string, id int, log *slog.Logger) {
	ud, err := os.ReadFile(filepath.Join(work, "userdata", strconv.Itoa(id)))
	if err != nil || len(ud) == 0 {
		return
	}
	cfg, err := agent.ConfigFromUserData(ud)
	if err != nil {
		t.Errorf("droplet %d user data: %v", id, err)
		return
	}
	st, err := agent.OpenState(filepath.Join(work, "agents", strconv.Itoa(id)))
	if err != nil {
		t.Errorf("droplet %d state: %v", id, err)
		return
	}
	rec := &recordingApplier{}
	w.applied.Store(id, rec)
	a, err := agent.New(agent.Config{Bootstrap: cfg, DropletID: strconv.Itoa(id), State: st, Logger: log, Applier: rec,
		HeartbeatInterval: time.Second, PollWait: 30 * time.Second, RetryMin: 20 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		Probes: map[string]agent.Probe{"n8n": func(context.Context) schema.ComponentHealth { return schema.ComponentHealth{OK: true} }}})
	if err != nil {
		t.Errorf("droplet %d agent: %v", id, err)
		st.Close()
		return
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer st.Close()
		if err := a.Run(ctx); err != nil && ctx.Err() == nil {
			t.Errorf("droplet %d agent: %v", id, err)
		}
	}()
}

// recordingApplier records the manifests an agent applied.
type recordingApplier struct {
	mu sync.Mutex
	ms []schema.Manifest
}

func (r *recordingApplier) Apply(_ context.Context, m *schema.Manifest, _ map[string]json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ms = append(r.ms, *m)
	return nil
}

func (r *recordingApplier) last() schema.Manifest {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ms) == 0 {
		return schema.Manifest{}
	}
	return r.ms[len(r.ms)-1]
}

// run keeps the reconciler passing (as the leader's loop does) until ctx
// ends.
func (w *spareWorld) run(ctx context.Context) {
	snap, err := w.src.Sync(ctx)
	w.rec.Deliver(ctx, snap, err)
	for ctx.Err() == nil {
		if _, err := w.rec.Pass(ctx); err != nil && ctx.Err() == nil {
			w.t.Errorf("pass: %v", err)
		}
		select {
		case <-ctx.Done():
		case <-w.rec.kick:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// waitFor polls cond until it holds, failing the test after limit.
func (w *spareWorld) waitFor(what string, limit time.Duration, cond func(map[string]store.FleetRow) bool) time.Duration {
	w.t.Helper()
	start := time.Now()
	for {
		rows, err := w.store.Fleet(w.t.Context())
		if err != nil {
			w.t.Fatal(err)
		}
		byWS := map[string]store.FleetRow{}
		for _, r := range rows {
			byWS[r.Workspace] = r
		}
		if cond(byWS) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			w.t.Fatalf("timed out waiting for %s; fleet: %+v", what, rows)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func healthy(ws string) func(map[string]store.FleetRow) bool {
	return func(f map[string]store.FleetRow) bool {
		r := f[ws]
		return r.Lifecycle == "ACTIVE_HEALTHY" && r.DropletID != 0 && r.ManifestApplied > 0 && r.ManifestApplied == r.ManifestIssued
	}
}

// TestSpareAssignment: a spare is provisioned, enrolls and parks; an
// enterprise tenant onboards and is served by the same droplet (tags and
// agent moved, the tenant's manifest applied, healthy), a replacement spare
// appears; a pro tenant gets a fresh droplet. The assignment's time to
// ACTIVE_HEALTHY is logged as a ratio to a fresh create's with the same
// boot delay, measured in the same run.
func TestSpareAssignment(t *testing.T) {
	const boot = 2 * time.Second
	w := newSpareWorld(t, boot)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); w.run(ctx) }()
	defer func() { cancel(); <-done; w.rec.Wait() }()

	// The spare boots, enrolls, applies its spare manifest and is ready:
	// the baseline, a fresh create with the same boot delay.
	baseline := w.waitFor("the spare to be ready", 2*time.Minute, healthy("spare-nyc3-1"))
	fleet, _ := w.store.Fleet(t.Context())
	var spareID int64
	for _, r := range fleet {
		if r.Workspace == "spare-nyc3-1" {
			spareID = r.DropletID
		}
	}
	if v, ok := w.applied.Load(int(spareID)); !ok || v.(*recordingApplier).last().State != schema.ManifestStateSpare {
		t.Fatalf("the spare's agent did not apply a spare manifest")
	}

	// Assignment: an enterprise tenant takes the spare.
	w.state.WriteTenant(enterprise("ws-big"))
	w.state.Commit("onboard ws-big")
	snap, err := w.src.Sync(ctx)
	w.rec.Deliver(ctx, snap, err)
	assigned := w.waitFor("ws-big healthy", time.Minute, healthy("ws-big"))

	// A tenant whose tier takes no spare gets a fresh droplet.
	w.state.WriteTenant(tenant("ws-pro", "running", "nyc3"))
	w.state.Commit("onboard ws-pro")
	snap, err = w.src.Sync(ctx)
	w.rec.Deliver(ctx, snap, err)
	w.waitFor("ws-pro healthy on a fresh droplet", time.Minute, healthy("ws-pro"))

	fleet, _ = w.store.Fleet(t.Context())
	byWS := map[string]store.FleetRow{}
	for _, r := range fleet {
		byWS[r.Workspace] = r
	}
	if got := byWS["ws-big"].DropletID; got != spareID {
		t.Fatalf("ws-big is served by droplet %d, want the spare's %d", got, spareID)
	}
	if byWS["ws-pro"].DropletID == spareID {
		t.Fatal("the pro tenant took the enterprise spare")
	}
	// The parked agent converged the tenant's manifest.
	m := func() schema.Manifest { v, _ := w.applied.Load(int(spareID)); return v.(*recordingApplier).last() }()
	if m.Workspace != "ws-big" || m.State != "running" || !slices.Contains(m.Domains, "ws-big.example.com") {
		t.Fatalf("the spare's agent last applied %+v, want ws-big's manifest", m)
	}
	// DigitalOcean: the tenant's tags, none of the spare's, its name.
	var d *godo.Droplet
	w.waitFor("the rename", 30*time.Second, func(map[string]store.FleetRow) bool {
		d, _, err = w.sim.Client(tokens[byWS["ws-big"].Account]).Droplets.Get(t.Context(), int(spareID))
		return err == nil && d.Name == "genesis-ws-big-1"
	})
	for _, tag := range []string{"genesis", "genesis:ws:ws-big", "genesis:tier:enterprise"} {
		if !slices.Contains(d.Tags, tag) {
			t.Errorf("droplet tags %v lack %s", d.Tags, tag)
		}
	}
	for _, tag := range d.Tags {
		if tag == plan.TagSpare || tag == plan.SpareRegionTag("nyc3") || tag == "genesis:ws:spare-nyc3-1" {
			t.Errorf("droplet still carries spare tag %s", tag)
		}
	}
	// A replacement spare appears and gets ready.
	w.waitFor("a replacement spare", time.Minute, func(f map[string]store.FleetRow) bool {
		return healthy("spare-nyc3-1")(f) && f["spare-nyc3-1"].DropletID != spareID
	})
	if got := testutil.ToFloat64(w.rec.cfg.Metrics.exec.Assignments.WithLabelValues("assigned")); got != 1 {
		t.Errorf("genesis_spare_assignments_total{result=assigned} = %v, want 1", got)
	}
	t.Logf("assignment → ACTIVE_HEALTHY %v; fresh spare create → ACTIVE_HEALTHY %v (boot delay %v); ratio %.3f",
		assigned.Round(time.Millisecond), baseline.Round(time.Millisecond), boot, assigned.Seconds()/baseline.Seconds())
}
