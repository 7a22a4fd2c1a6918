package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
	"genesis.dev/fleet/tenants"
)

// Objects is the object storage the service presigns for and cleans up:
// reconciler/objstore against S3 (DigitalOcean Spaces).
type Objects interface {
	PresignPut(ctx context.Context, key string, ttl time.Duration) (string, error)
	PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error)
	// Stat is the stored object's size; an error wrapping ErrNotFound
	// when there is none.
	Stat(ctx context.Context, key string) (int64, error)
	Remove(ctx context.Context, key string) error
}

// ErrNotFound is what Objects.Stat wraps for a missing object.
var ErrNotFound = errors.New("object not found")

// Errors of the agent-facing calls, mapped to HTTP statuses by agentapi.
var (
	// ErrDisabled: spec.backup is absent, or no storage or key is
	// configured (503).
	ErrDisabled = errors.New("backups are not configured")
	// ErrBusy: a backup of the workspace is in progress (429).
	ErrBusy = store.ErrBackupBusy
	// ErrUnknown: no such backup of the workspace (404).
	ErrUnknown = store.ErrNoBackup
	// ErrMismatch: the object in storage is not what the agent reports
	// (409); the backup is recorded failed.
	ErrMismatch = errors.New("the stored object does not match the report")
)

// URLTTL is how long a presigned URL is valid. A pending backup older
// than that can no longer be uploaded and is cleaned up.
const URLTTL = time.Hour

// Config is a Service's wiring.
type Config struct {
	Store   *store.Store
	Objects Objects
	Keys    *Keys
	// Prefix is prepended to object keys (spec.backup.storage.prefix).
	Prefix string
	// Desired is the latest desired state (the backup policy and tiers).
	Desired func() (tenants.Snapshot, bool)
	// Snapshots is each workspace's newest snapshot (nil: none known); a
	// snapshot is a copy too, so a tenant's recovery point is the newer of
	// it and its newest good backup.
	Snapshots func() map[string]SnapshotCopy
	// Live is, for each tenant whose droplet runs, since when
	// (store.LiveSince); nil: no tenant counts as live, so none is stale.
	Live func(ctx context.Context) (map[string]time.Time, error)
	// Registerer takes the Service's metrics (nil: not registered; the
	// Service is a prometheus.Collector either way).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// SnapshotCopy is a workspace's newest snapshot.
type SnapshotCopy struct {
	ID string
	At time.Time
}

// Service issues presigned URLs for agents' backups and restores, records
// backups, enforces retention and reports recovery points.
type Service struct {
	cfg     Config
	log     *slog.Logger
	results *prometheus.CounterVec

	mu     sync.Mutex
	points map[string]tenantPoint // by workspace, refreshed by Sweep
}

// New makes a Service; nil when cfg has no object storage or keys (then
// backups are disabled, and every call of a nil Service says
// ErrDisabled).
func New(cfg Config) *Service {
	if cfg.Store == nil || cfg.Objects == nil || cfg.Keys == nil {
		return nil
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, log: cfg.Logger.With("component", "backup"), results: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "genesis_backups_total",
		Help: "Backups agents finished, by result: succeeded (storage holds what the agent reported), failed (the agent reported an error, or the upload URL could not be made) or mismatch (storage holds nothing, or another size).",
	}, []string{"result"})}
	for _, r := range []string{resultSucceeded, resultFailed, resultMismatch} {
		s.results.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s)
	}
	return s
}

// Results of genesis_backups_total.
const (
	resultSucceeded = "succeeded"
	resultFailed    = "failed"
	resultMismatch  = "mismatch"
)

// policy is the fleet's backup declaration and the tenant's tier policy
// (ErrDisabled when backups are not declared).
func (s *Service) policy(ws string) (*schema.Backup, schema.BackupTier, error) {
	if s == nil {
		return nil, schema.BackupTier{}, ErrDisabled
	}
	snap, ok := s.cfg.Desired()
	if !ok || snap.Fleet == nil || !snap.Fleet.Spec.Backup.Enabled() {
		return nil, schema.BackupTier{}, ErrDisabled
	}
	b := snap.Fleet.Spec.Backup
	tier := schema.TierStarter
	if ts, ok := snap.Tenants[ws]; ok && ts.Tenant != nil {
		tier = ts.Tenant.Metadata.Tier
	}
	return b, b.Policy(tier), nil
}

var idRE = regexp.MustCompile(`^b-[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$`)

// ValidID reports whether id has the form of a backup id (outside input).
func ValidID(id string) bool { return idRE.MatchString(id) }

// Start records a pending backup of workspace ws by droplet and returns
// where to upload it.
func (s *Service) Start(ctx context.Context, ws string, droplet int64) (schema.BackupStart, error) {
	if _, _, err := s.policy(ws); err != nil {
		return schema.BackupStart{}, err
	}
	now := s.cfg.Now().UTC()
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return schema.BackupStart{}, err
	}
	id := "b-" + now.Format("20060102T150405Z") + "-" + hex.EncodeToString(rnd[:])
	key := s.cfg.Prefix + ws + "/" + id + ".age"
	if err := s.cfg.Store.BeginBackup(ctx, id, ws, droplet, key, now.Add(-URLTTL)); err != nil {
		return schema.BackupStart{}, err
	}
	url, err := s.cfg.Objects.PresignPut(ctx, key, URLTTL)
	if err != nil {
		if ferr := s.cfg.Store.FinishBackup(ctx, ws, id, 0, "", "presign: "+err.Error()); ferr != nil {
			s.log.Error("record failed backup", "tenant", ws, "backup", id, "err", ferr)
		} else {
			s.results.WithLabelValues(resultFailed).Inc()
		}
		return schema.BackupStart{}, fmt.Errorf("presign upload of %s: %w", id, err)
	}
	return schema.BackupStart{ID: id, URL: url, Expires: now.Add(URLTTL)}, nil
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Finish records how backup id of ws ended. A reported success counts only
// when storage holds an object of the reported size; otherwise the backup
// is recorded failed (ErrMismatch) and never counts as a copy.
func (s *Service) Finish(ctx context.Context, ws, id string, f schema.BackupFinish) error {
	if s == nil {
		return ErrDisabled
	}
	b, err := s.cfg.Store.GetBackup(ctx, ws, id)
	if err != nil {
		return err
	}
	if b.State != store.BackupPending {
		return fmt.Errorf("%w: backup %s is %s", ErrUnknown, id, b.State)
	}
	if f.Error != "" {
		if err := s.cfg.Store.FinishBackup(ctx, ws, id, 0, "", truncate(f.Error, 1000)); err != nil {
			return err
		}
		s.results.WithLabelValues(resultFailed).Inc()
		return nil
	}
	if f.Size <= 0 || !sha256RE.MatchString(f.SHA256) {
		return fmt.Errorf("backup %s: a success needs size > 0 and a hex sha256", id)
	}
	size, err := s.cfg.Objects.Stat(ctx, b.Key)
	switch {
	case errors.Is(err, ErrNotFound):
		err = fmt.Errorf("%w: no object %s", ErrMismatch, b.Key)
	case err != nil:
		return fmt.Errorf("check object %s: %w", b.Key, err) // storage down: the agent reports again
	case size != f.Size:
		err = fmt.Errorf("%w: object %s is %d bytes, the agent reports %d", ErrMismatch, b.Key, size, f.Size)
	}
	if err != nil {
		if ferr := s.cfg.Store.FinishBackup(ctx, ws, id, 0, "", err.Error()); ferr != nil {
			return ferr
		}
		s.results.WithLabelValues(resultMismatch).Inc()
		return err
	}
	if err := s.cfg.Store.FinishBackup(ctx, ws, id, f.Size, f.SHA256, ""); err != nil {
		return err
	}
	s.noteBackup(ws, id, b.Started)
	s.results.WithLabelValues(resultSucceeded).Inc()
	return nil
}

// Fetch is a presigned download of ws's good backup id.
func (s *Service) Fetch(ctx context.Context, ws, id string) (schema.BackupFetch, error) {
	if s == nil {
		return schema.BackupFetch{}, ErrDisabled
	}
	b, err := s.cfg.Store.GetBackup(ctx, ws, id)
	if err != nil {
		return schema.BackupFetch{}, err
	}
	if b.State != store.BackupGood {
		return schema.BackupFetch{}, fmt.Errorf("%w: backup %s is %s", ErrUnknown, id, b.State)
	}
	url, err := s.cfg.Objects.PresignGet(ctx, b.Key, URLTTL)
	if err != nil {
		return schema.BackupFetch{}, fmt.Errorf("presign download of %s: %w", id, err)
	}
	return schema.BackupFetch{ID: id, URL: url, SHA256: b.SHA256, Size: b.Size, Expires: s.cfg.Now().UTC().Add(URLTTL)}, nil
}

// Restored records that droplet (its name) of ws restored backup id, or
// why it refused (errMsg).
func (s *Service) Restored(ctx context.Context, ws, droplet, id, errMsg string) error {
	if s == nil {
		return ErrDisabled
	}
	return s.cfg.Store.FinishRestore(ctx, ws, droplet, id, truncate(errMsg, 1000))
}

// Section is the backup part of ws's manifest for a droplet whose age
// recipient is recipient, restoring restoreID ("": none); nil when
// backups are not declared. Its restore identity is sealed to the droplet
// only when seal is true (rendering compares inputs without sealing).
func (s *Service) Section(ctx context.Context, ws, droplet, recipient, restoreID string, seal bool) (*schema.ManifestBackup, error) {
	b, p, err := s.policy(ws)
	if errors.Is(err, ErrDisabled) {
		return nil, nil
	}
	own, err := s.cfg.Keys.Recipient(ws)
	if err != nil {
		return nil, err
	}
	mb := &schema.ManifestBackup{EverySeconds: int64(p.Every.Std() / time.Second), Recipients: append(append([]string{}, b.Recipients...), own)}
	if restoreID == "" {
		return mb, nil
	}
	bk, err := s.cfg.Store.GetBackup(ctx, ws, restoreID)
	if err != nil {
		return nil, fmt.Errorf("restore %s: %w", restoreID, err)
	}
	mb.Restore = &schema.ManifestRestore{ID: bk.ID, SHA256: bk.SHA256, Size: bk.Size, Created: bk.Started.UTC()}
	if !seal {
		return mb, nil
	}
	rec, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return nil, fmt.Errorf("droplet %s recipient: %w", droplet, err)
	}
	id, err := s.cfg.Keys.Identity(ws)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(id.String())
	if err != nil {
		return nil, err
	}
	sealed, _, err := sealing.Seal(rec, schema.SealedCredential{Workspace: ws, Droplet: droplet, Name: schema.BackupSlot(bk.ID), Data: data})
	clear(data)
	if err != nil {
		return nil, err
	}
	mb.Restore.Identity = sealed
	return mb, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
