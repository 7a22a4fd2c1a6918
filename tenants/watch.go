package tenants

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"genesis.dev/fleet/schema"
)

// The Watcher's defaults.
const (
	DefaultPollInterval = 60 * time.Second
	DefaultDebounce     = 200 * time.Millisecond
)

// Syncer is what a Watcher drives: a Source or a DirSource.
type Syncer interface {
	Sync(ctx context.Context) (Snapshot, error)
}

// WatchConfig tunes a Watcher. The zero value polls every 60s ±10% and
// watches no folder.
type WatchConfig struct {
	// Interval is the nominal time between polls; DefaultPollInterval when 0.
	Interval time.Duration
	// Jitter turns the nominal interval into one wait; uniform ±10% when nil.
	// Spreading polls keeps replicas from fetching in lockstep.
	Jitter func(time.Duration) time.Duration
	// After is the clock; time.After when nil.
	After func(time.Duration) <-chan time.Time
	// WatchDir is a folder to watch with fsnotify: the DirSource's folder, or
	// the work tree of a local repository (whose .git is watched too, so a
	// commit is seen at once). Empty watches nothing.
	WatchDir string
	// Debounce is how long the folder must stay quiet after an event before
	// the reload; DefaultDebounce when 0. An editor's save is several events.
	Debounce time.Duration
	// Logger receives the watcher's logs; slog.Default() when nil.
	Logger *slog.Logger
	// OnSync, when set, is told how long each sync (fetch and load) took
	// and whether it failed (for metrics).
	OnSync func(took time.Duration, err error)
}

// Watcher syncs a source at start, on a jittered poll, on Trigger, and after
// changes in a watched folder, and hands each result to its owner. Only Run
// starts goroutines (fsnotify's own) and it stops them before it returns.
type Watcher struct {
	src     Syncer
	cfg     WatchConfig
	log     *slog.Logger
	trigger chan struct{}
}

// NewWatcher returns a Watcher of src; call Run to start it.
func NewWatcher(src Syncer, cfg WatchConfig) *Watcher {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultPollInterval
	}
	if cfg.Jitter == nil {
		cfg.Jitter = Jitter
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if cfg.Debounce <= 0 {
		cfg.Debounce = DefaultDebounce
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Watcher{src: src, cfg: cfg, log: cfg.Logger.With("component", "tenants"), trigger: make(chan struct{}, 1)}
}

// Jitter is the default WatchConfig.Jitter: d ±10%, uniformly.
func Jitter(d time.Duration) time.Duration {
	return d + time.Duration((rand.Float64()*0.2-0.1)*float64(d))
}

// Trigger asks for a sync now (the push webhook calls it). It never blocks;
// triggers arriving while a sync runs collapse into one more sync.
func (w *Watcher) Trigger() {
	select {
	case w.trigger <- struct{}{}:
	default:
	}
}

// Run syncs until ctx ends, calling deliver on Run's own goroutine after
// every sync with its result: a Snapshot, or an error (then the zero
// Snapshot; the source's Current is unchanged). deliver should return
// promptly; polls and triggers wait for it. Run returns nil when ctx ends,
// or an error when the folder cannot be watched.
func (w *Watcher) Run(ctx context.Context, deliver func(context.Context, Snapshot, error)) error {
	var events <-chan fsnotify.Event
	var watchErrs <-chan error
	var fw *fsnotify.Watcher
	if w.cfg.WatchDir != "" {
		var err error
		if fw, err = fsnotify.NewWatcher(); err != nil {
			return fmt.Errorf("watch %s: %w", w.cfg.WatchDir, err)
		}
		defer fw.Close()
		if err := w.addWatches(fw); err != nil {
			return err
		}
		events, watchErrs = fw.Events, fw.Errors
	}
	sync := func(reason string) {
		start := time.Now()
		snap, err := w.src.Sync(ctx)
		if ctx.Err() != nil {
			return
		}
		if w.cfg.OnSync != nil {
			w.cfg.OnSync(time.Since(start), err)
		}
		if err != nil {
			w.log.Warn("sync desired state failed", "reason", reason, "err", err)
		}
		deliver(ctx, snap, err)
	}

	sync("start")
	poll := w.cfg.After(w.cfg.Jitter(w.cfg.Interval))
	var quiet <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-poll:
			sync("poll")
			poll = w.cfg.After(w.cfg.Jitter(w.cfg.Interval))
		case <-w.trigger:
			sync("trigger")
			poll = w.cfg.After(w.cfg.Jitter(w.cfg.Interval))
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if ev.Has(fsnotify.Create) {
				// A state folder created after start (tenants/, templates/).
				if fi, err := os.Stat(ev.Name); err == nil && fi.IsDir() {
					_ = w.addWatches(fw)
				}
			}
			quiet = w.cfg.After(w.cfg.Debounce)
		case err, ok := <-watchErrs:
			if !ok {
				watchErrs = nil
				continue
			}
			w.log.Warn("watch state folder", "dir", w.cfg.WatchDir, "err", err)
		case <-quiet:
			quiet = nil
			sync("file change")
		}
	}
}

// addWatches watches the folders whose entries are state files, and a local
// repository's .git and branch refs. fsnotify is not recursive, and only
// these folders matter. Adding a watched folder again is harmless.
func (w *Watcher) addWatches(fw *fsnotify.Watcher) error {
	root := w.cfg.WatchDir
	if err := fw.Add(root); err != nil {
		return fmt.Errorf("watch %s: %w", root, err)
	}
	dirs := []string{"templates", schema.TemplatesDir, schema.TenantsDir, ".git"}
	if fi, err := os.Stat(filepath.Join(root, ".git")); err == nil && fi.IsDir() {
		heads := filepath.Join(root, ".git", "refs", "heads")
		_ = filepath.WalkDir(heads, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				rel, _ := filepath.Rel(root, p)
				dirs = append(dirs, filepath.ToSlash(rel))
			}
			return nil
		})
	}
	for _, d := range dirs {
		p := filepath.Join(root, filepath.FromSlash(d))
		if fi, err := os.Stat(p); err != nil || !fi.IsDir() {
			continue
		}
		if err := fw.Add(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("watch %s: %w", p, err)
		}
	}
	return nil
}
