package reconciler

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/reconciler/plan"
)

// lockedBuffer is a bytes.Buffer the jobs' loggers may write to at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestRenderOnlyBounded: a commit that edits every tenant plans one
// update_manifest per tenant. They all run and are journaled, on at most
// renderOnlyWorkers jobs at once (one job each held a goroutine and a
// render per tenant at once, 100,000 at the scale run), and their action
// lines are at info for the first eachLogged only, after one line saying
// how many.
func TestRenderOnlyBounded(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	n := max(eachLogged, renderOnlyWorkers) + 10
	for i := range n {
		h.state.WriteTenant(tenant(fmt.Sprintf("ws-%03d", i), "running", "nyc3"))
	}
	h.state.Commit("onboard")
	h.converge(ctx)

	var logs lockedBuffer
	var inFlight, most, renders atomic.Int64
	cfg := h.rec.cfg
	cfg.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.Manifest = func(ctx context.Context, a plan.Action) error {
		if a.Kind != plan.UpdateManifest {
			return nil
		}
		now := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		renders.Add(1)
		time.Sleep(20 * time.Millisecond) // long enough for unbounded jobs to overlap
		return nil
	}
	h.rec = New(cfg)
	for i := range n {
		tn := tenant(fmt.Sprintf("ws-%03d", i), "running", "nyc3")
		tn.Metadata.Name = fmt.Sprintf("Edited %d", i)
		h.state.WriteTenant(tn)
	}
	h.state.Commit("edit every tenant")
	p := h.converge(ctx)
	if !p.Empty() {
		t.Fatalf("not converged: %v", p.Actions)
	}
	if renders.Load() != int64(n) {
		t.Errorf("%d update_manifest renders, want one per tenant (%d)", renders.Load(), n)
	}
	if m := most.Load(); m > renderOnlyWorkers || m < 2 {
		t.Errorf("at most %d renders at once, want between 2 and %d", m, renderOnlyWorkers)
	}
	var journaled int
	if err := h.store.Pool().QueryRow(ctx, `SELECT count(*) FROM operations WHERE kind = 'update_manifest' AND state = 'succeeded'`).Scan(&journaled); err != nil {
		t.Fatal(err)
	}
	if journaled != n {
		t.Errorf("%d update_manifest operations succeeded, want %d", journaled, n)
	}

	counts := map[string]int{}
	var summary map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if l["action"] == string(plan.UpdateManifest) {
			counts[fmt.Sprintf("%s/%s", l["msg"], l["level"])]++
		}
		if l["msg"] == "update_manifest for many tenants; past the first, their action lines at debug" {
			summary = l
		}
	}
	want := map[string]int{"action started/INFO": eachLogged, "action started/DEBUG": n - eachLogged,
		"action succeeded/INFO": eachLogged, "action succeeded/DEBUG": n - eachLogged}
	for k, v := range want {
		if counts[k] != v {
			t.Errorf("update_manifest log lines %v, want %v", counts, want)
			break
		}
	}
	if summary == nil || summary["level"] != "INFO" || summary["tenants"] != float64(n) {
		t.Errorf("summary line %v, want one at info with %d tenants", summary, n)
	}
}
