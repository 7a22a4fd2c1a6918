package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode/utf8"

	"filippo.io/age"

	"genesis.dev/fleet/agent/backup"
	"genesis.dev/fleet/internal/atomicfile"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
)

// BackupConfig turns on backups and restores (Config.Backup; nil: the
// agent neither takes nor restores backups, and reports none).
type BackupConfig struct {
	// Source is what a backup holds: n8n's database dump and data
	// directory.
	Source backup.Source
	// Target is where a restore goes.
	Target backup.Target
	// TmpDir holds a backup file while it uploads and a download while it
	// is restored (default: <state dir>/backup-tmp). It needs room for
	// one backup.
	TmpDir string
	// Stop and Start stop n8n for a restore and start it again (nil:
	// nothing to stop).
	Stop, Start func(ctx context.Context) error
	// BeforeTake runs before each backup is taken (nil: nothing): the
	// converger copies its n8n records (owner, key, ids) into n8n's data
	// directory so they travel with the data (converge.AccessDir).
	BeforeTake func() error
	// AfterRestore runs after a restore succeeded (nil: nothing): the
	// converger adopts the records the backup brought.
	AfterRestore func() error
	// HTTP talks to the object storage (presigned URLs); default
	// http.DefaultClient.
	HTTP *http.Client
	// Retry is how long after a failed backup the next try starts
	// (default 5 minutes, jittered; never later than the schedule).
	Retry time.Duration
	// FirstWithin spreads the first backup after a start over up to this
	// long (default 10 minutes, never more than the schedule), so a fleet
	// restarted at once does not back up at once.
	FirstWithin time.Duration
}

// backupFile in the state directory keeps when the last backup succeeded
// and which backup was restored, across restarts.
const backupFile = "backup.json"

// maxRestoreFetches bounds downloads of a backup that does not check out
// (size, SHA-256) before the restore is refused.
const maxRestoreFetches = 3

// backups is the agent's backup state.
type backups struct {
	cfg  *BackupConfig
	kick chan struct{}
	// one runs one backup at a time (the schedule's and an upgrade's).
	one sync.Mutex

	mu      sync.Mutex
	policy  *schema.ManifestBackup // of the applied manifest (nil: none)
	rec     backupRecord
	lastErr string
	fetches map[string]int // failed downloads by backup id
}

type backupRecord struct {
	LastOK time.Time `json:"last_ok,omitzero"`
	// Asked is the operator's backup request (ManifestBackup.RequestedAt)
	// a backup was taken for: a manifest asking with a different time
	// asks for another.
	Asked        time.Time `json:"asked,omitzero"`
	Restored     string    `json:"restored,omitempty"`
	Refused      string    `json:"refused,omitempty"` // the backup a refused restore named
	RestoreError string    `json:"restore_error,omitempty"`
}

func newBackups(cfg *BackupConfig, dir string) *backups {
	if cfg == nil {
		return nil
	}
	c := *cfg
	if c.TmpDir == "" {
		c.TmpDir = filepath.Join(dir, "backup-tmp")
	}
	if c.HTTP == nil {
		c.HTTP = http.DefaultClient
	}
	if c.Retry <= 0 {
		c.Retry = 5 * time.Minute
	}
	if c.FirstWithin <= 0 {
		c.FirstWithin = 10 * time.Minute
	}
	b := &backups{cfg: &c, kick: make(chan struct{}, 1), fetches: map[string]int{}}
	if data, err := os.ReadFile(filepath.Join(dir, backupFile)); err == nil {
		_ = json.Unmarshal(data, &b.rec) // a damaged record: start afresh
	}
	return b
}

// save writes the record (write, fsync, rename).
func (b *backups) save(dir string) error {
	b.mu.Lock()
	data, err := json.Marshal(b.rec)
	b.mu.Unlock()
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, backupFile), data, 0o600)
}

// report is the backup part of a heartbeat (nil: nothing to report).
func (b *backups) report() *schema.BackupReport {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.policy == nil && b.rec.Restored == "" && b.rec.RestoreError == "" {
		return nil
	}
	// Bounded: the reconciler refuses a heartbeat with longer strings
	// (1000), and a refused heartbeat would make the droplet look dead.
	return &schema.BackupReport{LastOK: b.rec.LastOK, LastError: clip(b.lastErr, 500), Restored: b.rec.Restored,
		RestoreError: clip(b.rec.RestoreError, 500)}
}

// clip cuts s to at most n bytes, on a rune boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// backupApplier runs a pending restore before the manifest is applied
// (so before n8n serves the tenant) and learns the backup policy.
type backupApplier struct {
	a     *Agent
	inner Applier
}

func (ba backupApplier) Apply(ctx context.Context, m *schema.Manifest, creds map[string]json.RawMessage) error {
	if err := ba.a.restoreFirst(ctx, m); err != nil {
		return err
	}
	// The policy first: an n8n upgrade in this apply backs up first.
	b := ba.a.bk
	b.mu.Lock()
	changed := (b.policy == nil) != (m.Backup == nil) || (m.Backup != nil && (b.policy.EverySeconds != m.Backup.EverySeconds ||
		!b.policy.RequestedAt.Equal(m.Backup.RequestedAt)))
	b.policy = m.Backup
	b.mu.Unlock()
	if changed {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return ba.inner.Apply(ctx, m, creds)
}

// restoreFirst restores the backup m names, once. A transient failure
// (the reconciler or storage unreachable) returns an error, so the
// manifest is applied only after a later try restored it; a backup that
// is refused (it does not open, is corrupt, truncated or bound to another
// workspace or backup) is reported and left: nothing was overwritten, and
// n8n runs on what it had.
func (a *Agent) restoreFirst(ctx context.Context, m *schema.Manifest) error {
	b := a.bk
	if m.Backup == nil || m.Backup.Restore == nil {
		return nil
	}
	r := m.Backup.Restore
	b.mu.Lock()
	done := b.rec.Restored == r.ID || b.rec.Refused == r.ID
	b.mu.Unlock()
	if done {
		return nil
	}
	log := a.log.With("backup", r.ID)
	refuse := func(err error) error {
		log.Error("restore refused; n8n keeps its data", "err", err)
		b.mu.Lock()
		b.rec.Refused, b.rec.RestoreError = r.ID, fmt.Sprintf("backup %s: %v", r.ID, err)
		b.mu.Unlock()
		if serr := b.save(a.cfg.State.Dir()); serr != nil {
			log.Error("record restore failed", "err", serr)
		}
		if rerr := a.client.Restored(ctx, a.credential(), r.ID, err.Error()); rerr != nil {
			log.Warn("report refused restore", "err", rerr)
		}
		return nil
	}
	plain, err := sealing.Open(a.cfg.State.Keys().Identity, schema.ManifestCredential{Name: schema.BackupSlot(r.ID), Sealed: r.Identity,
		SHA256: sealing.Digest(r.Identity)}, m.Workspace, m.Droplet)
	if err != nil {
		return refuse(fmt.Errorf("open the restore identity: %w", err))
	}
	var idText string
	err = json.Unmarshal(plain, &idText)
	clear(plain)
	if err != nil {
		return refuse(errors.New("the restore identity is not a JSON string"))
	}
	id, err := age.ParseX25519Identity(idText)
	if err != nil {
		return refuse(errors.New("the restore identity is not an age identity"))
	}
	f, err := a.client.FetchBackup(ctx, a.credential(), r.ID)
	if err != nil {
		var se *StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return refuse(fmt.Errorf("the reconciler has no such backup: %w", err))
		}
		return fmt.Errorf("restore %s: %w", r.ID, err)
	}
	if f.SHA256 != r.SHA256 || f.Size != r.Size {
		return refuse(errors.New("the reconciler's record of the backup differs from the manifest's"))
	}
	if err := os.MkdirAll(b.cfg.TmpDir, 0o700); err != nil {
		return fmt.Errorf("restore %s: %w", r.ID, err)
	}
	path, err := backup.Fetch(ctx, b.cfg.HTTP, f.URL, r.Size, r.SHA256, b.cfg.TmpDir)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("restore %s: %w", r.ID, err) // the agent is stopping: not a bad download
		}
		b.mu.Lock()
		b.fetches[r.ID]++
		n := b.fetches[r.ID]
		b.mu.Unlock()
		if n >= maxRestoreFetches {
			return refuse(fmt.Errorf("download failed %d times: %w", n, err))
		}
		return fmt.Errorf("restore %s: %w", r.ID, err)
	}
	defer os.Remove(path)
	// No backup while n8n's data is replaced and its login adopted: a
	// backup copies this droplet's login into the data directory, and
	// would take half-restored data.
	b.one.Lock()
	defer b.one.Unlock()
	if b.cfg.Stop != nil {
		if err := b.cfg.Stop(ctx); err != nil {
			return fmt.Errorf("restore %s: stop n8n: %w", r.ID, err)
		}
	}
	start := time.Now()
	_, rerr := backup.Restore(ctx, path, []age.Identity{id}, backup.Binding{Workspace: m.Workspace, BackupID: r.ID}, b.cfg.Target)
	if b.cfg.Start != nil {
		if err := b.cfg.Start(ctx); err != nil {
			log.Error("start n8n after the restore", "err", err)
		}
	}
	if rerr != nil {
		if ctx.Err() != nil {
			// Cut short by the agent stopping, not refused: nothing was
			// overwritten (a cut pg_restore rolls back), the next start
			// restores it.
			return fmt.Errorf("restore %s: %w", r.ID, rerr)
		}
		return refuse(rerr)
	}
	log.Info("backup restored", "took", time.Since(start), "created", r.Created)
	if b.cfg.AfterRestore != nil {
		if err := b.cfg.AfterRestore(); err != nil {
			// The data is back; n8n's login is not: the next apply
			// fails (401) and says so, nothing is overwritten.
			log.Error("adopt the restored n8n login", "err", err)
		}
	}
	b.mu.Lock()
	b.rec.Restored, b.rec.Refused, b.rec.RestoreError = r.ID, "", ""
	b.mu.Unlock()
	if err := b.save(a.cfg.State.Dir()); err != nil {
		log.Error("record restore failed", "err", err)
	}
	if err := a.client.Restored(ctx, a.credential(), r.ID, ""); err != nil {
		log.Warn("report restore", "err", err)
	}
	return nil
}

// backupLoop takes a backup every policy interval while the applied
// manifest asks for backups. A failed backup is retried after
// BackupConfig.Retry; storage or the reconciler being down only delays
// backups (n8n is never stopped for one).
func (a *Agent) backupLoop(ctx context.Context) error {
	b := a.bk
	// Spread a fleet's first backups after an upgrade or a restart.
	var next time.Time
	retrying := false // next is a failed backup's retry
	for {
		b.mu.Lock()
		p, last, served := b.policy, b.rec.LastOK, b.rec.Asked
		b.mu.Unlock()
		var wait time.Duration
		asked := p != nil && !p.RequestedAt.IsZero() && !p.RequestedAt.Equal(served)
		switch {
		case asked && !retrying:
			// An operator asked for a backup now.
		case asked:
			// A failed one is retried on the usual backoff.
			wait = next.Sub(a.cfg.Now())
		case p == nil || p.EverySeconds <= 0:
			wait = time.Hour // until a manifest asks (kick)
		default:
			every := time.Duration(p.EverySeconds) * time.Second
			if next.IsZero() {
				next = last.Add(every)
				if last.IsZero() || next.Before(a.cfg.Now()) {
					next = a.cfg.Now().Add(time.Duration(rand.Int64N(int64(min(every, b.cfg.FirstWithin)/time.Millisecond)+1)) * time.Millisecond)
				}
			}
			wait = next.Sub(a.cfg.Now())
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-b.kick:
				t.Stop()
				next, retrying = time.Time{}, false
				continue
			case <-t.C:
			}
		}
		if p == nil || (p.EverySeconds <= 0 && !asked) {
			continue
		}
		every := time.Duration(max(p.EverySeconds, 1)) * time.Second
		if asked {
			a.log.Info("backup asked for by an operator", "requested_at", p.RequestedAt)
		}
		retrying = false
		if err := a.backupOnce(ctx, p); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.log.Error("backup failed; n8n runs on", "err", err)
			b.mu.Lock()
			b.lastErr = err.Error()
			b.mu.Unlock()
			retry := b.cfg.Retry/2 + time.Duration(rand.Int64N(int64(b.cfg.Retry)))
			next = a.cfg.Now().Add(min(retry, every))
			retrying = true
		} else {
			next = a.cfg.Now().Add(every)
			if asked {
				b.mu.Lock()
				b.rec.Asked = p.RequestedAt
				b.mu.Unlock()
				if err := b.save(a.cfg.State.Dir()); err != nil {
					a.log.Error("record the operator's backup as taken failed; it may be taken again", "err", err)
				}
			}
		}
		a.heartbeatSoon()
	}
}

// BackupBeforeUpgrade takes a backup now when the droplet's manifest asks
// for backups (nil otherwise), for converge.Config.BeforeUpgrade: an n8n
// upgrade waits until its tenant's data has a fresh copy.
func (a *Agent) BackupBeforeUpgrade(ctx context.Context, from, to string) error {
	if a.bk == nil {
		return nil
	}
	a.bk.mu.Lock()
	p := a.bk.policy
	a.bk.mu.Unlock()
	if p == nil {
		return nil
	}
	a.log.Info("backup before the n8n upgrade", "from", from, "to", to)
	if err := a.backupOnce(ctx, p); err != nil {
		a.bk.mu.Lock()
		a.bk.lastErr = err.Error()
		a.bk.mu.Unlock()
		return err
	}
	return nil
}

// backupOnce takes one backup and uploads it: the reconciler records it
// good only once storage holds it.
func (a *Agent) backupOnce(ctx context.Context, p *schema.ManifestBackup) error {
	b := a.bk
	b.one.Lock()
	defer b.one.Unlock()
	recs := make([]age.Recipient, 0, len(p.Recipients))
	for _, r := range p.Recipients {
		rec, err := age.ParseX25519Recipient(r)
		if err != nil {
			return fmt.Errorf("backup recipient %q: %w", r, err)
		}
		recs = append(recs, rec)
	}
	if len(recs) == 0 {
		return errors.New("the manifest names no backup recipients")
	}
	cred := a.credential()
	st, err := a.client.StartBackup(ctx, cred)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(b.cfg.TmpDir, 0o700); err != nil {
		return err
	}
	taken := a.cfg.Now().UTC()
	start := time.Now()
	fail := func(err error) error {
		// Reported even when the agent is stopping (a short grace), so the
		// reconciler does not keep it pending until its sweep.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rerr := a.client.FinishBackup(rctx, cred, st.ID, schema.BackupFinish{Error: err.Error()}); rerr != nil {
			a.log.Warn("report failed backup", "backup", st.ID, "err", rerr)
		}
		return fmt.Errorf("backup %s: %w", st.ID, err)
	}
	if b.cfg.BeforeTake != nil {
		if err := b.cfg.BeforeTake(); err != nil {
			return fail(fmt.Errorf("copy n8n's login into the backup: %w", err))
		}
	}
	arch, err := backup.Take(ctx, b.cfg.Source, backup.Binding{Workspace: a.workspace(), Droplet: a.cfg.DropletID, BackupID: st.ID, Created: taken}, recs, b.cfg.TmpDir)
	if err != nil {
		return fail(err)
	}
	defer arch.Remove()
	if err := backup.Upload(ctx, b.cfg.HTTP, st.URL, arch); err != nil {
		return fail(err)
	}
	if err := a.client.FinishBackup(ctx, cred, st.ID, schema.BackupFinish{Size: arch.Size, SHA256: arch.SHA256}); err != nil {
		return fmt.Errorf("backup %s: report: %w", st.ID, err)
	}
	a.log.Info("backup taken", "backup", st.ID, "bytes", arch.Size, "took", time.Since(start))
	b.mu.Lock()
	b.rec.LastOK, b.lastErr = taken, ""
	b.mu.Unlock()
	if err := b.save(a.cfg.State.Dir()); err != nil {
		a.log.Warn("record backup", "err", err)
	}
	return nil
}
