package reconciler

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/reconciler/plan"
)

// TestResizeRollback: a resize whose new droplet is created but never
// becomes active (its create action errors) destroys that droplet again,
// as a failed create does, and records the rollback. Before the kinds
// table (plan.KindInfo.CreatesDroplet, plan.Action.RollBack) the rollback
// listed create, wake, rebuild and create_spare but not resize, so the
// half-made droplet stayed behind.
func TestResizeRollback(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	// In front of the simulator: once armed, the next droplet create gets
	// an action that ends errored (the droplet exists, off, never active).
	var armed atomic.Bool
	target, err := url.Parse(h.sim.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v2/droplets" && armed.CompareAndSwap(true, false) {
			if _, err := h.sim.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultActionError, Count: 1}); err != nil {
				t.Error(err)
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	h.api = front.URL

	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.Commit("onboard")
	h.converge(ctx)
	before := h.droplets()
	if len(before) != 1 {
		t.Fatalf("droplets after onboarding = %v, want one", before)
	}

	bigger := tenant("ws-a", "running", "nyc3")
	bigger.Spec.Droplet.Size = "s-1vcpu-2gb"
	h.state.WriteTenant(bigger)
	h.state.Commit("resize")
	armed.Store(true)
	snap, err := h.src.Sync(ctx)
	h.rec.Deliver(ctx, snap, err)
	p, err := h.rec.Pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h.rec.Wait()
	if !slices.ContainsFunc(p.Actions, func(a plan.Action) bool { return a.Kind == plan.Resize }) {
		t.Fatalf("plan = %v, want a resize", p.Actions)
	}
	if armed.Load() {
		t.Fatal("the resize created no droplet")
	}
	if got := h.droplets(); len(got) != 0 {
		t.Fatalf("droplets after the failed resize = %v, want none (the old one snapshotted and destroyed, the new one rolled back)", got)
	}
	rows, err := h.store.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || !strings.Contains(rows[0].LastError, "rolled back") {
		t.Fatalf("fleet after the failed resize = %+v, want last_error naming the rollback", rows)
	}
}
