package dosim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"
)

// Defaults DigitalOcean applies per token.
const (
	DefaultRatePerMinute = 250
	DefaultRatePerHour   = 5000
	// DefaultDropletLimit is the limit of an account added without one.
	DefaultDropletLimit = 25
)

// Account is one DigitalOcean account (team) the simulator serves.
type Account struct {
	Name         string `json:"name"`
	Token        string `json:"token,omitempty"`
	DropletLimit int    `json:"droplet_limit"`
}

var accountNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func (a Account) validate() error {
	if !accountNameRE.MatchString(a.Name) {
		return fmt.Errorf("account name %q: want 1-64 letters, digits, '.', '_' or '-'", a.Name)
	}
	if a.Token == "" {
		return fmt.Errorf("account %s: empty token", a.Name)
	}
	if a.DropletLimit < 0 {
		return fmt.Errorf("account %s: negative droplet limit", a.Name)
	}
	return nil
}

// Limits are the knobs that can change while the simulator runs.
type Limits struct {
	// RatePerMinute and RatePerHour bound requests per token over sliding
	// windows. Zero means DigitalOcean's default (250, 5000); negative means
	// unlimited.
	RatePerMinute int `json:"rate_per_minute"`
	RatePerHour   int `json:"rate_per_hour"`
	// BootDelay is how long a new droplet stays "new"; ActionDelay how long
	// an action stays "in-progress".
	BootDelay   Duration `json:"boot_delay"`
	ActionDelay Duration `json:"action_delay"`
	// FaultRate is the probability (0..1) that an API request fails with a
	// random 500.
	FaultRate float64 `json:"fault_rate"`
	// Latency is added (in real time) to every API request.
	Latency Duration `json:"latency"`
}

func (l Limits) normalized() Limits {
	if l.RatePerMinute == 0 {
		l.RatePerMinute = DefaultRatePerMinute
	}
	if l.RatePerHour == 0 {
		l.RatePerHour = DefaultRatePerHour
	}
	return l
}

func (l Limits) validate() error {
	switch {
	case l.BootDelay < 0:
		return errors.New("boot_delay is negative")
	case l.ActionDelay < 0:
		return errors.New("action_delay is negative")
	case l.Latency < 0:
		return errors.New("latency is negative")
	case l.FaultRate < 0 || l.FaultRate > 1 || l.FaultRate != l.FaultRate:
		return errors.New("fault_rate must be between 0 and 1")
	}
	return nil
}

// Config configures a Sim. The zero value is usable: no accounts (add them
// with AddAccount), DigitalOcean's rate limits, instant boot and actions.
type Config struct {
	Accounts []Account
	Limits   Limits
	// Seed makes request ids and random faults reproducible.
	Seed uint64
	// StatePath, when set, is a JSON file the state is loaded from by New
	// and written to (atomically) after every change.
	StatePath string
	// DiskRoot, when set, gives every droplet a directory
	// DiskRoot/droplets/<id> and every snapshot DiskRoot/snapshots/<id>.
	DiskRoot string
	// BootCmd, when set, runs with sh -c for every droplet that becomes
	// active; see the package documentation for its environment.
	BootCmd string
	// HookEnv is added to the boot command's environment (after the
	// process's own and before the DOSIM_* variables).
	HookEnv []string
	// HookOutput receives the boot commands' stdout and stderr (discarded
	// when nil).
	HookOutput io.Writer
	// WorkDir holds files the simulator hands to boot commands (user data).
	// When empty a temporary directory is created and removed by Close.
	WorkDir string
	// HookGrace is how long a stopped boot command gets between SIGTERM and
	// SIGKILL (default 3s).
	HookGrace time.Duration
	// Now is the base clock (time.Now when nil). Advance and Freeze act on
	// top of it.
	Now func() time.Time
	// Logger receives structured logs (discarded when nil).
	Logger *slog.Logger
	// PublicURL, when set, is the base (ending in "/") used in links instead
	// of one derived from the request's Host.
	PublicURL string
}

// Sim is a simulated DigitalOcean API. It is safe for concurrent use.
type Sim struct {
	cfg    Config
	log    *slog.Logger
	clock  *clock
	hooks  *hookRunner
	work   string
	ownDir bool

	// hookMu orders boot hook starts and stops: it is taken before mu is
	// released so events are applied in the order they were produced.
	hookMu sync.Mutex

	mu      sync.Mutex
	st      *state
	limits  Limits
	rng     *rand.Rand
	windows map[string]*window
	faults  []*Fault
	faultID int
	events  []hookEvent
	dirty   bool
	closed  bool
	closeCh chan struct{}
}

// New builds a simulator, loading Config.StatePath when it exists.
func New(cfg Config) (*Sim, error) {
	if err := cfg.Limits.validate(); err != nil {
		return nil, fmt.Errorf("limits: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "dosim")
	if cfg.HookGrace <= 0 {
		cfg.HookGrace = 3 * time.Second
	}
	s := &Sim{
		cfg:     cfg,
		log:     log,
		clock:   newClock(cfg.Now),
		st:      newState(),
		limits:  cfg.Limits,
		rng:     rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		windows: map[string]*window{},
		closeCh: make(chan struct{}),
	}
	if cfg.StatePath != "" {
		st, offset, err := loadState(cfg.StatePath)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("load state: %w", err)
		default:
			s.st = st
			s.clock.setOffset(offset)
		}
	}
	for _, a := range cfg.Accounts {
		if err := s.st.upsertAccount(a); err != nil {
			return nil, err
		}
	}
	if cfg.DiskRoot != "" {
		for _, d := range []string{"droplets", "snapshots"} {
			if err := os.MkdirAll(filepath.Join(cfg.DiskRoot, d), 0o755); err != nil {
				return nil, fmt.Errorf("disk root: %w", err)
			}
		}
	}
	s.work = cfg.WorkDir
	if s.work == "" {
		dir, err := os.MkdirTemp("", "dosim-")
		if err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
		s.work, s.ownDir = dir, true
	}
	if err := os.MkdirAll(filepath.Join(s.work, "userdata"), 0o700); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	out := cfg.HookOutput
	if out == nil {
		out = io.Discard
	}
	s.hooks = newHookRunner(cfg.BootCmd, out, cfg.HookGrace, log)
	// Droplets that were running before a restart boot again.
	s.update(func(now time.Time) error {
		for _, d := range s.st.sortedDroplets() {
			if err := s.writeUserData(d); err != nil {
				return err
			}
			if d.Status == statusActive {
				s.events = append(s.events, s.startEvent(d))
			}
		}
		s.dirty = true
		return nil
	})
	return s, nil
}

// Run settles the simulation on a short ticker (so boot hooks start and stop
// close to real time even when nobody polls) until ctx is done, then Closes.
func (s *Sim) Run(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return s.Close()
		case <-s.closeCh:
			return nil
		case <-t.C:
			s.update(func(time.Time) error { return nil })
		}
	}
}

// Close stops every boot command, writes the state one last time and removes
// the temporary work directory. It is safe to call more than once.
func (s *Sim) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closeCh)
	err := s.persistLocked()
	s.hookMu.Lock()
	s.mu.Unlock()
	s.hooks.stopAll()
	s.hookMu.Unlock()
	if s.ownDir {
		if rerr := os.RemoveAll(s.work); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}

// update runs fn under the state lock after settling the simulation at the
// current simulated time, persists the state when something changed and
// applies boot hook events in order.
func (s *Sim) update(fn func(now time.Time) error) error {
	s.mu.Lock()
	now := s.clock.Now()
	s.settleLocked(now)
	err := fn(now)
	if s.dirty && !s.closed {
		if perr := s.persistLocked(); perr != nil {
			s.log.Error("persist state", "err", perr)
		}
	}
	evs := s.events
	s.events = nil
	if s.closed {
		evs = nil
	}
	s.hookMu.Lock()
	s.mu.Unlock()
	defer s.hookMu.Unlock()
	for _, ev := range evs {
		s.hooks.apply(ev)
	}
	return err
}

func (s *Sim) persistLocked() error {
	if s.cfg.StatePath == "" {
		s.dirty = false
		return nil
	}
	_, _, offset := s.clock.state()
	if err := saveState(s.cfg.StatePath, s.st, offset); err != nil {
		return err
	}
	s.dirty = false
	return nil
}

// settleLocked completes every in-progress action due at or before now, in
// due order, applying its effect.
func (s *Sim) settleLocked(now time.Time) {
	if len(s.st.pending) == 0 {
		return
	}
	var due []*action
	for id := range s.st.pending {
		a := s.st.Actions[id]
		if a == nil {
			delete(s.st.pending, id)
			continue
		}
		if !a.DueAt.After(now) {
			due = append(due, a)
		}
	}
	sort.Slice(due, func(i, j int) bool {
		if !due[i].DueAt.Equal(due[j].DueAt) {
			return due[i].DueAt.Before(due[j].DueAt)
		}
		return due[i].ID < due[j].ID
	})
	for _, a := range due {
		s.completeLocked(a)
	}
}

func (s *Sim) completeLocked(a *action) {
	delete(s.st.pending, a.ID)
	at := a.DueAt
	a.CompletedAt = &at
	s.dirty = true
	if a.ReservedIP != "" {
		s.completeReservedIPActionLocked(a)
		return
	}
	d := s.st.Droplets[a.DropletID]
	if a.Fail || d == nil {
		a.Status = actionErrored
		if a.Type == "snapshot" && a.SnapshotID != 0 {
			s.removeDisk("snapshots", a.SnapshotID)
		}
		if a.Type == "create" && d != nil {
			// A failed create leaves the droplet off, never active.
			d.Status = statusOff
		}
		s.log.Info("action errored", "action", a.ID, "type", a.Type, "droplet", a.DropletID)
		return
	}
	a.Status = actionCompleted
	switch a.Type {
	case "create", "power_on":
		wasActive := d.Status == statusActive
		d.Status = statusActive
		if !wasActive {
			s.events = append(s.events, s.startEvent(d))
		}
	case "reboot", "power_cycle":
		d.Status = statusActive
		s.events = append(s.events, hookEvent{stop: true, droplet: d.ID}, s.startEvent(d))
	case "rename":
		d.Name = a.NewName
	case "power_off", "shutdown":
		if d.Status == statusActive {
			s.events = append(s.events, hookEvent{stop: true, droplet: d.ID})
		}
		d.Status = statusOff
	case "snapshot":
		size, _ := findSize(d.Size)
		snap := &snapshot{
			ID:          a.SnapshotID,
			Account:     a.Account,
			Name:        a.SnapshotName,
			DropletID:   d.ID,
			Region:      d.Region,
			MinDiskSize: size.Disk,
			SizeGB:      s.snapshotSizeGB(a.SnapshotID),
			CreatedAt:   at,
			Tags:        append([]string(nil), d.Tags...),
			Image:       d.Image,
		}
		s.st.Snapshots[snap.ID] = snap
		d.SnapshotIDs = append(d.SnapshotIDs, snap.ID)
	}
	s.log.Debug("action completed", "action", a.ID, "type", a.Type, "droplet", a.DropletID)
}

func (s *Sim) startEvent(d *droplet) hookEvent {
	ev := hookEvent{droplet: d.ID, env: []string{
		fmt.Sprintf("DOSIM_DROPLET_ID=%d", d.ID),
		"DOSIM_DROPLET_NAME=" + d.Name,
		"DOSIM_DROPLET_IP=" + d.IP,
		"DOSIM_DROPLET_TAGS=" + joinTags(d.Tags),
		"DOSIM_DROPLET_REGION=" + d.Region,
		"DOSIM_DROPLET_SIZE=" + d.Size,
		"DOSIM_ACCOUNT=" + d.Account,
		"DOSIM_USER_DATA_FILE=" + s.userDataPath(d.ID),
	}}
	ev.env = append(append([]string{}, s.cfg.HookEnv...), ev.env...)
	if s.cfg.DiskRoot != "" {
		ev.env = append(ev.env, "DOSIM_DISK_DIR="+s.diskPath("droplets", d.ID))
	}
	return ev
}

func joinTags(tags []string) string {
	out := ""
	for i, t := range tags {
		if i > 0 {
			out += ","
		}
		out += t
	}
	return out
}

func (s *Sim) userDataPath(id int) string {
	return filepath.Join(s.work, "userdata", fmt.Sprint(id))
}

func (s *Sim) writeUserData(d *droplet) error {
	return os.WriteFile(s.userDataPath(d.ID), []byte(d.UserData), 0o600)
}

func (s *Sim) limitsLocked() Limits { return s.limits.normalized() }
