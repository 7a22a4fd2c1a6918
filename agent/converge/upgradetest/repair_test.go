package upgradetest

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// TestN8NKilledRepairedLocally: the n8n container is killed while the
// agent lives (nothing restarts it); the agent's probe starts it again
// through the compose runtime and reports the repair, and n8n serves.
// A hibernation's stopped n8n is never restarted. When the restart itself
// fails, the probe says so and waits its backoff before the next try; the
// droplet stays degraded, and past the fleet's criticalAfter the
// watchdog's ladder takes over (watchdog tests).
func TestN8NKilledRepairedLocally(t *testing.T) {
	d := newDroplet(t)
	if err := d.apply(manifest(1, "1.123.81")); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if h := d.conv.ProbeN8N(ctx); !h.OK || h.Detail != "" {
		t.Fatalf("healthy n8n: %+v", h)
	}
	record := filepath.Join(d.dir, "engine", "genesis", "n8n.json")
	kill := func() {
		t.Helper()
		data, err := os.ReadFile(record)
		if err != nil {
			t.Fatal(err)
		}
		var r struct {
			PID int `json:"pid"`
		}
		if err := json.Unmarshal(data, &r); err != nil || r.PID == 0 {
			t.Fatalf("container record %s: %v", data, err)
		}
		if err := syscall.Kill(r.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, "n8n down", func() bool {
			rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			return d.client.Ready(rctx) != nil
		})
	}
	kill()
	h := d.conv.ProbeN8N(ctx)
	if !h.OK || !strings.HasPrefix(h.Detail, "repaired: n8n was down") || d.conv.N8NRepairs() != 1 {
		t.Fatalf("probe of a killed n8n: %+v, %d repairs", h, d.conv.N8NRepairs())
	}
	if err := d.client.Ready(ctx); err != nil {
		t.Fatalf("n8n after the repair: %v", err)
	}
	if h := d.conv.ProbeN8N(ctx); !h.OK || h.Detail != "" {
		t.Errorf("after the repair: %+v", h)
	}

	// A hibernation's manifest stops n8n on purpose: no restart; the wake
	// starts it again.
	asleep := manifest(2, "1.123.81")
	asleep.State = string(schema.StateHibernated)
	if err := d.apply(asleep); err != nil {
		t.Fatal(err)
	}
	if h := d.conv.ProbeN8N(ctx); h.OK || d.conv.N8NRepairs() != 1 {
		t.Errorf("a hibernating droplet's probe: %+v, %d repairs", h, d.conv.N8NRepairs())
	}
	if d.client.Ready(ctx) == nil {
		t.Error("n8n was started during a hibernation")
	}
	if err := d.apply(manifest(3, "1.123.81")); err != nil {
		t.Fatal(err)
	}
	if h := d.conv.ProbeN8N(ctx); !h.OK || h.Detail != "" {
		t.Errorf("after the wake: %+v", h)
	}
	// A backup or a restore holds repairs while it has n8n stopped.
	kill()
	release := d.conv.HoldRepairs()
	if h := d.conv.ProbeN8N(ctx); h.OK || d.conv.N8NRepairs() != 1 || d.client.Ready(ctx) == nil {
		t.Errorf("held: %+v, %d repairs", h, d.conv.N8NRepairs())
	}
	release()
	release() // twice is once
	if h := d.conv.ProbeN8N(ctx); !h.OK || d.conv.N8NRepairs() != 2 {
		t.Fatalf("second repair: %+v, %d repairs", h, d.conv.N8NRepairs())
	}

	// The restart fails (the container is gone: nothing to start).
	kill()
	if err := os.Remove(record); err != nil {
		t.Fatal(err)
	}
	h = d.conv.ProbeN8N(ctx)
	if h.OK || !strings.Contains(h.Detail, "restart 1 failed") {
		t.Fatalf("a failed restart: %+v", h)
	}
	h = d.conv.ProbeN8N(ctx)
	if h.OK || !strings.Contains(h.Detail, "1 restarts failed, next at") {
		t.Errorf("within the backoff: %+v", h)
	}
	if d.conv.N8NRepairs() != 2 {
		t.Errorf("repairs %d, want still 2", d.conv.N8NRepairs())
	}
}
