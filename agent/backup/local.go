package backup

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/internal/atomicfile"
)

// Local keeps backups on the droplet's own disk, encrypted to the agent's
// own age identity: the copy of n8n's database and data directory taken
// right before n8n moves to another version. A failed upgrade restores it
// (n8n migrates its schema in place when it starts, so the previous image
// needs the database as it was), and a downgrade restores the newest one
// taken before an upgrade from the version it goes back to. They are taken
// and restored by the same Take and Restore as the backups shipped to
// storage.
//
// Dir holds the files and index.json, the record of which backup was taken
// before which upgrade; the newest Keep are kept.
type Local struct {
	// Dir is where the backups and their index live (0700).
	Dir string
	// Identity is the agent's own age identity; backups are encrypted to
	// its recipient.
	Identity *age.X25519Identity
	// Source is what a backup holds; Target is where Restore puts it.
	Source Source
	Target Target
	// Workspace binds the backups (Restore checks it).
	Workspace string
	// Keep is how many backups are kept (default 3).
	Keep int
	// Now defaults to time.Now.
	Now func() time.Time

	mu sync.Mutex
}

// LocalBackup is one local backup: taken before n8n moved From → To.
type LocalBackup struct {
	ID    string    `json:"id"`
	From  string    `json:"from"`
	To    string    `json:"to"`
	Taken time.Time `json:"taken"`
	File  string    `json:"file"` // base name in Dir
	Size  int64     `json:"size"`
}

const localIndex = "index.json"

// List returns the kept backups, oldest first. A missing index is none; a
// damaged one is an error (nothing is removed because of it).
func (l *Local) List() ([]LocalBackup, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.list()
}

func (l *Local) list() ([]LocalBackup, error) {
	data, err := os.ReadFile(filepath.Join(l.Dir, localIndex))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []LocalBackup
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(l.Dir, localIndex), err)
	}
	return list, nil
}

// Before returns the newest backup taken before an upgrade from version.
func (l *Local) Before(from string) (LocalBackup, bool, error) {
	list, err := l.List()
	if err != nil {
		return LocalBackup{}, false, err
	}
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].From == from {
			return list[i], true, nil
		}
	}
	return LocalBackup{}, false, nil
}

// Take backs up n8n (running at from) before it moves to to, records it,
// and drops the oldest backups beyond Keep.
func (l *Local) Take(ctx context.Context, from, to string) (LocalBackup, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.Identity == nil {
		return LocalBackup{}, errors.New("local backup: no identity")
	}
	list, err := l.list()
	if err != nil {
		return LocalBackup{}, err
	}
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		return LocalBackup{}, err
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	taken := now().UTC()
	id := "local-" + taken.Format("20060102T150405Z") + "-" + rand.Text()[:8]
	arch, err := Take(ctx, l.Source, Binding{Workspace: l.workspace(), BackupID: id, Created: taken, N8NVersion: from},
		[]age.Recipient{l.Identity.Recipient()}, l.Dir)
	if err != nil {
		return LocalBackup{}, err
	}
	b := LocalBackup{ID: id, From: from, To: to, Taken: taken, File: id + ".age", Size: arch.Size}
	if err := os.Rename(arch.Path, filepath.Join(l.Dir, b.File)); err != nil {
		arch.Remove()
		return LocalBackup{}, err
	}
	list = append(list, b)
	keep := cmp.Or(l.Keep, 3)
	var drop []LocalBackup
	if len(list) > keep {
		drop, list = slices.Clone(list[:len(list)-keep]), list[len(list)-keep:]
	}
	if err := l.save(list); err != nil {
		os.Remove(filepath.Join(l.Dir, b.File))
		return LocalBackup{}, err
	}
	for _, d := range drop {
		os.Remove(filepath.Join(l.Dir, filepath.Base(d.File)))
	}
	return b, nil
}

// Restore restores backup id into Target (n8n must be stopped: the data
// directory is swapped).
func (l *Local) Restore(ctx context.Context, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	list, err := l.list()
	if err != nil {
		return err
	}
	i := slices.IndexFunc(list, func(b LocalBackup) bool { return b.ID == id })
	if i < 0 {
		return fmt.Errorf("local backup %s: not kept", id)
	}
	if l.Identity == nil {
		return errors.New("local backup: no identity")
	}
	_, err = Restore(ctx, filepath.Join(l.Dir, filepath.Base(list[i].File)), []age.Identity{l.Identity},
		Binding{Workspace: l.workspace(), BackupID: id}, l.Target)
	return err
}

func (l *Local) workspace() string { return cmp.Or(l.Workspace, "local") }

// save writes the index (write, fsync, rename); l.mu is held.
func (l *Local) save(list []LocalBackup) error {
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(l.Dir, localIndex), data, 0o600)
}
