package converge_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/fakes/n8nemu"
	"genesis.dev/fleet/schema"
)

// TestProbeWorkflows: the workflows component counts the manifest's
// workflows active in n8n, following the listing's cursor past a page of
// hand-made ones, and names each one deactivated or deleted behind the
// agent's back until an apply brings it back; a restarted agent judges by
// the ids it recorded.
func TestProbeWorkflows(t *testing.T) {
	r := newRig(t)
	c := r.converger()
	ctx := context.Background()
	if h := c.ProbeWorkflows(ctx); !h.OK || !strings.Contains(h.Detail, "not set up yet") {
		t.Errorf("before n8n is set up: %+v", h)
	}
	if err := c.Apply(ctx, &schema.Manifest{Version: 1}, nil); err != nil {
		t.Fatal(err)
	}
	if h := c.ProbeWorkflows(ctx); !h.OK || h.Detail != "no managed workflows" {
		t.Errorf("no workflows declared: %+v", h)
	}
	// More active hand-made workflows than one page (250) holds, made
	// before ours: ours are on the second page.
	api := r.client.WithAPIKey(r.apiKey())
	for i := range 251 {
		spec, err := n8n.SpecFromExport(workflowJSON(fmt.Sprintf("Hand %d", i), fmt.Sprintf("hand-%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		wf, err := api.CreateWorkflow(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := api.ActivateWorkflow(ctx, wf.ID); err != nil {
			t.Fatal(err)
		}
	}
	m, plain := manifest(2, creds5, workflows4)
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	r.n8n.resetCalls()
	if h := c.ProbeWorkflows(ctx); !h.OK || h.Detail != "4 of 4 managed workflows active" {
		t.Errorf("converged: %+v", h)
	}
	if n := r.n8n.callCounts()["GET /api/v1/workflows"]; n != 2 {
		t.Errorf("%d listing requests, want 2 pages", n)
	}
	if w := r.n8n.writes(); w != 0 {
		t.Errorf("the probe wrote to n8n: %v", r.n8n.callCounts())
	}
	byName := map[string]string{}
	for _, wf := range r.n8n.emu.Workflows() {
		byName[wf.Name] = wf.ID
	}
	if _, err := api.DeactivateWorkflow(ctx, byName["Notify"]); err != nil {
		t.Fatal(err)
	}
	if h := c.ProbeWorkflows(ctx); h.OK || h.Detail != "3 of 4 managed workflows active; not active: notify" {
		t.Errorf("notify deactivated behind the agent's back: %+v", h)
	}
	if err := api.DeleteWorkflow(ctx, byName["Click Tracker"]); err != nil {
		t.Fatal(err)
	}
	restarted := r.converger()
	if h := restarted.ProbeWorkflows(ctx); h.OK || h.Detail != "2 of 4 managed workflows active; not active: click-tracker, notify" {
		t.Errorf("click-tracker deleted too, after a restart: %+v", h)
	}
	if err := restarted.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	if h := restarted.ProbeWorkflows(ctx); !h.OK || h.Detail != "4 of 4 managed workflows active" {
		t.Errorf("after the apply: %+v", h)
	}
	r.n8n.emu.SetMode(n8nemu.StartingUp)
	if h := restarted.ProbeWorkflows(ctx); h.OK || !strings.HasPrefix(h.Detail, "list active workflows: ") {
		t.Errorf("n8n starting up: %+v", h)
	}
	r.n8n.emu.SetMode(n8nemu.Ready)
	if why, ok := restarted.N8NDownOnPurpose(); ok {
		t.Errorf("n8n down on purpose (%s) while it should run", why)
	}
	// A hibernation stops n8n on purpose: nothing to list, no failure.
	asleep := *m
	asleep.Version, asleep.State = 3, string(schema.StateHibernated)
	if err := restarted.Apply(ctx, &asleep, plain); err != nil {
		t.Fatal(err)
	}
	if why, ok := restarted.N8NDownOnPurpose(); !ok || why != "hibernation" {
		t.Errorf("hibernated: down on purpose = %q, %v", why, ok)
	}
	if h := restarted.ProbeWorkflows(ctx); !h.OK || h.Detail != "not checked: n8n is down on purpose (hibernation)" {
		t.Errorf("hibernated: %+v", h)
	}
}
