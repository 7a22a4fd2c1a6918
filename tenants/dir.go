package tenants

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-git/go-git/v5/plumbing"

	"genesis.dev/fleet/schema"
)

// DirSource reads a state repository folder as it is on disk, committed or
// not: the demo, "genesis plan --state DIR" on a pull request's checkout,
// and editing with instant feedback (a Watcher with WatchDir set reloads it
// shortly after each save). Its snapshots carry no commit and it has no
// history to guard. Like Source it re-parses only files whose content
// changed: a file whose size and modification time are unchanged is not
// even read, and one whose content hashes to the same git blob is not
// parsed again.
type DirSource struct {
	dir string
	log *slog.Logger

	mu    sync.Mutex // serializes Sync; guards ix and seen
	ix    *index
	seen  map[string]stamp
	state sync.Mutex // guards current
	cur   Snapshot
}

// stamp is what was last seen of a file on disk.
type stamp struct {
	size  int64
	mtime time.Time
	blob  plumbing.Hash
}

// NewDirSource reads the state repository in dir. logger may be nil
// (slog.Default()).
func NewDirSource(dir string, logger *slog.Logger) *DirSource {
	if logger == nil {
		logger = slog.Default()
	}
	return &DirSource{
		dir:  dir,
		log:  logger.With("component", "tenants", "dir", dir),
		ix:   newIndex(),
		seen: map[string]stamp{},
	}
}

// Dir is the folder read.
func (d *DirSource) Dir() string { return d.dir }

// Stats counts the parsing work done so far.
func (d *DirSource) Stats() Stats { return d.ix.stats() }

// Current is the last Snapshot Sync returned.
func (d *DirSource) Current() Snapshot {
	d.state.Lock()
	defer d.state.Unlock()
	return d.cur
}

// Sync reads the folder and returns its desired state, re-parsing only
// files whose content changed since the previous Sync.
func (d *DirSource) Sync(ctx context.Context) (Snapshot, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if fi, err := os.Stat(d.dir); err != nil {
		return Snapshot{}, fmt.Errorf("read state folder: %w", err)
	} else if !fi.IsDir() {
		return Snapshot{}, fmt.Errorf("read state folder: %s is not a directory", d.dir)
	}
	seen := map[string]stamp{}
	data := map[string][]byte{} // read while hashing, handed to the index
	// look stats p and returns it as a listed file, or nil when missing.
	look := func(p string) (*file, error) {
		fi, err := os.Stat(filepath.Join(d.dir, filepath.FromSlash(p)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			return nil, nil
		}
		if old, ok := d.seen[p]; ok && old.size == fi.Size() && old.mtime.Equal(fi.ModTime()) {
			seen[p] = old
			return &file{path: p, blob: old.blob}, nil
		}
		st := stamp{size: fi.Size(), mtime: fi.ModTime()}
		if fi.Size() > schema.MaxFileSize {
			// Never read: a stand-in blob that changes with the stamp.
			st.blob = plumbing.ComputeHash(plumbing.BlobObject, fmt.Appendf(nil, "oversize %d %d", fi.Size(), fi.ModTime().UnixNano()))
		} else {
			b, err := os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(p)))
			if err != nil {
				return nil, err
			}
			st.blob = plumbing.ComputeHash(plumbing.BlobObject, b)
			data[p] = b
		}
		seen[p] = st
		return &file{path: p, blob: st.blob}, nil
	}
	list := func(dir string, match func(string) bool) ([]file, error) {
		entries, err := os.ReadDir(filepath.Join(d.dir, filepath.FromSlash(dir)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var files []file
		for _, e := range entries {
			if e.IsDir() || !match(e.Name()) {
				continue
			}
			f, err := look(dir + "/" + e.Name())
			if err != nil {
				return nil, err
			}
			if f != nil {
				files = append(files, *f)
			}
		}
		return files, nil
	}

	var l listing
	var err error
	if l.fleet, err = look(schema.FleetFile); err != nil {
		return Snapshot{}, fmt.Errorf("read state folder: %w", err)
	}
	isJSON := func(n string) bool { return strings.HasSuffix(n, ".json") }
	if l.templates, err = list(schema.TemplatesDir, isJSON); err != nil {
		return Snapshot{}, fmt.Errorf("read state folder: %w", err)
	}
	tenants, err := list(schema.TenantsDir, isTenantFile)
	if err != nil {
		return Snapshot{}, fmt.Errorf("read state folder: %w", err)
	}
	l.tenants = func() ([]file, error) { return tenants, nil }
	read := func(f file) ([]byte, error) {
		if seen[f.path].size > schema.MaxFileSize {
			return nil, tooLarge()
		}
		if b, ok := data[f.path]; ok {
			return b, nil
		}
		// Hashed at an earlier Sync but not parsed then: cannot happen, as
		// the index parses every new blob; read again to be safe.
		return os.ReadFile(filepath.Join(d.dir, filepath.FromSlash(f.path)))
	}
	snap, err := d.ix.update(ctx, l, read)
	if err != nil {
		return Snapshot{}, fmt.Errorf("load state folder: %w", err)
	}
	d.seen = seen
	snap.Time = time.Now()
	d.state.Lock()
	d.cur = snap
	d.state.Unlock()
	if len(snap.Changed) > 0 || snap.FleetChanged {
		d.log.Info("loaded desired state", "tenants", len(snap.Tenants), "invalid", d.ix.invalid,
			"changed", len(snap.Changed), "errors", len(snap.Errors))
	}
	return snap, nil
}
