package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// idleTenant hibernates after 72 h idle.
func idleTenant(id string) *schema.Tenant {
	t := tenant(id, "running", "nyc3")
	t.Spec.Hibernation = &schema.Hibernation{AfterIdle: schema.Duration(72 * time.Hour)}
	return t
}

// resync converges with a full pass first, as the loop's resync tick does
// (time-driven decisions come from no commit).
func (h *harness) resync(ctx context.Context) {
	h.t.Helper()
	h.rec.mu.Lock()
	h.rec.needFull = true
	h.rec.mu.Unlock()
	h.converge(ctx)
}

func (h *harness) exec(sql string, args ...any) {
	h.t.Helper()
	if _, err := h.store.Pool().Exec(h.t.Context(), sql, args...); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) count(sql string, args ...any) int {
	h.t.Helper()
	var n int
	if err := h.store.Pool().QueryRow(h.t.Context(), sql, args...).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// snapshotNames lists the simulator's snapshots by name.
func (h *harness) snapshotNames() []string {
	h.t.Helper()
	var out []string
	for _, tok := range tokens {
		ss, _, err := h.sim.Client(tok).Snapshots.ListDroplet(h.t.Context(), &godo.ListOptions{PerPage: 200})
		if err != nil {
			h.t.Fatal(err)
		}
		for _, s := range ss {
			out = append(out, s.Name)
		}
	}
	return sortedStrings(out)
}

func sortedStrings(s []string) []string {
	out := append([]string(nil), s...)
	slices.Sort(out)
	return out
}

// TestIdleWarningThenHibernation: with the simulator's clock, a tenant idle
// for afterIdle − warning is warned (recorded once, audited, POSTed to the
// notifier); it is hibernated only when idle for afterIdle and warned a
// full warning period before; activity after a warning voids it. The idle
// hibernation writes no commit and the API's wake brings the tenant back.
func TestIdleWarningThenHibernation(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	h.rec.cfg.Now = h.sim.Sim.Now
	var mu sync.Mutex
	var got []notify.Notification
	endpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n notify.Notification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("notification: %v (%s)", err, r.Header.Get("Content-Type"))
		}
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer endpoint.Close()
	h.rec.cfg.NotifyTargets = []notify.Target{{Name: "webhook", Send: (&notify.Webhook{URL: endpoint.URL}).Send}}
	notes := func() []notify.Notification {
		h.rec.DeliverNotices(ctx) // the leader's sender, once
		mu.Lock()
		defer mu.Unlock()
		return append([]notify.Notification(nil), got...)
	}

	h.state.WriteTenant(idleTenant("ws-idle"))
	h.state.WriteTenant(idleTenant("ws-busy"))
	h.state.WriteTenant(tenant("ws-other", "running", "nyc3"))
	h.state.Commit("three tenants")
	h.converge(ctx)

	now := h.sim.Sim.Now()
	last := now.Add(-50 * time.Hour).UTC().Truncate(time.Second)
	h.exec(`UPDATE fleet_status SET last_activity_at = $1 WHERE workspace IN ('ws-idle', 'ws-busy')`, last)
	h.resync(ctx)
	h.resync(ctx) // a second pass sends nothing again
	ns := notes()
	if len(ns) != 2 {
		t.Fatalf("notifications = %+v, want one per idle tenant", ns)
	}
	for _, n := range ns {
		if n.Kind != notify.IdleWarning || !n.LastActivity.Equal(last) || n.AfterIdle != "72h0m0s" || n.HibernateAt.Before(n.WarnedAt.Add(24*time.Hour-time.Second)) {
			t.Errorf("notification %+v", n)
		}
	}
	if n := h.count(`SELECT count(*) FROM audit_log WHERE action = 'hibernate.idle_warning'`); n != 2 {
		t.Errorf("idle warning audit entries = %d, want 2", n)
	}
	// ws-busy runs something after its warning.
	h.exec(`UPDATE fleet_status SET last_activity_at = $1 WHERE workspace = 'ws-busy'`, h.sim.Sim.Now().UTC())

	// 73 h idle but warned only 23 h ago: not yet.
	h.sim.Sim.Advance(23 * time.Hour)
	h.resync(ctx)
	if got := h.lifecycle("ws-idle"); got == "HIBERNATED" {
		t.Fatal("hibernated before the warning's 24 h grace")
	}
	h.sim.Sim.Advance(2 * time.Hour)
	h.resync(ctx)
	if got := h.lifecycle("ws-idle"); got != "HIBERNATED" {
		t.Fatalf("ws-idle lifecycle = %s after the grace, want HIBERNATED", got)
	}
	if got := h.lifecycle("ws-busy"); got == "HIBERNATED" {
		t.Error("ws-busy was hibernated although it was active after its warning")
	}
	if n := len(notes()); n != 2 {
		t.Errorf("notifications = %d after the activity, want still 2", n)
	}
	rows, err := h.store.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		switch r.Workspace {
		case "ws-idle":
			if !r.HibernatedByPol || r.Desired != "running" || r.SnapshotID == "" {
				t.Errorf("ws-idle row %+v", r)
			}
		case "ws-busy":
			if !r.IdleWarnedAt.IsZero() {
				t.Errorf("ws-busy still shows the warning voided by its activity: %v", r.IdleWarnedAt)
			}
		}
	}
	if diff := cmp.Diff([]string{"genesis-ws-busy-1", "genesis-ws-other-1"}, names(h.droplets())); diff != "" {
		t.Errorf("droplets (-want +got):\n%s", diff)
	}

	// The wake fast path.
	for _, tc := range []struct {
		id   string
		want error
	}{{"ws-nobody", ErrUnknownTenant}, {"ws-other", ErrWakeConflict}} {
		if _, err := h.rec.Wake(ctx, tc.id, "test"); !errors.Is(err, tc.want) {
			t.Errorf("Wake(%s) = %v, want %v", tc.id, err, tc.want)
		}
	}
	row, err := h.rec.Wake(ctx, "ws-idle", "dashboard:alice")
	if err != nil || !row.WakeRequested {
		t.Fatalf("Wake = %+v, %v", row, err)
	}
	h.converge(ctx)
	if _, ok := h.droplets()["genesis-ws-idle-2"]; !ok {
		t.Fatalf("ws-idle not woken: %v", names(h.droplets()))
	}
	if n := h.count(`SELECT count(*) FROM audit_log WHERE action = 'wake.requested' AND actor = 'dashboard:alice'`); n != 1 {
		t.Errorf("wake.requested audit entries by the actor = %d, want 1", n)
	}
	st, _ := h.store.LoadStatus(ctx)
	if w := st["ws-idle"]; w.HibernatedByPolicy || w.WakeRequested || !w.IdleWarnedAt.IsZero() {
		t.Errorf("woken status %+v", w)
	}
}

// TestRetention: with the simulator's clock, the snapshot a hibernated
// tenant wakes from is never deleted, however old; a superseded snapshot
// and an absent tenant's go once the retention (720h) has passed.
func TestRetention(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	h.rec.cfg.Now = h.sim.Sim.Now
	h.state.WriteTenant(tenant("ws-keep", "running", "nyc3"))
	h.state.WriteTenant(tenant("ws-r", "running", "nyc3"))
	h.state.WriteTenant(tenant("ws-x", "running", "nyc3"))
	h.state.Commit("three tenants")
	h.converge(ctx)
	step := func(id, state string) {
		h.state.WriteTenant(tenant(id, state, "nyc3"))
		h.state.Commit(id + " " + state)
		h.converge(ctx)
		h.sim.Sim.Advance(time.Hour)
	}
	step("ws-r", "hibernated")
	step("ws-r", "running")
	step("ws-x", "hibernated")
	step("ws-r", "hibernated") // supersedes genesis-ws-r-1-snap
	step("ws-x", "absent")
	all := []string{"genesis-ws-r-1-snap", "genesis-ws-r-2-snap", "genesis-ws-x-1-snap"}
	if diff := cmp.Diff(all, h.snapshotNames()); diff != "" {
		t.Fatalf("snapshots (-want +got):\n%s", diff)
	}
	h.sim.Sim.Advance(715 * time.Hour) // just short of 720 h since any of them
	h.resync(ctx)
	if diff := cmp.Diff(all, h.snapshotNames()); diff != "" {
		t.Fatalf("deleted before the retention (-want +got):\n%s", diff)
	}
	h.sim.Sim.Advance(5 * time.Hour)
	h.resync(ctx)
	if diff := cmp.Diff([]string{"genesis-ws-r-2-snap"}, h.snapshotNames()); diff != "" {
		t.Fatalf("after the retention (-want +got):\n%s", diff)
	}
	h.sim.Sim.Advance(5000 * time.Hour)
	h.resync(ctx)
	if diff := cmp.Diff([]string{"genesis-ws-r-2-snap"}, h.snapshotNames()); diff != "" {
		t.Fatalf("the hibernated tenant's snapshot was deleted (-want +got):\n%s", diff)
	}
	if got := h.lifecycle("ws-r"); got != "HIBERNATED" {
		t.Errorf("ws-r lifecycle = %s", got)
	}
}

// TestHibernateDeadAgent: an enrolled agent that never confirms cannot
// hold a hibernation: after the prepare timeout the droplet is
// snapshotted anyway, and that is logged, audited and recorded.
func TestHibernateDeadAgent(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	var rendered []plan.Kind
	var mu sync.Mutex
	h.rec.cfg.Manifest = func(_ context.Context, a plan.Action) error {
		mu.Lock()
		rendered = append(rendered, a.Kind)
		mu.Unlock()
		return nil
	}
	h.rec.cfg.PrepareTimeout = 300 * time.Millisecond
	h.state.WriteTenant(tenant("ws-dead", "running", "nyc3"))
	h.state.WriteTenant(tenant("ws-keep", "running", "nyc3"))
	h.state.Commit("two tenants")
	h.converge(ctx)
	st, _ := h.store.LoadStatus(ctx)
	id, _ := age.GenerateX25519Identity()
	h.exec(`INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash) VALUES ($1, 'ws-dead', $2, $3, $4)`,
		st["ws-dead"].DropletID, id.Recipient().String(), make([]byte, 32), []byte(strings.Repeat("k", 32)))
	h.state.WriteTenant(tenant("ws-dead", "hibernated", "nyc3"))
	h.state.Commit("hibernate ws-dead")
	h.converge(ctx)
	if got := h.lifecycle("ws-dead"); got != "HIBERNATED" {
		t.Fatalf("ws-dead lifecycle = %s, want HIBERNATED", got)
	}
	if n := h.count(`SELECT count(*) FROM audit_log WHERE action = 'hibernate.unconfirmed' AND workspace = 'ws-dead' AND detail->>'result' = 'timeout'`); n != 1 {
		t.Errorf("hibernate.unconfirmed audit entries = %d, want 1", n)
	}
	if n := h.count(`SELECT count(*) FROM fleet_status WHERE workspace = 'ws-dead' AND hibernate_confirmed = false`); n != 1 {
		t.Error("fleet_status does not record the unconfirmed hibernation")
	}
	if n := h.count(`SELECT count(*) FROM operations WHERE workspace = 'ws-dead' AND kind = 'hibernate' AND state = 'succeeded'`); n != 1 {
		t.Error("the hibernation did not succeed")
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(rendered, plan.Hibernate) {
		t.Errorf("no manifest rendered for the hibernation: %v", rendered)
	}
}
