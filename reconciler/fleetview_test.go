package reconciler

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/reconciler/fleetapi"
)

// TestFleetViewRenderings: GET /v1/fleet (and so the demo's table) shows
// NOT_CREATED, not PENDING, for tenants declared hibernated or absent that
// never had a droplet, for as long as that holds; and a tenant whose file
// was removed while its droplet lives shows desired "undeclared" and
// ORPHANED (its droplet is kept: deletion is explicit), not "running".
func TestFleetViewRenderings(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	h.state.WriteTenant(tenant("ws-run", "running", "nyc3"))
	h.state.WriteTenant(tenant("ws-gone", "running", "nyc3"))
	h.state.WriteTenant(tenant("ws-sleep", "hibernated", "nyc3"))
	h.state.WriteTenant(tenant("ws-never", "absent", "nyc3"))
	h.state.Commit("four tenants")
	h.converge(ctx)
	view := func() []string {
		t.Helper()
		rows, err := h.store.Fleet(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, tv := range fleetapi.View(rows, h.rec).Tenants {
			got = append(got, fmt.Sprintf("%s desired=%s %s", tv.Workspace, tv.Desired, tv.Lifecycle))
		}
		return got
	}
	want := []string{"ws-gone desired=running INITIALIZING", "ws-never desired=absent NOT_CREATED", "ws-run desired=running INITIALIZING",
		"ws-sleep desired=hibernated NOT_CREATED"}
	if diff := cmp.Diff(want, view()); diff != "" {
		t.Errorf("after onboarding (-want +got):\n%s", diff)
	}
	if err := os.Remove(filepath.Join(h.repo, "tenants/ws-gone.yaml")); err != nil {
		t.Fatal(err)
	}
	h.state.Commit("remove ws-gone's file")
	h.converge(ctx)
	want = []string{"ws-gone desired=undeclared ORPHANED", "ws-never desired=absent NOT_CREATED", "ws-run desired=running INITIALIZING",
		"ws-sleep desired=hibernated NOT_CREATED"}
	if diff := cmp.Diff(want, view()); diff != "" {
		t.Errorf("after removing a file (-want +got):\n%s", diff)
	}
	if got := len(h.droplets()); got != 2 {
		t.Errorf("droplets after removing a file = %d, want 2 (nothing destroyed)", got)
	}
}
