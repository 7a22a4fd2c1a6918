package converge_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/n8nemu"
	"genesis.dev/fleet/schema"
)

// TestHibernateStopsThenWakeStarts: a manifest saying state: hibernated
// stops n8n through the runtime (once) and touches nothing else; the record
// survives a restart (the snapshot keeps the disk), and the woken droplet's
// running manifest starts n8n before it converges.
func TestHibernateStopsThenWakeStarts(t *testing.T) {
	r := newRig(t)
	r.runtime.onStop = func() { r.n8n.emu.SetMode(n8nemu.Down) }
	r.runtime.onStart = func() { r.n8n.emu.SetMode(n8nemu.Ready) }
	ctx := context.Background()
	m, plain := manifest(1, creds5, workflows4, "track.acme.com")
	c := r.converger()
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	loads, _ := r.caddy.state()

	h, hplain := manifest(2, creds5, workflows4, "track.acme.com")
	h.State = string(schema.StateHibernated)
	for range 2 {
		if err := c.Apply(ctx, h, hplain); err != nil {
			t.Fatalf("apply hibernated manifest: %v", err)
		}
	}
	if diff := cmp.Diff([]string{"stop"}, r.runtime.calls); diff != "" {
		t.Errorf("runtime calls (-want +got):\n%s", diff)
	}
	if !c.N8NStopped() {
		t.Error("N8NStopped() = false after a hibernated manifest")
	}
	if l, _ := r.caddy.state(); l != loads {
		t.Errorf("caddy loads %d → %d: a hibernated manifest changed Caddy", loads, l)
	}

	// The woken droplet: a new converger over the same disk.
	c2 := r.converger()
	if !c2.N8NStopped() {
		t.Fatal("the stopped record did not survive a restart")
	}
	w, wplain := manifest(1, creds5, workflows4, "track.acme.com", "go.acme.com")
	w.State = string(schema.StateRunning)
	if err := c2.Apply(ctx, w, wplain); err != nil {
		t.Fatalf("apply woken manifest: %v", err)
	}
	if diff := cmp.Diff([]string{"stop", "start"}, r.runtime.calls); diff != "" {
		t.Errorf("runtime calls (-want +got):\n%s", diff)
	}
	if c2.N8NStopped() || r.runtime.stopped {
		t.Error("n8n still stopped after a running manifest")
	}
	converged(t, r, w, wplain)
}
