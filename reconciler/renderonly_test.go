package reconciler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/tenants"
)

// TestRenderOnlyBounded: tenants whose only action is update_manifest run
// on at most renderOnlyWorkers jobs at once (one job each held a goroutine
// and a render per tenant at once, 100,000 at the scale run). A change of
// a few tenants renders in its actions; a commit that edits more than
// eachLogged leaves the renders to the manifest sweep, and their action
// lines are at info for the first eachLogged only, after one line saying
// how many. Every action is journaled and records the tenant's new hash.
func TestRenderOnlyBounded(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	n := eachLogged + 10
	few := renderOnlyWorkers + 4
	if few > eachLogged {
		t.Fatalf("the test needs renderOnlyWorkers (%d) + 4 ≤ eachLogged (%d)", renderOnlyWorkers, eachLogged)
	}
	id := func(i int) string { return fmt.Sprintf("ws-%03d", i) }
	for i := range n {
		h.state.WriteTenant(tenant(id(i), "running", "nyc3"))
	}
	h.state.Commit("onboard")
	h.converge(ctx)

	var logs syncio.Buffer
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
	edit := func(round, count int) {
		for i := range count {
			tn := tenant(id(i), "running", "nyc3")
			tn.Metadata.Name = fmt.Sprintf("Edited %d %d", round, i)
			h.state.WriteTenant(tn)
		}
		h.state.Commit(fmt.Sprintf("edit %d tenants", count))
		if p := h.converge(ctx); !p.Empty() {
			t.Fatalf("not converged: %v", p.Actions)
		}
	}
	succeeded := func() int {
		var c int
		if err := h.store.Pool().QueryRow(ctx, `SELECT count(*) FROM operations WHERE kind = 'update_manifest' AND state = 'succeeded'`).Scan(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	hashesRecorded := func() {
		t.Helper()
		snap, _ := h.rec.Snapshot()
		var stale int
		if err := h.store.Pool().QueryRow(ctx, `SELECT count(*) FROM fleet_status f JOIN unnest($1::text[], $2::text[]) AS d(w, h) ON f.workspace = d.w WHERE f.tenant_hash IS DISTINCT FROM d.h`,
			snap.IDs(), hashesOf(snap)).Scan(&stale); err != nil {
			t.Fatal(err)
		}
		if stale != 0 {
			t.Errorf("%d tenants' recorded hash is not their file's", stale)
		}
	}

	// A few tenants: rendered in their actions, at most renderOnlyWorkers
	// at once, every line at info.
	edit(1, few)
	if renders.Load() != int64(few) || succeeded() != few {
		t.Errorf("%d renders, %d update_manifest operations succeeded; want %d each", renders.Load(), succeeded(), few)
	}
	if m := most.Load(); m > renderOnlyWorkers || m < 2 {
		t.Errorf("at most %d renders at once, want between 2 and %d", m, renderOnlyWorkers)
	}
	hashesRecorded()
	if c, _ := updateLines(t, logs.String()); c["action started/INFO"] != few || c["action succeeded/INFO"] != few || len(c) != 2 {
		t.Errorf("update_manifest log lines of a few tenants %v, want %d started and succeeded at info", c, few)
	}

	// Every tenant: no render of their own, every hash recorded, the
	// lines bounded.
	mark := len(logs.String())
	edit(2, n)
	if renders.Load() != int64(few) {
		t.Errorf("%d renders after editing %d tenants, want none beyond the first %d: the sweep renders a mass change", renders.Load(), n, few)
	}
	if got := succeeded(); got != few+n {
		t.Errorf("%d update_manifest operations succeeded, want %d", got, few+n)
	}
	hashesRecorded()
	counts, summary := updateLines(t, logs.String()[mark:])
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

// updateLines counts the update_manifest actions' lines of logs by
// message and level, and returns the mass change's summary line.
func updateLines(t *testing.T, logs string) (map[string]int, map[string]any) {
	t.Helper()
	counts := map[string]int{}
	var summary map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if line == "" {
			continue
		}
		var l map[string]any
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if l["action"] == string(plan.UpdateManifest) {
			counts[fmt.Sprintf("%s/%s", l["msg"], l["level"])]++
		}
		if msg, _ := l["msg"].(string); strings.HasPrefix(msg, "update_manifest for many tenants") {
			summary = l
		}
	}
	return counts, summary
}

// hashesOf is each of snap's tenants' desired hash, in snap.IDs order.
func hashesOf(snap tenants.Snapshot) []string {
	d := snap.Desired()
	var out []string
	for _, id := range snap.IDs() {
		out = append(out, d.Hashes[id])
	}
	return out
}
