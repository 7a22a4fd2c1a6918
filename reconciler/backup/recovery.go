package backup

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/schema"
)

// tenantPoint is what Refresh caches of one tenant.
type tenantPoint struct {
	pt        Point // At, Kind, ID
	liveSince time.Time
	objective time.Duration
}

// Refresh recomputes every tenant's recovery point: its newest good
// backup (store.NewestBackups) or snapshot (Config.Snapshots), whichever
// is newer, with its tier's objective and since when its droplet is live
// (Config.Live). Sweep calls it; on an error the previous points stay.
func (s *Service) Refresh(ctx context.Context) error {
	if s == nil {
		return ErrDisabled
	}
	backups, err := s.cfg.Store.NewestBackups(ctx)
	if err != nil {
		return fmt.Errorf("newest backups: %w", err)
	}
	live := map[string]time.Time{}
	if s.cfg.Live != nil {
		if live, err = s.cfg.Live(ctx); err != nil {
			return fmt.Errorf("live tenants: %w", err)
		}
	}
	var snaps map[string]SnapshotCopy
	if s.cfg.Snapshots != nil {
		snaps = s.cfg.Snapshots()
	}
	var backupDecl *schema.Backup
	tiers := map[string]schema.Tier{}
	if snap, ok := s.cfg.Desired(); ok {
		if snap.Fleet != nil {
			backupDecl = snap.Fleet.Spec.Backup
		}
		for ws, ts := range snap.Tenants {
			if ts.Tenant != nil {
				tiers[ws] = ts.Tenant.Metadata.Tier
			}
		}
	}
	points := map[string]tenantPoint{}
	add := func(ws string) {
		if _, ok := points[ws]; ok {
			return
		}
		tier, ok := tiers[ws]
		if !ok {
			tier = schema.TierStarter
		}
		b, sn := backups[ws], snaps[ws]
		points[ws] = tenantPoint{
			pt:        Newest(b.ID, b.Started, sn.ID, sn.At),
			liveSince: live[ws],
			objective: backupDecl.Policy(tier).Objective.Std(),
		}
	}
	for _, m := range []map[string]bool{keys(tiers), keys(backups), keys(snaps), keys(live)} {
		for ws := range m {
			add(ws)
		}
	}
	s.mu.Lock()
	s.points = points
	s.mu.Unlock()
	return nil
}

// noteBackup moves ws's cached recovery point to good backup id, taken at
// started, when it is newer (this replica recorded it: no need to wait for
// the next Refresh).
func (s *Service) noteBackup(ws, id string, started time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.points[ws]
	if ok && !started.After(p.pt.At) {
		return
	}
	if s.points == nil {
		s.points = map[string]tenantPoint{}
	}
	p.pt = Point{At: started, Kind: "backup", ID: id}
	if !ok {
		if snap, ok := s.cfg.Desired(); ok && snap.Fleet != nil {
			tier := schema.TierStarter
			if ts, ok := snap.Tenants[ws]; ok && ts.Tenant != nil {
				tier = ts.Tenant.Metadata.Tier
			}
			p.objective = snap.Fleet.Spec.Backup.Policy(tier).Objective.Std()
		}
	}
	s.points[ws] = p
}

func keys[V any](m map[string]V) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// at fills p's age, objective and staleness at now.
func (p tenantPoint) at(now time.Time) Point {
	out := p.pt
	out.LiveSince, out.Objective = p.liveSince, p.objective
	switch {
	case !out.At.IsZero():
		out.Age = now.Sub(out.At)
	case !p.liveSince.IsZero():
		out.Age = now.Sub(p.liveSince)
	}
	out.Stale = Stale(p.pt, p.liveSince, now, p.objective)
	return out
}

// Point is workspace ws's recovery point as of the last Refresh, aged to
// now (false: ws is unknown).
func (s *Service) Point(ws string) (Point, bool) {
	if s == nil {
		return Point{}, false
	}
	s.mu.Lock()
	p, ok := s.points[ws]
	s.mu.Unlock()
	if !ok {
		return Point{}, false
	}
	return p.at(s.cfg.Now()), true
}

// Points is every known tenant's recovery point (Point), by workspace.
func (s *Service) Points() map[string]Point {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	ps := maps.Clone(s.points)
	s.mu.Unlock()
	now := s.cfg.Now()
	out := make(map[string]Point, len(ps))
	for ws, p := range ps {
		out[ws] = p.at(now)
	}
	return out
}

// recoveryBuckets are genesis_recovery_point_age_seconds' upper bounds:
// 15m, 1h, 2h, 6h, 12h, 1d, 2d, 7d.
var recoveryBuckets = []time.Duration{15 * time.Minute, time.Hour, 2 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour, 48 * time.Hour, 7 * 24 * time.Hour}

var (
	ageDesc = prometheus.NewDesc("genesis_recovery_point_age_seconds",
		"Age of each live tenant's newest copy (good backup or snapshot); a live tenant with no copy counts with the time since its droplet went live.", nil, nil)
	staleDesc = prometheus.NewDesc("genesis_recovery_point_stale_tenants",
		"Live tenants whose newest copy is older than their tier's recovery-point objective (counted from when the droplet went live, if later).", nil, nil)
)

// Describe is prometheus.Collector's.
func (s *Service) Describe(ch chan<- *prometheus.Desc) {
	ch <- ageDesc
	ch <- staleDesc
	s.results.Describe(ch)
}

// Collect is prometheus.Collector's: the recovery points of live tenants
// as of the last Refresh, aged to now, and the backup results.
func (s *Service) Collect(ch chan<- prometheus.Metric) {
	var count, stale uint64
	var sum float64
	buckets := make(map[float64]uint64, len(recoveryBuckets))
	for _, b := range recoveryBuckets {
		buckets[b.Seconds()] = 0
	}
	for _, p := range s.Points() {
		if p.LiveSince.IsZero() {
			continue
		}
		age := p.Age.Seconds()
		count++
		sum += age
		for _, b := range recoveryBuckets {
			if age <= b.Seconds() {
				buckets[b.Seconds()]++
			}
		}
		if p.Stale {
			stale++
		}
	}
	ch <- prometheus.MustNewConstHistogram(ageDesc, count, sum, buckets)
	ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, float64(stale))
	s.results.Collect(ch)
}

// API is p as the fleet and tenant APIs show it (recovery_point).
func (p Point) API() *api.RecoveryPoint {
	rp := &api.RecoveryPoint{Kind: p.Kind, ID: p.ID, AgeSeconds: p.Age.Seconds(), ObjectiveSeconds: p.Objective.Seconds(), Stale: p.Stale}
	if !p.At.IsZero() {
		rp.At = p.At.UTC()
	}
	return rp
}
