package tenants

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/testkit"
)

// generous bounds waits on real events; no test asserts how fast they are.
const generous = 30 * time.Second

// runWatcher runs w until the test ends and returns the delivered results.
func runWatcher(t *testing.T, w *Watcher) <-chan result {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	results := make(chan result, 64)
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(_ context.Context, s Snapshot, err error) { results <- result{s, err} })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return results
}

type result struct {
	snap Snapshot
	err  error
}

// waitFor waits for a delivered snapshot satisfying ok.
func waitFor(t *testing.T, results <-chan result, what string, ok func(Snapshot) bool) Snapshot {
	t.Helper()
	timeout := time.After(generous)
	for {
		select {
		case r := <-results:
			if r.err == nil && ok(r.snap) {
				return r.snap
			}
		case <-timeout:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestWatchDirReloadsOnSave(t *testing.T) {
	r := newExampleRepo(t) // a work tree; DirSource ignores git
	src := NewDirSource(r.Dir, quietLogger())
	// Polls never fire on their own: only fsnotify can cause the reload.
	w := NewWatcher(src, WatchConfig{WatchDir: r.Dir, Interval: time.Hour, Logger: quietLogger(),
		After: func(d time.Duration) <-chan time.Time {
			if d == time.Hour || d > 50*time.Minute {
				return nil
			}
			return time.After(d)
		}})
	results := runWatcher(t, w)
	waitFor(t, results, "the first load", func(s Snapshot) bool { return len(s.Tenants) == len(exampleIDs) })

	before := src.Stats()
	p := "tenants/ws-stark.yaml"
	r.Write(p, strings.Replace(r.Read(p), "Stark Industries", "Stark Enterprises", 1))
	snap := waitFor(t, results, "the reload after an edit", func(s Snapshot) bool {
		st := s.Tenants["ws-stark"]
		return st.Tenant != nil && st.Tenant.Metadata.Name == "Stark Enterprises"
	})
	if diff := cmp.Diff(snap.Changed, []string{"ws-stark"}); diff != "" {
		t.Errorf("changed (-got +want):\n%s", diff)
	}
	if got := src.Stats().TenantParses - before.TenantParses; got != 1 {
		t.Errorf("tenant parses: got %d, want 1", got)
	}

	// A new file in a folder created after the watch started.
	r.Write("templates/workflows/new-flow.json", `{"name":"n","nodes":[],"connections":{}}`)
	waitFor(t, results, "a new template", func(s Snapshot) bool { return s.Templates["new-flow"] != nil })

	// A broken save is reported, keeping the last valid version.
	r.Write(p, "spec: [\n")
	waitFor(t, results, "the broken save", func(s Snapshot) bool {
		st := s.Tenants["ws-stark"]
		return st.Status == StatusInvalid && st.Tenant != nil && st.Tenant.Metadata.Name == "Stark Enterprises"
	})
}

func TestWatchLocalRepoSeesCommit(t *testing.T) {
	r := newExampleRepo(t)
	src := openLocal(t, r.Dir)
	w := NewWatcher(src, WatchConfig{WatchDir: r.Dir, Interval: time.Hour, Logger: quietLogger(),
		After: func(d time.Duration) <-chan time.Time {
			if d > 50*time.Minute {
				return nil
			}
			return time.After(d)
		}})
	results := runWatcher(t, w)
	waitFor(t, results, "the first load", func(s Snapshot) bool { return len(s.Tenants) == len(exampleIDs) })
	r.Write("tenants/ws-committed.yaml", testkit.TenantYAML(tenant("ws-committed", "nyc1")))
	head := r.Commit("onboard")
	waitFor(t, results, "the commit", func(s Snapshot) bool { return s.Commit == head && s.Tenants["ws-committed"].Status == StatusValid })
}

// countingSyncer is a Syncer that counts calls and can fail.
type countingSyncer struct {
	mu    sync.Mutex
	calls int
	err   error
}

func (c *countingSyncer) Sync(context.Context) (Snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	return Snapshot{Commit: strings.Repeat("a", 40)}, c.err
}

// fakeClock hands out timers the test fires by hand.
type fakeClock struct {
	mu     sync.Mutex
	waits  []time.Duration
	timers chan chan time.Time
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	f.mu.Lock()
	f.waits = append(f.waits, d)
	f.mu.Unlock()
	f.timers <- c
	return c
}

func TestWatchPollsWithJitterAndTriggers(t *testing.T) {
	clock := &fakeClock{timers: make(chan chan time.Time, 16)}
	src := &countingSyncer{}
	w := NewWatcher(src, WatchConfig{Interval: time.Minute, After: clock.After, Logger: quietLogger()})
	results := runWatcher(t, w)

	next := func(what string) result {
		t.Helper()
		select {
		case r := <-results:
			return r
		case <-time.After(generous):
			t.Fatalf("timed out waiting for the %s sync", what)
			return result{}
		}
	}
	timer := func() chan time.Time {
		t.Helper()
		select {
		case c := <-clock.timers:
			return c
		case <-time.After(generous):
			t.Fatal("timed out waiting for a poll timer")
			return nil
		}
	}
	next("start")
	poll := timer()
	poll <- time.Now()
	next("poll")
	timer()
	w.Trigger()
	next("trigger")
	timer()

	src.mu.Lock()
	src.err = errors.New("fetch failed")
	src.mu.Unlock()
	w.Trigger()
	w.Trigger() // collapses into the pending one, or runs after it
	if r := next("failing"); r.err == nil {
		t.Error("a failed sync was delivered without its error")
	}

	clock.mu.Lock()
	defer clock.mu.Unlock()
	for _, d := range clock.waits {
		if d < 54*time.Second || d > 66*time.Second {
			t.Errorf("poll wait %v is outside 60s ±10%%", d)
		}
	}
}

func TestJitterSpreads(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := Jitter(time.Minute)
		if d < 54*time.Second || d > 66*time.Second {
			t.Fatalf("Jitter(1m) = %v", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("Jitter gave only %d distinct waits in 1000", len(seen))
	}
}
