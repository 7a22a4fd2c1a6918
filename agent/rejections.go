package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"genesis.dev/fleet/internal/atomicfile"
	"genesis.dev/fleet/schema"
)

// rejectionsFile in the state directory holds the changes the agent gave
// up on, so a restart (or an agent rolled back by its watcher) does not try
// them again.
const rejectionsFile = "rejections.json"

// Rejections remembers manifest changes this droplet tried, failed and
// undid: an n8n version that did not pass its checks, an agent build that
// did not report healthy. A rejected target is not tried again while the
// manifest keeps asking for it; a manifest asking for another target of
// the same part clears it (Forget). Every heartbeat reports the list, and
// a rollout counts such a droplet as failed. Safe for concurrent use; each
// change is written to disk (atomically) before it returns.
type Rejections struct {
	path string
	mu   sync.Mutex
	list []schema.Rejection
}

// OpenRejections reads dir's list (empty when there is none). A file that
// does not parse is an error: the caller decides (it is the agent's own
// file, so a broken one means a broken disk).
func OpenRejections(dir string) (*Rejections, error) {
	r := &Rejections{path: filepath.Join(dir, rejectionsFile)}
	data, err := os.ReadFile(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, &r.list); err != nil {
		return nil, fmt.Errorf("%s: %w", r.path, err)
	}
	return r, nil
}

// Rejected returns the rejection of target for part, if any.
func (r *Rejections) Rejected(part, target string) (schema.Rejection, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.list {
		if x.Part == part && x.Target == target {
			return x, true
		}
	}
	return schema.Rejection{}, false
}

// Add records a rejection (replacing an older one of the same part), its
// reason clipped to 500 bytes, newest first, at most
// schema.MaxRejections.
func (r *Rejections) Add(x schema.Rejection) error {
	if len(x.Reason) > 500 {
		x.Reason = x.Reason[:500]
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	list := slices.DeleteFunc(slices.Clone(r.list), func(o schema.Rejection) bool { return o.Part == x.Part })
	list = append([]schema.Rejection{x}, list...)
	if len(list) > schema.MaxRejections {
		list = list[:schema.MaxRejections]
	}
	return r.save(list)
}

// Forget drops the rejection of part unless it is of keep (the target
// manifest version asks for): a newer manifest that asks for something
// else ends it. A manifest not newer than the rejected one (the agent
// reapplying the one it ran before, at a restart) ends nothing.
func (r *Rejections) Forget(part, keep string, version int64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	list := slices.DeleteFunc(slices.Clone(r.list), func(o schema.Rejection) bool {
		return o.Part == part && o.Target != keep && version > o.Version
	})
	if len(list) == len(r.list) {
		return nil
	}
	return r.save(list)
}

// List returns the rejections, newest first (nil when there are none).
func (r *Rejections) List() []schema.Rejection {
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.list) == 0 {
		return nil
	}
	return slices.Clone(r.list)
}

// save writes list and makes it current; r.mu is held.
func (r *Rejections) save(list []schema.Rejection) error {
	data, err := json.Marshal(list)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(r.path, data, 0o600); err != nil {
		return err
	}
	r.list = list
	return nil
}
