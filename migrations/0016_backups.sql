-- 0016_backups: agent-run backups in object storage, and restores.
--
-- A backup row is made when the reconciler issues a presigned PUT URL
-- (state pending), and becomes good only after the agent reported the
-- object's size and SHA-256 and the reconciler found an object of that size
-- in the bucket; an upload that failed is recorded failed and never counts
-- as a copy. Expired rows (retention, or pending past their URL's life) are
-- marked deleting before their object is removed, and deleted from here
-- only once the object is gone, so a crash in between leaks nothing.
--
-- A restore row asks the droplet droplet_name of workspace to restore
-- backup_id before n8n starts; the agent reports it done or refused.
CREATE TABLE backups (
	id           text PRIMARY KEY,
	workspace    text NOT NULL,
	droplet_id   bigint NOT NULL,
	object_key   text NOT NULL UNIQUE,
	state        text NOT NULL CHECK (state IN ('pending', 'good', 'failed', 'deleting')),
	started_at   timestamptz NOT NULL DEFAULT now(),
	finished_at  timestamptz,
	size_bytes   bigint,
	sha256       text,
	error        text
);
CREATE INDEX backups_workspace ON backups (workspace, started_at DESC);
CREATE INDEX backups_state ON backups (state) WHERE state <> 'good';

CREATE TABLE backup_restores (
	workspace    text NOT NULL,
	droplet_name text NOT NULL,
	backup_id    text NOT NULL REFERENCES backups (id),
	requested_at timestamptz NOT NULL DEFAULT now(),
	finished_at  timestamptz,
	error        text,
	PRIMARY KEY (workspace, droplet_name)
);

-- retire: the replaced droplet of a rebuild with no newer copy of its data
-- is stopped, snapshotted and only then destroyed.
ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check CHECK (kind IN (
	'create', 'hibernate', 'wake', 'destroy', 'resize', 'adopt',
	'reboot', 'power_cycle', 'rebuild', 'snapshot_delete', 'update_manifest',
	'create_spare', 'assign_spare', 'destroy_spare', 'retire'));

-- When a rebuild replaces a droplet, the replaced droplet's last sign of
-- life (heartbeat or n8n activity): the watchdog destroys it without a
-- snapshot only when a backup it took is newer than that.
ALTER TABLE fleet_status ADD COLUMN replacing_last_seen_at timestamptz;
