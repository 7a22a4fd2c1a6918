package backup

import (
	"context"
	"errors"
	"fmt"

	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// Report is what one Sweep did.
type Report struct {
	// Expired is how many good backups retention marked for deletion.
	Expired int
	// Deleted is how many backups (expired, failed or abandoned) had their
	// object removed and were forgotten.
	Deleted int
	// StorageErrors is how many objects could not be removed (storage
	// down): their rows stay, and the next Sweep tries again.
	StorageErrors int
}

// Sweep applies retention and cleans up, then refreshes the recovery
// points (Points, the metrics):
//
//  1. Retention, only while backups are declared and the desired state is
//     known (nothing is deleted on a partial view): each workspace's good
//     backups are passed through Expired with its tier's policy, and what
//     it no longer keeps is marked deleting. A workspace no longer
//     declared (its file removed) keeps its newest KeepLast backups of the
//     starter policy and no daily or weekly ones; never fewer than one, so
//     a removed tenant's last copy stays until its state: absent handling
//     decides (a person deletes it deliberately). A backup a pending
//     restore names is never marked.
//  2. Cleanup of every unfinished backup (store.Unfinished: failed, being
//     deleted, or pending past URLTTL): failed and abandoned ones are
//     marked deleting first, then the object is removed (a missing object
//     is fine) and only then is the row deleted. When storage is down the
//     row stays (StorageErrors), so no object is ever left unaccounted for.
//
// Database errors end the sweep with an error; storage errors are counted
// and logged.
func (s *Service) Sweep(ctx context.Context) (Report, error) {
	var rep Report
	if s == nil {
		return rep, ErrDisabled
	}
	if err := s.retain(ctx, &rep); err != nil {
		return rep, err
	}
	if err := s.cleanup(ctx, &rep); err != nil {
		return rep, err
	}
	if err := s.Refresh(ctx); err != nil {
		return rep, err
	}
	return rep, nil
}

// retain marks the good backups retention no longer keeps.
func (s *Service) retain(ctx context.Context, rep *Report) error {
	snap, ok := s.cfg.Desired()
	if !ok || snap.Fleet == nil || !snap.Fleet.Spec.Backup.Enabled() {
		return nil
	}
	b := snap.Fleet.Spec.Backup
	all, err := s.cfg.Store.AllGoodBackups(ctx)
	if err != nil {
		return fmt.Errorf("list good backups: %w", err)
	}
	byWS := map[string][]Copy{}
	var order []string
	for _, bk := range all {
		if _, ok := byWS[bk.Workspace]; !ok {
			order = append(order, bk.Workspace)
		}
		byWS[bk.Workspace] = append(byWS[bk.Workspace], Copy{ID: bk.ID, Started: bk.Started})
	}
	for _, ws := range order {
		var p schema.BackupTier
		if ts, ok := snap.Tenants[ws]; ok && ts.Tenant != nil {
			p = b.Policy(ts.Tenant.Metadata.Tier)
		} else {
			p = b.Policy(schema.TierStarter)
			p.KeepDaily, p.KeepWeekly = 0, 0
		}
		for _, id := range Expired(byWS[ws], p) {
			ok, err := s.cfg.Store.MarkDeleting(ctx, id, store.BackupGood, "retention")
			if err != nil {
				return err
			}
			if ok {
				rep.Expired++
			}
		}
	}
	return nil
}

// cleanup removes the objects of unfinished backups and forgets them.
func (s *Service) cleanup(ctx context.Context, rep *Report) error {
	bs, err := s.cfg.Store.Unfinished(ctx, s.cfg.Now().Add(-URLTTL))
	if err != nil {
		return fmt.Errorf("list unfinished backups: %w", err)
	}
	for _, b := range bs {
		if b.State != store.BackupDeleting {
			reason := "failed"
			if b.State == store.BackupPending {
				reason = "abandoned: not finished before its upload URL expired"
			}
			ok, err := s.cfg.Store.MarkDeleting(ctx, b.ID, b.State, reason)
			if err != nil {
				return err
			}
			if !ok {
				continue // moved on meanwhile, or a restore names it
			}
		}
		if err := s.cfg.Objects.Remove(ctx, b.Key); err != nil && !errors.Is(err, ErrNotFound) {
			rep.StorageErrors++
			s.log.Warn("remove backup object failed", "tenant", b.Workspace, "backup", b.ID, "err", err)
			continue
		}
		if err := s.cfg.Store.DeleteBackup(ctx, b.ID); err != nil {
			return fmt.Errorf("forget backup %s: %w", b.ID, err)
		}
		rep.Deleted++
	}
	return nil
}
