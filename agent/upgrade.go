package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"genesis.dev/fleet/schema"
)

// The agent upgrades itself A/B. Its root directory (Slots.Root) holds two
// slots and a symlink the service manager executes:
//
//	<root>/slots/a/genesis-agent
//	<root>/slots/b/genesis-agent
//	<root>/current -> slots/a/genesis-agent
//	<root>/pending.json        an upgrade switched to but not yet proven
//	<root>/watch.lock          flock held by the upgrade's watcher
//	<root>/upgrade-watch.log   a detached watcher's log
//
// and the state directory gets agent-healthy.json from every agent after
// the first heartbeat the reconciler accepted. See Upgrader.Apply, Watch
// and Upgrader.Resume for the three halves of the story.

// ErrRestart is what Agent.Run returns after it switched the current
// symlink to a new agent build: the process should exit so that the
// service manager starts the new build.
var ErrRestart = errors.New("agent: switched to a new agent build; exit to restart into it")

// MaxAgentSize bounds an agent download.
const MaxAgentSize = 256 << 20

// Files of the upgrade.
const (
	slotsDir      = "slots"
	currentLink   = "current"
	binaryName    = "genesis-agent"
	pendingFile   = "pending.json"
	watchLockFile = "watch.lock"
	// WatchLogFile is where a detached watcher logs (in the root).
	WatchLogFile = "upgrade-watch.log"
	healthyFile  = "agent-healthy.json"
)

// Slots is the A/B layout of agent binaries under Root.
type Slots struct{ Root string }

// Binary is the path of slot's binary.
func (s Slots) Binary(slot string) string { return filepath.Join(s.Root, slotsDir, slot, binaryName) }

// Current is the symlink the service manager executes.
func (s Slots) Current() string { return filepath.Join(s.Root, currentLink) }

// PendingPath is where a pending upgrade is recorded.
func (s Slots) PendingPath() string { return filepath.Join(s.Root, pendingFile) }

// Active is the slot current points at ("a" or "b").
func (s Slots) Active() (string, error) {
	target, err := os.Readlink(s.Current())
	if err != nil {
		return "", fmt.Errorf("agent slots: %w", err)
	}
	for _, slot := range []string{"a", "b"} {
		if target == filepath.Join(slotsDir, slot, binaryName) || target == s.Binary(slot) {
			return slot, nil
		}
	}
	return "", fmt.Errorf("agent slots: %s points at %q, not a slot", s.Current(), target)
}

// Switch points current at slot atomically: a temporary symlink renamed
// over it, then the directory synced.
func (s Slots) Switch(slot string) error {
	if slot != "a" && slot != "b" {
		return fmt.Errorf("agent slots: no slot %q", slot)
	}
	tmp := s.Current() + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Join(slotsDir, slot, binaryName), tmp); err != nil {
		return fmt.Errorf("agent slots: %w", err)
	}
	if err := os.Rename(tmp, s.Current()); err != nil {
		return fmt.Errorf("agent slots: %w", err)
	}
	return syncDir(s.Root)
}

// Install makes the layout with bin as slot a, the current one: what the
// first install does (cloud-init's genesis-agent-install does the same in
// shell). A root that has a current symlink already is left alone.
func Install(root, bin string) error {
	s := Slots{Root: root}
	if _, err := os.Lstat(s.Current()); err == nil {
		return nil
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(s.Binary("a")), 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	if err := writeFileAtomic(s.Binary("a"), data, 0o755); err != nil {
		return fmt.Errorf("install agent: %w", err)
	}
	return s.Switch("a")
}

func otherSlot(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Pending is an upgrade the old agent switched to and its watcher has not
// yet judged. The old agent writes it before it starts the watcher; the
// watcher (or, when the watcher died, the next agent to start) removes it.
type Pending struct {
	From        string `json:"from"`         // the slot rolled back to
	To          string `json:"to"`           // the slot switched to
	FromVersion string `json:"from_version"` // the build in From
	Version     string `json:"version"`      // the build in To, as pinned
	// Manifest is the manifest version that asked for the build.
	Manifest int64     `json:"manifest"`
	Deadline time.Time `json:"deadline"`
	// Timeout is what Deadline was set from (for the rejection's reason).
	Timeout time.Duration `json:"timeout"`
	// StateDir is the agent's state directory: the new agent's healthy
	// marker appears there, and the rejection is recorded there.
	StateDir string `json:"state_dir"`
	// Restart is the command that restarts the agent's service.
	Restart []string `json:"restart"`
}

var buildVersion = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$`)

// ParsePending reads a pending upgrade strictly. The file is the agent's
// own, but a torn disk must give an error, never a panic or a guess.
func ParsePending(data []byte) (Pending, error) {
	var p Pending
	if err := schema.DecodeStrict(data, &p); err != nil {
		return Pending{}, fmt.Errorf("%s: %w", pendingFile, err)
	}
	bad := func(what string) (Pending, error) { return Pending{}, fmt.Errorf("%s: bad %s", pendingFile, what) }
	switch {
	case (p.From != "a" && p.From != "b") || p.To != otherSlot(p.From):
		return bad("slots")
	case !buildVersion.MatchString(p.Version) || p.FromVersion == "" || len(p.FromVersion) > 200:
		return bad("version")
	case p.Deadline.IsZero() || p.Timeout <= 0:
		return bad("deadline")
	case !filepath.IsAbs(p.StateDir):
		return bad("state_dir")
	case len(p.Restart) == 0 || p.Restart[0] == "":
		return bad("restart")
	}
	return p, nil
}

// ReadPending returns the root's pending upgrade (false: none).
func (s Slots) ReadPending() (Pending, bool, error) {
	data, err := os.ReadFile(s.PendingPath())
	if errors.Is(err, fs.ErrNotExist) {
		return Pending{}, false, nil
	}
	if err != nil {
		return Pending{}, false, err
	}
	p, err := ParsePending(data)
	return p, err == nil, err
}

// Healthy is the marker an agent writes in its state directory once the
// reconciler accepted one of its heartbeats.
type Healthy struct {
	Version string    `json:"version"`
	At      time.Time `json:"at"`
}

// ReadHealthy returns the marker in dir (false: none, or unreadable).
func ReadHealthy(dir string) (Healthy, bool) {
	data, err := os.ReadFile(filepath.Join(dir, healthyFile))
	if err != nil {
		return Healthy{}, false
	}
	var h Healthy
	if err := schema.DecodeStrict(data, &h); err != nil || h.Version == "" {
		return Healthy{}, false
	}
	return h, true
}

// WriteHealthy records that the agent of version reported healthy.
func WriteHealthy(dir, version string, now time.Time) error {
	data, err := json.Marshal(Healthy{Version: version, At: now.UTC()})
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, healthyFile), data, 0o600)
}

// BareVersion is a version string without the "genesis-agent/" the
// binary prints: the form agent pins use.
func BareVersion(v string) string { return strings.TrimPrefix(strings.TrimSpace(v), "genesis-agent/") }

// Upgrader installs the agent build a manifest pins beside the running one
// and switches to it (Apply), and judges a pending upgrade at start
// (Resume).
type Upgrader struct {
	Slots Slots
	// StateDir is the agent's state directory.
	StateDir string
	// Version is the running build (bare, as pins name it).
	Version    string
	Rejections *Rejections
	// HTTP downloads builds (default: 5 minute timeout).
	HTTP *http.Client
	// MaxSize bounds a download; default MaxAgentSize.
	MaxSize int64
	// Deadline is how long the new build has to report healthy.
	Deadline time.Duration
	// StartWatcher starts `<old> upgrade-watch --pending FILE` so that it
	// outlives this process (systemd-run, or a detached child).
	StartWatcher func(ctx context.Context, oldBinary, pendingPath string) error
	// Restart is the command that restarts the agent's service, recorded
	// for the watcher.
	Restart []string
	Logger  *slog.Logger
	Now     func() time.Time

	healthyOnce sync.Once
}

func (u *Upgrader) now() time.Time {
	if u.Now == nil {
		return time.Now()
	}
	return u.Now()
}

func (u *Upgrader) log() *slog.Logger {
	if u.Logger == nil {
		return slog.Default().With("component", "agent-upgrade")
	}
	return u.Logger.With("component", "agent-upgrade")
}

// Apply brings the running agent to pin (nil: keep it). A pin naming
// another build than the last rejected one clears that rejection; a
// rejected build is not tried again. Otherwise the build is downloaded,
// checked against the pinned SHA-256, written to the inactive slot and
// asked its version; then the pending upgrade is recorded, the watcher
// started, current switched, and ErrRestart returned. Any failure before
// the switch leaves current as it was and is returned (the caller backs
// off before it tries the same build again).
func (u *Upgrader) Apply(ctx context.Context, manifest int64, pin *schema.AgentPin) error {
	keep := ""
	if pin != nil {
		keep = pin.Version
	}
	if err := u.Rejections.Forget(schema.RejectAgent, keep, manifest); err != nil {
		return fmt.Errorf("agent upgrade: %w", err)
	}
	if pin == nil || pin.Version == u.Version {
		return nil
	}
	log := u.log().With("version", pin.Version, "running", u.Version, "manifest_version", manifest)
	if r, ok := u.Rejections.Rejected(schema.RejectAgent, pin.Version); ok {
		log.Debug("agent build rejected before; not trying it again", "reason", r.Reason)
		return nil
	}
	from, err := u.Slots.Active()
	if err != nil {
		return fmt.Errorf("agent upgrade to %s: %w", pin.Version, err)
	}
	to := otherSlot(from)
	log = log.With("from_slot", from, "to_slot", to)
	log.Info("agent upgrade: downloading")
	if err := u.download(ctx, pin, u.Slots.Binary(to)); err != nil {
		return fmt.Errorf("agent upgrade to %s: %w", pin.Version, err)
	}
	log.Info("agent upgrade: downloaded and verified; checking that it runs")
	if err := checkVersion(ctx, u.Slots.Binary(to), pin.Version); err != nil {
		return fmt.Errorf("agent upgrade to %s: %w", pin.Version, err)
	}
	// A marker from an earlier run must not pass for the new build's.
	if err := os.Remove(filepath.Join(u.StateDir, healthyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("agent upgrade to %s: %w", pin.Version, err)
	}
	p := Pending{From: from, To: to, FromVersion: u.Version, Version: pin.Version, Manifest: manifest,
		Deadline: u.now().Add(u.Deadline).UTC(), Timeout: u.Deadline, StateDir: u.StateDir, Restart: u.Restart}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(u.Slots.PendingPath(), data, 0o600); err != nil {
		return fmt.Errorf("agent upgrade to %s: record pending: %w", pin.Version, err)
	}
	undo := func(err error) error {
		_ = os.Remove(u.Slots.PendingPath())
		return fmt.Errorf("agent upgrade to %s: %w", pin.Version, err)
	}
	log.Info("agent upgrade: pending recorded; starting the watcher", "deadline", p.Deadline)
	if err := u.StartWatcher(ctx, u.Slots.Binary(from), u.Slots.PendingPath()); err != nil {
		return undo(fmt.Errorf("start watcher: %w", err))
	}
	if err := u.waitWatcher(ctx, 30*time.Second); err != nil {
		return undo(err)
	}
	if err := u.Slots.Switch(to); err != nil {
		return undo(err)
	}
	log.Info("agent upgrade: switched; exiting to restart into the new build")
	return ErrRestart
}

// download fetches pin.URL into path (through a temporary file beside it)
// and checks its size and SHA-256 before the rename.
func (u *Upgrader) download(ctx context.Context, pin *schema.AgentPin, path string) error {
	pu, err := url.Parse(pin.URL)
	if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
		return errors.New("download: the pin's URL is not http(s)")
	}
	client := u.HTTP
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Minute}
	}
	limit := u.MaxSize
	if limit <= 0 {
		limit = MaxAgentSize
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pin.URL, nil)
	if err != nil {
		return fmt.Errorf("download from %s: %w", pu.Host, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		// The URL may carry a signature: name its host only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("download from %s: %w", pu.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download from %s: %s", pu.Host, resp.Status)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+binaryName+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(resp.Body, limit+1))
	if err == nil && n > limit {
		err = fmt.Errorf("over %d bytes", limit)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("download from %s: %w", pu.Host, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != pin.SHA256 {
		f.Close()
		return fmt.Errorf("download from %s: SHA-256 is %s, the manifest pins %s: refused", pu.Host, got, pin.SHA256)
	}
	return finishTemp(f, path, 0o755)
}

// checkVersion runs `bin version` and wants version.
func checkVersion(ctx context.Context, bin, version string) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(cctx, bin, "version")
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("new build: %s version: %w", bin, err)
	}
	if got := BareVersion(out.String()); got != version {
		return fmt.Errorf("new build reports version %q, the manifest pins %q", clip(got, 80), version)
	}
	return nil
}

// waitWatcher waits until the watcher holds the watch lock.
func (u *Upgrader) waitWatcher(ctx context.Context, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		lk, err := tryLock(filepath.Join(u.Slots.Root, watchLockFile))
		if errors.Is(err, errLocked) {
			return nil
		}
		if err != nil {
			return err
		}
		lk.Close()
		if time.Now().After(deadline) {
			return fmt.Errorf("the watcher did not start within %s", within)
		}
		if !sleep(ctx, 50*time.Millisecond) {
			return ctx.Err()
		}
	}
}

var errLocked = errors.New("locked")

// tryLock takes path's flock without waiting; errLocked when another
// process holds it.
func tryLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, err
	}
	return f, nil
}

// MarkHealthy writes the healthy marker once per process: the agent calls
// it after each heartbeat the reconciler accepted.
func (u *Upgrader) MarkHealthy() {
	u.healthyOnce.Do(func() {
		if err := WriteHealthy(u.StateDir, u.Version, u.now()); err != nil {
			u.log().Error("write healthy marker", "err", err)
			return
		}
		u.log().Info("healthy marker written", "version", u.Version)
	})
}

// upgradeLoop brings the agent to the build the applied manifest pins: at
// start and after every accepted manifest. A failed try is reported with
// the apply error and not repeated for the same digest before a capped
// backoff (RetryMax doubling up to an hour) passes, whatever manifests
// arrive meanwhile. It returns ErrRestart after a switch.
func (a *Agent) upgradeLoop(ctx context.Context) error {
	bo := Backoff{min: a.cfg.RetryMax, max: time.Hour}
	var failed string // the digest that failed last
	var retryAt time.Time
	for {
		var wait <-chan time.Time
		m, err := appliedManifest(a.cfg.State.Applied())
		switch {
		case err != nil || m == nil:
		case m.Agent != nil && m.Agent.SHA256 == failed && time.Now().Before(retryAt):
			wait = time.After(time.Until(retryAt))
		default:
			err = a.cfg.Upgrader.Apply(ctx, m.Version, m.Agent)
			if errors.Is(err, ErrRestart) {
				return err
			}
			if err != nil && ctx.Err() == nil {
				if m.Agent == nil || m.Agent.SHA256 != failed {
					bo.Reset()
				}
				d := bo.Next()
				failed, retryAt = "", time.Now().Add(d)
				if m.Agent != nil {
					failed = m.Agent.SHA256
				}
				wait = time.After(d)
				a.log.Error("agent upgrade failed", "err", err, "retry_in", d)
			} else {
				failed = ""
				bo.Reset()
			}
			a.mu.Lock()
			changed := a.upgradeError != errString(err)
			a.upgradeError = errString(err)
			a.mu.Unlock()
			if changed {
				a.heartbeatSoon()
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.upgradeKick:
		case <-wait:
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
