package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"genesis.dev/fleet/schema"
)

// WatchConfig configures Watch.
type WatchConfig struct {
	Slots Slots
	// Poll is how often the healthy marker is looked for; default 1s.
	Poll   time.Duration
	Logger *slog.Logger
	Now    func() time.Time
}

// Watch judges the pending upgrade of cfg.Slots: it runs as a process of
// its own (the old build's upgrade-watch), holding the watch lock, until
// the new build wrote its healthy marker (commit: pending removed, the old
// slot kept as the fallback) or the deadline passed (rollback: the
// rejection recorded, current switched back, pending removed, the service
// restarted so the old build runs). A new build that crashes at start
// never writes the marker, so a crash loop ends in the rollback too.
func Watch(ctx context.Context, cfg WatchConfig) error {
	if cfg.Poll <= 0 {
		cfg.Poll = time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	log := cfg.Logger.With("component", "agent-upgrade-watch")
	lockPath := filepath.Join(cfg.Slots.Root, watchLockFile)
	var lk *os.File
	var err error
	for i := 0; ; i++ {
		// The old agent probes the lock while it waits for us: retry a
		// little before taking it for another watcher's.
		if lk, err = tryLock(lockPath); err == nil || !errors.Is(err, errLocked) || i == 100 {
			break
		}
		sleep(ctx, 20*time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("upgrade watch: %s: %w", lockPath, err)
	}
	defer lk.Close()
	p, ok, err := cfg.Slots.ReadPending()
	if err != nil {
		return fmt.Errorf("upgrade watch: %w", err)
	}
	if !ok {
		log.Info("no pending upgrade")
		return nil
	}
	log = log.With("version", p.Version, "from_version", p.FromVersion, "deadline", p.Deadline)
	log.Info("watching agent upgrade")
	for {
		if h, ok := ReadHealthy(p.StateDir); ok && h.Version == p.Version {
			log.Info("new agent reported healthy; upgrade committed")
			return commitPending(cfg.Slots)
		}
		if !cfg.Now().Before(p.Deadline) {
			reason := fmt.Sprintf("agent %s sent no healthy heartbeat within %s; rolled back to %s", p.Version, p.Timeout, p.FromVersion)
			log.Warn("new agent not healthy by the deadline; rolling back")
			if err := rollback(cfg.Slots, p, reason, cfg.Now()); err != nil {
				return fmt.Errorf("upgrade watch: %w", err)
			}
			return restartService(ctx, log, p.Restart)
		}
		if !sleep(ctx, cfg.Poll) {
			// Stopped: leave pending for the next agent's Resume.
			return nil
		}
	}
}

func commitPending(s Slots) error {
	if err := os.Remove(s.PendingPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return syncDir(s.Root)
}

// rollback records the rejection first (so that no later start can take
// the unfinished rollback for an upgrade never tried), then switches
// current back and removes pending.
func rollback(s Slots, p Pending, reason string, now time.Time) error {
	rj, err := OpenRejections(p.StateDir)
	if err != nil {
		return err
	}
	if err := rj.Add(schema.Rejection{Version: p.Manifest, Part: schema.RejectAgent, Target: p.Version, Reason: reason, At: now.UTC()}); err != nil {
		return err
	}
	if err := s.Switch(p.From); err != nil {
		return err
	}
	return commitPending(s)
}

func restartService(ctx context.Context, log *slog.Logger, argv []string) error {
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out, err := exec.CommandContext(rctx, argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		log.Error("restart the agent service", "command", argv, "err", err, "output", clip(string(out), 500))
		return fmt.Errorf("upgrade watch: restart %q: %w", argv, err)
	}
	log.Info("agent service restarted into the old build", "command", argv)
	return nil
}

// Resume judges, at the agent's start, a pending upgrade whose watcher is
// gone (a reboot or a kill mid-upgrade). While a watcher holds the lock it
// is left to it. Otherwise, deterministically:
//
//   - the new build's healthy marker is there: commit;
//   - current points at the old slot and this is the old build: the
//     switch never happened; pending is dropped, nothing is rejected;
//   - else: roll back as the watcher would (rejection recorded, current
//     switched back, pending removed), the reason saying the watcher was
//     gone.
//
// It reports restart when this process is the new build and must exit so
// that the service manager starts the old one. A pending file that does
// not parse is set aside (pending.json.bad) and current left as it is.
// The rejection is written to the state directory's file: open
// u.Rejections after Resume.
func (u *Upgrader) Resume() (restart bool, err error) {
	log := u.log()
	p, ok, err := u.Slots.ReadPending()
	if err != nil {
		log.Error("pending upgrade unreadable; set aside, current left as it is", "err", err)
		return false, os.Rename(u.Slots.PendingPath(), u.Slots.PendingPath()+".bad")
	}
	if !ok {
		return false, nil
	}
	lk, err := tryLock(filepath.Join(u.Slots.Root, watchLockFile))
	if errors.Is(err, errLocked) {
		log.Info("agent upgrade pending; its watcher is running", "version", p.Version, "deadline", p.Deadline)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer lk.Close()
	log = log.With("version", p.Version, "from_version", p.FromVersion)
	if h, ok := ReadHealthy(p.StateDir); ok && h.Version == p.Version {
		log.Info("pending agent upgrade had reported healthy; committed (its watcher was gone)")
		return false, commitPending(u.Slots)
	}
	if active, _ := u.Slots.Active(); active == p.From && u.Version == p.FromVersion {
		log.Info("pending agent upgrade never switched; dropped")
		return false, commitPending(u.Slots)
	}
	reason := fmt.Sprintf("agent %s sent no healthy heartbeat before its upgrade watcher stopped (e.g. a reboot); rolled back to %s", p.Version, p.FromVersion)
	log.Warn("pending agent upgrade without a watcher; rolling back")
	if err := rollback(u.Slots, p, reason, u.now()); err != nil {
		return false, err
	}
	return u.Version == p.Version, nil
}
