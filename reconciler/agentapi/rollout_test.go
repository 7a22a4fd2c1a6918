package agentapi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/reconciler/rollout"
	"genesis.dev/fleet/reconciler/rollouts"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// canaryPolicy is a 10% canary that pauses on its first failure and bakes
// 10 minutes, then everyone else, five at a time.
func canaryPolicy(onFailure schema.OnFailure) *schema.Rollout {
	return &schema.Rollout{
		Waves: []schema.RolloutWave{
			{Name: "canary", Percent: 10, Bake: schema.Duration(10 * time.Minute), MaxUnavailable: "1", FailureBudget: "0"},
			{Name: "rest", Rest: true, MaxUnavailable: "5", FailureBudget: "10%"},
		},
		TenantChanges: schema.TenantChangesImmediate, OnFailure: onFailure, ProgressDeadline: schema.Duration(30 * time.Minute),
	}
}

// setFleet replaces the desired genesis.yaml by a copy changed by edit
// (a new pointer, as the index gives for a changed file).
func (w *world) setFleet(commit string, edit func(*schema.Fleet)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := *w.snap.Fleet
	edit(&f)
	w.snap.Fleet, w.snap.Commit = &f, commit
}

// rolloutFleet is a world of n enrolled tenants under policy, each with
// its first manifest applied and healthy, and an executor (whose first
// step adopted the fleet's inputs).
type rolloutFleet struct {
	*world
	x      *rollouts.Executor
	agents map[string]*agent
	ids    map[string]string // droplet ids
	seq    map[string]int64
}

func newRolloutFleet(t *testing.T, n int, policy *schema.Rollout) *rolloutFleet {
	w := newWorld(t)
	w.setFleet(commitA, func(f *schema.Fleet) { f.Spec.Rollout = policy })
	rf := &rolloutFleet{world: w, agents: map[string]*agent{}, ids: map[string]string{}, seq: map[string]int64{}}
	for i := range n {
		ws := fmt.Sprintf("ws-%02d", i)
		w.setTenant(ws, fmt.Sprintf("blob-%02d", i), tenantSpec{})
		rf.agents[ws] = w.mustEnroll(ws, 1, 7000+i, fmt.Sprintf("10.1.0.%d", i+1))
		rf.ids[ws] = fmt.Sprint(7000 + i)
	}
	rf.x = rollouts.New(rollouts.Config{Store: w.st, Desired: w.desired, Now: w.now})
	rf.step()
	rf.sweep()
	for ws := range rf.agents {
		rf.applyLatest(ws)
	}
	return rf
}

func (rf *rolloutFleet) step() {
	rf.t.Helper()
	if err := rf.x.Step(context.Background()); err != nil {
		rf.t.Fatal(err)
	}
}

func (rf *rolloutFleet) sweep() {
	rf.t.Helper()
	if _, err := rf.svc.Sweep(context.Background()); err != nil {
		rf.t.Fatal(err)
	}
}

// applyLatest has ws's agent fetch its manifest and report it applied
// and healthy, and waits until fleet_status says so.
func (rf *rolloutFleet) applyLatest(ws string) schema.Manifest {
	rf.t.Helper()
	m, _ := rf.manifest(rf.agents[ws])
	rf.seq[ws]++
	h := hb(ws, rf.ids[ws], rf.seq[ws], m.Version, true)
	h.N8NVersion = m.N8N.Version
	if code := rf.beat(rf.agents[ws].cred, h); code != 204 && code != 200 && code != 202 {
		rf.t.Fatalf("heartbeat %s: %d", ws, code)
	}
	poll.Until(rf.t, ws+" healthy at version "+fmt.Sprint(m.Version), func() bool {
		s := rf.status(ws, int64(7000+wsIndex(ws)))
		return s.Applied == m.Version && s.State == "ACTIVE_HEALTHY"
	})
	return m
}

// reject has ws's agent report that it gave up on manifest m's n8n
// version and runs the previous one (applied stays at the old version).
func (rf *rolloutFleet) reject(ws string, m schema.Manifest, applied int64, reason string) {
	rf.t.Helper()
	rf.seq[ws]++
	h := hb(ws, rf.ids[ws], rf.seq[ws], applied, true)
	h.ApplyError = reason
	h.Rejected = []schema.Rejection{{Version: m.Version, Part: schema.RejectN8N, Target: m.N8N.Version, Reason: reason, At: time.Now().UTC()}}
	if code := rf.beat(rf.agents[ws].cred, h); code >= 300 {
		rf.t.Fatalf("heartbeat %s: %d", ws, code)
	}
	poll.Until(rf.t, ws+"'s rejection recorded", func() bool {
		return rf.count(`SELECT count(*) FROM fleet_status WHERE workspace = $1 AND heartbeat ? 'rejected'`, ws) == 1
	})
}

func wsIndex(ws string) int {
	var i int
	fmt.Sscanf(ws, "ws-%d", &i)
	return i
}

// versionsIssued lists, per workspace, every n8n version any of its
// manifests ever carried.
func (rf *rolloutFleet) versionsIssued() map[string][]string {
	rf.t.Helper()
	rows, err := rf.st.Pool().Query(context.Background(), `SELECT workspace, envelope FROM manifests ORDER BY workspace, version`)
	if err != nil {
		rf.t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var ws string
		var env []byte
		if err := rows.Scan(&ws, &env); err != nil {
			rf.t.Fatal(err)
		}
		v := rf.verify(env).N8N.Version
		if l := out[ws]; len(l) == 0 || l[len(l)-1] != v {
			out[ws] = append(out[ws], v)
		}
	}
	return out
}

func (rf *rolloutFleet) latest() store.Rollout {
	rf.t.Helper()
	r, ok, err := rf.st.LatestRollout(context.Background())
	if err != nil || !ok {
		rf.t.Fatalf("latest rollout: %v %v", ok, err)
	}
	return r
}

// TestRolloutStopsAtCanary: a bad n8n version reaches only the canary;
// the agent's rejection pauses the rollout; nothing else is released
// across an executor and manifest-service restart; an abort sends the
// canary back to the version it had.
func TestRolloutStopsAtCanary(t *testing.T) {
	rf := newRolloutFleet(t, 10, canaryPolicy(schema.OnFailurePause))
	good := rf.snap.Fleet.Spec.Defaults.N8NVersion
	if r := rf.latest(); r.State != rollout.Done || r.Baseline != r.Target {
		t.Fatalf("first rollout = %+v, want an adopted, done rollout", r)
	}
	rf.setFleet(commitB, func(f *schema.Fleet) { f.Spec.Defaults.N8NVersion = "9.9.9-broken" })
	rf.step() // starts the rollout and releases the canary
	r := rf.latest()
	if r.State != rollout.Running || len(r.Waves) != 2 || r.Waves[0].Size != 1 || r.Waves[1].Size != 9 {
		t.Fatalf("rollout = %+v", r)
	}
	rf.sweep()
	issued := rf.versionsIssued()
	var canary string
	for ws, vs := range issued {
		if vs[len(vs)-1] == "9.9.9-broken" {
			if canary != "" {
				t.Fatalf("two tenants got the new version before the canary passed: %s and %s", canary, ws)
			}
			canary = ws
		}
	}
	if canary == "" {
		t.Fatalf("no tenant got the new version: %v", issued)
	}
	// A step before the canary answers releases nobody else.
	rf.step()
	rf.sweep()
	m, _ := rf.manifest(rf.agents[canary])
	prev := rf.status(canary, int64(7000+wsIndex(canary))).Applied
	rf.reject(canary, m, prev, "n8n 9.9.9-broken failed verification: the synthetic webhook execution answered 500")
	rf.step()
	r = rf.latest()
	if r.State != rollout.Paused || !strings.Contains(r.Reason, canary) || !strings.Contains(r.Reason, "synthetic webhook") {
		t.Fatalf("after the canary's rejection: state %s, reason %q; want paused naming %s and the agent's reason", r.State, r.Reason, canary)
	}
	// A restart: a new executor and a new manifest service on the same
	// database keep it paused and release nobody.
	rf.x = rollouts.New(rollouts.Config{Store: rf.st, Desired: rf.desired, Now: rf.now})
	rf.advance(time.Hour)
	rf.step()
	replica, _ := rf.replica()
	if _, err := replica.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r = rf.latest(); r.State != rollout.Paused {
		t.Fatalf("after a restart: %s", r.State)
	}
	for ws, vs := range rf.versionsIssued() {
		if ws != canary && vs[len(vs)-1] != good {
			t.Errorf("%s outside the canary received %v", ws, vs)
		}
	}
	// Outside the canary nothing was issued at all: a render from the
	// stored baseline is byte for byte the one from git (no workflow
	// churn on 9 droplets for a change they do not get yet).
	if n := rf.count(`SELECT count(*) FROM manifests WHERE workspace <> $1`, canary); n != 9 {
		t.Errorf("%d manifests outside the canary, want their 9 first ones only", n)
	}
	// The API shows it and a person aborts it: the canary gets the
	// version it had.
	apiSrv := httptest.NewServer(fleetapi.Handler(fleetapi.HandlerConfig{Store: rf.st}))
	defer apiSrv.Close()
	cl := client.New(apiSrv.URL, "", nil)
	doc, err := cl.Rollout(context.Background(), "latest")
	if err != nil {
		t.Fatal(err)
	}
	if doc.ID != r.ID || doc.State != rollout.Paused || len(doc.Failures) != 1 || doc.Failures[0].Workspace != canary ||
		!slices.Contains(doc.Changes, "n8n "+good+" -> 9.9.9-broken") || doc.Waves[0].Failed != 1 || doc.Waves[1].Released != 0 {
		t.Errorf("GET /v1/rollouts/latest = %+v", doc)
	}
	if _, err := cl.RolloutAction(context.Background(), r.ID, "resume", ""); err != nil {
		t.Fatal(err) // accepts the canary's failure...
	}
	if _, err := cl.RolloutAction(context.Background(), r.ID, "pause", "looking at it"); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.RolloutAction(context.Background(), r.ID, "resume", strings.Repeat("x", 501)); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("a 501-byte reason: %v, want 400", err)
	}
	if doc, err = cl.RolloutAction(context.Background(), r.ID, "abort", "bad release"); err != nil || doc.State != rollout.Aborted ||
		!strings.Contains(doc.Reason, "bad release") {
		t.Fatalf("abort: %+v %v", doc, err)
	}
	if _, err := cl.RolloutAction(context.Background(), r.ID, "resume", ""); !errors.Is(err, api.ErrConflict) {
		t.Errorf("resume of an aborted rollout: %v, want 409", err)
	}
	if n := rf.count(`SELECT count(*) FROM audit_log WHERE action LIKE 'rollout.%'`); n != 3 {
		t.Errorf("audit_log has %d rollout actions, want 3 (resume, pause, abort)", n)
	}
	rf.sweep()
	if m := rf.applyLatest(canary); m.N8N.Version != good {
		t.Errorf("canary after the abort runs %s, want %s", m.N8N.Version, good)
	}
	// The next fleet-wide change (the fix) starts a new rollout whose
	// baseline is what every tenant runs.
	rf.setFleet("fedcba9876543210fedcba9876543210fedcba98", func(f *schema.Fleet) { f.Spec.Defaults.N8NVersion = "9.9.10" })
	rf.step()
	next := rf.latest()
	if next.ID == r.ID || next.State != rollout.Running || next.Baseline != r.Baseline {
		t.Errorf("the fix's rollout = %+v, want running from %s", next, r.Baseline)
	}
}

// TestRolloutWavesAndBake drives a good change through both waves: the
// canary bakes before the rest starts, at most maxUnavailable change at
// once, and the rollout ends done with every tenant on the new version.
func TestRolloutWavesAndBake(t *testing.T) {
	rf := newRolloutFleet(t, 11, canaryPolicy(schema.OnFailurePause))
	// ws-10 pins its own n8n: the change does not affect it, so it is no
	// canary and takes no place in a wave.
	rf.setTenant("ws-10", "blob-10-pinned", tenantSpec{n8n: "1.122.5"})
	rf.sweep()
	rf.applyLatest("ws-10")
	rf.setFleet(commitB, func(f *schema.Fleet) { f.Spec.Defaults.N8NVersion = "1.124.0" })
	rf.step()
	rf.sweep()
	onNew := func() []string {
		var out []string
		for ws, vs := range rf.versionsIssued() {
			if vs[len(vs)-1] == "1.124.0" {
				out = append(out, ws)
			}
		}
		return out
	}
	canary := onNew()
	if len(canary) != 1 {
		t.Fatalf("canary = %v", canary)
	}
	rf.applyLatest(canary[0])
	rf.step() // the canary applied: the wave bakes
	rf.step()
	rf.sweep()
	if got := onNew(); len(got) != 1 {
		t.Fatalf("during the canary's bake %d tenants have the new version: %v (canary %v)", len(got), got, canary)
	}
	if r := rf.latest(); r.BakingSince == nil || r.Wave != 0 {
		t.Fatalf("rollout = %+v, want wave 0 baking", r)
	}
	rf.advance(11 * time.Minute)
	rf.step() // bake over: wave rest starts
	rf.step() // releases 5
	rf.sweep()
	if got := onNew(); len(got) != 6 {
		t.Fatalf("after the canary, with maxUnavailable 5: %d tenants on the new version, want 6", len(got))
	}
	for len(onNew()) < 10 {
		for _, ws := range onNew() {
			rf.applyLatest(ws)
		}
		rf.step()
		rf.step()
		rf.sweep()
	}
	for _, ws := range onNew() {
		rf.applyLatest(ws)
	}
	for range 3 {
		rf.step()
	}
	r := rf.latest()
	if r.State != rollout.Done {
		t.Fatalf("rollout = %s (%s), want done", r.State, r.Reason)
	}
	if r.Waves[0].Size+r.Waves[1].Size != 10 {
		t.Errorf("waves %+v: want the 10 affected tenants, not the pinned one", r.Waves)
	}
	// The running version the agents report is in fleet_status.
	if n := rf.count(`SELECT count(*) FROM fleet_status WHERE n8n_version = '1.124.0'`); n != 10 {
		t.Errorf("%d tenants have fleet_status.n8n_version 1.124.0, want 10", n)
	}
}

// TestRolloutRollback: with onFailure: rollback a breach ends the rollout
// rolled back and the canary renders its previous version again.
func TestRolloutRollback(t *testing.T) {
	rf := newRolloutFleet(t, 4, canaryPolicy(schema.OnFailureRollback))
	good := rf.snap.Fleet.Spec.Defaults.N8NVersion
	rf.setFleet(commitB, func(f *schema.Fleet) { f.Spec.Defaults.N8NVersion = "9.9.9" })
	rf.step()
	rf.sweep()
	// The canary never applies: past the progress deadline it failed.
	rf.advance(31 * time.Minute)
	rf.step()
	r := rf.latest()
	if r.State != rollout.RolledBack || !strings.Contains(r.Reason, "within 30m0s") {
		t.Fatalf("rollout = %s %q, want rolled_back past the progress deadline", r.State, r.Reason)
	}
	rf.sweep()
	for ws, vs := range rf.versionsIssued() {
		if vs[len(vs)-1] != good {
			t.Errorf("%s renders %v after the rollback, want back on %s", ws, vs, good)
		}
	}
}

// TestRolloutFencedAfterLeaderChange: a step of a replica whose epoch
// was taken over writes nothing.
func TestRolloutFencedAfterLeaderChange(t *testing.T) {
	rf := newRolloutFleet(t, 4, canaryPolicy(schema.OnFailurePause))
	rf.setFleet(commitB, func(f *schema.Fleet) { f.Spec.Defaults.N8NVersion = "1.124.0" })
	old, err := rf.st.TryLead(context.Background(), time.Second)
	if err != nil || old == nil {
		t.Fatalf("lead: %v", err)
	}
	oldCtx := store.WithEpoch(context.Background(), old.Epoch, nil)
	old.Release()
	next, err := rf.st.TryLead(context.Background(), time.Second)
	if err != nil || next == nil {
		t.Fatalf("second lead: %v", err)
	}
	defer next.Release()
	if err := rf.x.Step(oldCtx); err == nil || !strings.Contains(err.Error(), "epoch") {
		t.Fatalf("stale leader's step: %v, want refused by the epoch", err)
	}
	if r := rf.latest(); r.State != rollout.Done {
		t.Fatalf("the stale leader started a rollout: %+v", r)
	}
	newCtx := store.WithEpoch(context.Background(), next.Epoch, nil)
	if err := rf.x.Step(newCtx); err != nil {
		t.Fatal(err)
	}
	r := rf.latest()
	if r.State != rollout.Running {
		t.Fatalf("the leader's step: %+v", r)
	}
	// Mid-wave: the canary is released and applies; the old leader, still
	// running its loop, steps again and writes nothing; a new executor
	// (another replica taking over) continues from the stored state.
	rf.sweep()
	released := rf.count(`SELECT count(*) FROM rollout_members WHERE rollout_id = $1 AND released_at IS NOT NULL`, r.ID)
	if released != 1 {
		t.Fatalf("%d released after the first step, want the canary", released)
	}
	var canary string
	if err := rf.st.Pool().QueryRow(context.Background(), `SELECT workspace FROM rollout_members WHERE rollout_id = $1 AND released_at IS NOT NULL`, r.ID).Scan(&canary); err != nil {
		t.Fatal(err)
	}
	rf.applyLatest(canary)
	if err := rf.x.Step(oldCtx); err == nil {
		t.Fatal("the stale leader's step mid-wave was not refused")
	}
	if n := rf.count(`SELECT count(*) FROM rollout_members WHERE rollout_id = $1 AND applied_at IS NOT NULL`, r.ID); n != 0 {
		t.Fatalf("the stale leader recorded %d members applied", n)
	}
	other := rollouts.New(rollouts.Config{Store: rf.st, Desired: rf.desired, Now: rf.now})
	if err := other.Step(newCtx); err != nil {
		t.Fatal(err)
	}
	if n := rf.count(`SELECT count(*) FROM rollout_members WHERE rollout_id = $1 AND workspace = $2 AND applied_at IS NOT NULL`, r.ID, canary); n != 1 {
		t.Errorf("the new leader's executor did not take the canary as applied")
	}
	if r2 := rf.latest(); r2.ID != r.ID || r2.State != rollout.Running || r2.BakingSince == nil {
		t.Errorf("after the take-over: %+v, want the same rollout baking its canary", r2)
	}
}

// TestRolloutAgentPin: a new spec.defaults.agent is a rollout like an n8n
// version: the canary's manifest names the build (signed with the rest),
// the others' do not until their wave; an agent whose watcher rolled the
// build back (a rejection of part agent) fails the canary.
func TestRolloutAgentPin(t *testing.T) {
	rf := newRolloutFleet(t, 10, canaryPolicy(schema.OnFailurePause))
	pin := &schema.AgentRelease{Version: "1.5.0", SHA256: strings.Repeat("ab", 32), URL: "https://releases.example.com/genesis-agent-1.5.0"}
	rf.setFleet(commitB, func(f *schema.Fleet) { f.Spec.Defaults.Agent = pin })
	rf.step()
	rf.sweep()
	var canary string
	for ws, a := range rf.agents {
		m, _ := rf.manifest(a)
		if m.Agent != nil {
			if canary != "" || *m.Agent != (schema.AgentPin{Version: pin.Version, SHA256: pin.SHA256, URL: pin.URL}) {
				t.Fatalf("%s got %+v (canary so far %q)", ws, m.Agent, canary)
			}
			canary = ws
		}
	}
	if canary == "" {
		t.Fatal("no tenant got the agent pin")
	}
	m := rf.applyLatest(canary)
	rf.step()
	rf.seq[canary]++
	h := hb(canary, rf.ids[canary], rf.seq[canary], m.Version, true)
	h.Rejected = []schema.Rejection{{Version: m.Version, Part: schema.RejectAgent, Target: "1.5.0", Reason: "agent 1.5.0 sent no healthy heartbeat within 3m0s; rolled back", At: time.Now().UTC()}}
	if code := rf.beat(rf.agents[canary].cred, h); code >= 300 {
		t.Fatalf("heartbeat: %d", code)
	}
	poll.Until(t, "the rejection recorded", func() bool {
		return rf.count(`SELECT count(*) FROM fleet_status WHERE workspace = $1 AND heartbeat ? 'rejected'`, canary) == 1
	})
	rf.step()
	if r := rf.latest(); r.State != rollout.Paused || !strings.Contains(r.Reason, "agent 1.5.0") {
		t.Fatalf("rollout %s %q, want paused by the agent's rollback", r.State, r.Reason)
	}
}

// TestRolloutNewTemplate: a commit that adds a template (a fleet-wide
// change: a rollout) and a tenant file that starts using it (immediate)
// renders for that tenant before its wave: the older inputs have no
// version of the template to keep.
func TestRolloutNewTemplate(t *testing.T) {
	rf := newRolloutFleet(t, 4, canaryPolicy(schema.OnFailurePause))
	tpl, errs := schema.ParseTemplate("templates/workflows/welcome2.json", "welcome2", []byte(strings.Replace(templateJSON, "Welcome", "Welcome two", 1)))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	rf.mu.Lock()
	next := rf.snap
	next.Templates = map[string]*schema.Template{"welcome": rf.snap.Templates["welcome"], "welcome2": tpl}
	rf.snap = next
	rf.mu.Unlock()
	// With a new n8n default, so every tenant is in the waves.
	rf.setFleet(commitB, func(f *schema.Fleet) { f.Spec.Defaults.N8NVersion = "1.124.0" })
	rf.step()
	r := rf.latest()
	if r.State != rollout.Running {
		t.Fatalf("adding a template started no rollout: %+v", r)
	}
	// A tenant the rollout has not released starts using the new template.
	var waiting string
	for ws := range rf.agents {
		if rf.count(`SELECT count(*) FROM rollout_members WHERE rollout_id = $1 AND workspace = $2 AND released_at IS NULL`, r.ID, ws) == 1 {
			waiting = ws
			break
		}
	}
	if waiting == "" {
		t.Fatal("no waiting member")
	}
	rf.mu.Lock()
	next = rf.snap
	next.Tenants = maps.Clone(rf.snap.Tenants)
	ts := next.Tenants[waiting]
	tn := *ts.Tenant
	tn.Spec.Workflows = append(slices.Clone(tn.Spec.Workflows), schema.Workflow{Template: "welcome2", Credentials: tn.Spec.Workflows[0].Credentials, Params: tn.Spec.Workflows[0].Params})
	ts.Tenant, ts.ValidBlob = &tn, "blob-welcome2"
	next.Tenants[waiting] = ts
	rf.snap = next
	rf.mu.Unlock()
	rf.sweep()
	m, _ := rf.manifest(rf.agents[waiting])
	var names []string
	for _, w := range m.Workflows {
		names = append(names, w.Name)
	}
	if !slices.Contains(names, "welcome2") {
		t.Errorf("%s (waiting for its wave) has workflows %v, want welcome2 too", waiting, names)
	}
}
