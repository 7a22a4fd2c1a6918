package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/objstore"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// fleetObjects is backup.Objects for the bucket genesis.yaml's
// spec.backup.storage names, with the keys read from the environment
// variables it names. The client follows the declaration: a changed
// storage section makes a new one at the next call; a missing key or
// section is an error (backups wait; n8n never does).
type fleetObjects struct {
	desired func() (tenants.Snapshot, bool)
	getenv  func(string) string

	mu  sync.Mutex
	key schema.BackupStorage
	cl  *objstore.Client
}

func (o *fleetObjects) client() (*objstore.Client, error) {
	snap, ok := o.desired()
	if !ok || snap.Fleet == nil || !snap.Fleet.Spec.Backup.Enabled() {
		return nil, backup.ErrDisabled
	}
	s := snap.Fleet.Spec.Backup.Storage
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cl != nil && o.key == s {
		return o.cl, nil
	}
	access, secret := o.getenv(s.AccessKeyEnv), o.getenv(s.SecretKeyEnv)
	if access == "" || secret == "" {
		return nil, fmt.Errorf("%w: spec.backup.storage: $%s or $%s is empty", backup.ErrDisabled, s.AccessKeyEnv, s.SecretKeyEnv)
	}
	region := s.Region
	if region == "" {
		region = "us-east-1"
	}
	cl, err := objstore.New(objstore.Config{Endpoint: s.Endpoint, Region: region, Bucket: s.Bucket, Prefix: s.Prefix, AccessKey: access, SecretKey: secret})
	if err != nil {
		return nil, err
	}
	o.cl, o.key = cl, s
	return cl, nil
}

func (o *fleetObjects) PresignPut(ctx context.Context, key string, ttl time.Duration) (string, error) {
	cl, err := o.client()
	if err != nil {
		return "", err
	}
	return cl.PresignPut(ctx, key, ttl)
}

func (o *fleetObjects) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	cl, err := o.client()
	if err != nil {
		return "", err
	}
	return cl.PresignGet(ctx, key, ttl)
}

func (o *fleetObjects) Stat(ctx context.Context, key string) (int64, error) {
	cl, err := o.client()
	if err != nil {
		return 0, err
	}
	n, err := cl.Stat(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		return 0, fmt.Errorf("%w: %w", backup.ErrNotFound, err)
	}
	return n, err
}

func (o *fleetObjects) Remove(ctx context.Context, key string) error {
	cl, err := o.client()
	if err != nil {
		return err
	}
	return cl.Remove(ctx, key)
}

// loadBackupKeys reads --backup-key (nil, nil: none given, backups are
// off).
func loadBackupKeys(path string, log *slog.Logger) (*backup.Keys, error) {
	if path == "" {
		log.Info("backups off: no --backup-key", "component", "backup")
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --backup-key: %w", err)
	}
	keys, err := backup.NewKeys(data)
	clear(data)
	if err != nil {
		return nil, fmt.Errorf("--backup-key %s: %w", path, err)
	}
	return keys, nil
}

// BackupSweepEvery is how often the leader applies backup retention and
// cleans up failed uploads; BackupRefreshEvery how often every replica
// reads the recovery points again (the leader's sweep does it too).
const (
	BackupSweepEvery   = 5 * time.Minute
	BackupRefreshEvery = 30 * time.Second
)

// runBackups sweeps backups every BackupSweepEvery while this replica
// leads, and refreshes the recovery points every BackupRefreshEvery on
// every replica (so GET /v1/fleet says the same on each), until ctx ends.
// After each sweep the leader tells people of stale recovery points
// (staleNotices) through notice (nil: none).
func runBackups(ctx context.Context, svc *backup.Service, leading func() bool, notice func(context.Context, notify.Notification) error, log *slog.Logger) error {
	refresh := time.NewTicker(BackupRefreshEvery)
	defer refresh.Stop()
	var swept time.Time
	for {
		switch {
		case leading() && time.Since(swept) >= BackupSweepEvery:
			swept = time.Now()
			if rep, err := svc.Sweep(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, backup.ErrDisabled) {
				log.Error("backup sweep failed", "component", "backup", "err", err, "report", rep)
			} else if err == nil && notice != nil {
				for _, n := range staleNotices(svc.Points()) {
					if err := notice(ctx, n); err != nil && ctx.Err() == nil {
						log.Error("queue notice failed", "component", "backup", "kind", n.Kind, "err", err)
					}
				}
			}
		default:
			if err := svc.Refresh(ctx); err != nil && ctx.Err() == nil && !errors.Is(err, backup.ErrDisabled) {
				log.Warn("recovery points not refreshed", "component", "backup", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-refresh.C:
		}
	}
}

// newestSnapshots is each workspace's newest snapshot in o.
func newestSnapshots(o plan.Observed) map[string]backup.SnapshotCopy {
	out := map[string]backup.SnapshotCopy{}
	for _, s := range o.Snapshots {
		if s.Workspace == "" {
			continue
		}
		if cur, ok := out[s.Workspace]; !ok || s.Created.After(cur.At) {
			out[s.Workspace] = backup.SnapshotCopy{ID: s.ID, At: s.Created}
		}
	}
	return out
}

// staleNoticeMax is how many tenants' stale recovery points are told one
// by one; past it, one notice for the fleet names the count and the
// oldest (a storage outage must not page once per tenant).
const staleNoticeMax = 5

// staleNotices are the notices for the stale recovery points among pts:
// one per tenant, oldest first, or one for the fleet past staleNoticeMax.
func staleNotices(pts map[string]backup.Point) []notify.Notification {
	var stale []string
	for ws, p := range pts {
		if p.Stale {
			stale = append(stale, ws)
		}
	}
	sort.Slice(stale, func(i, j int) bool {
		a, b := pts[stale[i]], pts[stale[j]]
		return a.Age > b.Age || (a.Age == b.Age && stale[i] < stale[j])
	})
	describe := func(ws string) string {
		p := pts[ws]
		if p.ID == "" {
			return fmt.Sprintf("%s has no copy (objective %s)", ws, p.Objective)
		}
		return fmt.Sprintf("%s's newest copy (%s %s) is %s old (objective %s)", ws, p.Kind, p.ID, p.Age.Round(time.Minute), p.Objective)
	}
	if len(stale) > staleNoticeMax {
		var oldest []string
		for _, ws := range stale[:staleNoticeMax] {
			oldest = append(oldest, describe(ws))
		}
		return []notify.Notification{{Kind: notify.RecoveryPointStale,
			Summary: fmt.Sprintf("%d tenants' recovery points are older than their objective (is backup storage reachable?)", len(stale)),
			Detail:  "oldest: " + strings.Join(oldest, "; ")}}
	}
	out := make([]notify.Notification, 0, len(stale))
	for _, ws := range stale {
		out = append(out, notify.Notification{Kind: notify.RecoveryPointStale, Workspace: ws,
			Summary: ws + "'s recovery point is older than its objective", Detail: describe(ws)})
	}
	return out
}
