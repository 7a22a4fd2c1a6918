// Package backup is the reconciler's side of tenant backups: agents take
// them, the reconciler never touches tenant data.
//
// An agent asks for a backup (Start): the reconciler records it pending
// and answers a presigned PUT URL to one object of the bucket, so agents
// never hold storage keys. The agent streams pg_dump and n8n's data
// directory through age to the fleet's backup recipients and its
// workspace's own (Keys), uploads, and reports size and SHA-256 (Finish);
// the backup counts as a copy only once storage holds an object of that
// size. Failed and abandoned uploads never count and are cleaned up, as are
// backups retention no longer keeps (Sweep, Expired). A new droplet's
// manifest can name a backup to restore (Section): it carries the
// workspace's backup identity sealed to that droplet, and the agent asks
// Fetch for a presigned GET. A tenant's recovery point is its newest copy,
// backup or snapshot (Newest, Stale): Sweep refreshes them (Refresh), the
// APIs show them (Points) and the Service, a prometheus.Collector, exports
// them as genesis_recovery_point_age_seconds and
// genesis_recovery_point_stale_tenants, next to genesis_backups_total.
package backup
