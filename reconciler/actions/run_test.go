package actions

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// TestRenderAfter: after every kind whose row says RenderAfter succeeded,
// the manifest is rendered again for the droplet it recorded, and after
// no other. A resize records a new droplet as a create does; before the
// kinds table it was left to the next sweep.
func TestRenderAfter(t *testing.T) {
	var got []plan.Kind
	e := Executor{Manifest: func(_ context.Context, a plan.Action) error {
		got = append(got, a.Kind)
		return nil
	}}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, k := range plan.Kinds() {
		e.RenderAfter(t.Context(), plan.Action{Kind: k, Workspace: "ws-a"}, log)
	}
	want := []plan.Kind{plan.Wake, plan.Create, plan.Adopt, plan.Resize, plan.Rebuild}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("kinds rendered after (-want +got):\n%s", diff)
	}
	// Without a renderer nothing is called (and nothing panics).
	Executor{}.RenderAfter(t.Context(), plan.Action{Kind: plan.Resize}, log)
}

// TestDesiredOf: a tenant's actions work towards its declared state; a
// spare's towards running, or absent when one of them destroys it.
func TestDesiredOf(t *testing.T) {
	d := plan.Desired{Tenants: map[string]*schema.Tenant{"ws-a": {Spec: schema.TenantSpec{State: schema.StateHibernated}}}}
	for _, c := range []struct {
		ws      string
		actions []plan.Action
		want    schema.State
	}{
		{"ws-a", []plan.Action{{Kind: plan.Hibernate}}, schema.StateHibernated},
		{"spare-nyc3-1", []plan.Action{{Kind: plan.CreateSpare}}, schema.StateRunning},
		{"spare-nyc3-1", []plan.Action{{Kind: plan.DestroySpare}}, schema.StateAbsent},
		{"spare-nyc3-1", nil, schema.StateRunning},
	} {
		if got := DesiredOf(d, c.ws, c.actions); got != c.want {
			t.Errorf("DesiredOf(%s, %v) = %s, want %s", c.ws, c.actions, got, c.want)
		}
	}
}
