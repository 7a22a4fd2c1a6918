package store

import (
	"context"
	"time"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// LiveSince is, for each workspace whose droplet runs the tenant
// (lifecycle.Running), since when that droplet has held its data: when its
// agent enrolled, or, for a droplet with no agent recorded, when the
// workspace entered its state. A recovery point is measured against it:
// the data a droplet gathered since it went live is what its backups must
// cover. Enrollment rather than state_since, so a healthy droplet that
// turned degraded and back does not look new.
func (s *Store) LiveSince(ctx context.Context) (map[string]time.Time, error) {
	rows, err := s.pool.Query(ctx, `SELECT f.workspace, coalesce(a.enrolled_at, f.state_since)
		FROM fleet_status f LEFT JOIN agents a ON a.droplet_id = f.droplet_id
		WHERE f.state IN (`+lifecycle.SQLList(lifecycle.Running())+`)`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var ws string
		var at time.Time
		if err := rows.Scan(&ws, &at); err != nil {
			return nil, err
		}
		out[ws] = at
	}
	return out, rows.Err()
}
