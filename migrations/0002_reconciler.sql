-- What the reconciler needs beyond the initial schema: the droplet
-- generation (droplet names are genesis-<ws>-<generation>), the tenant
-- content a manifest was rendered from, the API's wake fast path, the
-- journal step of an operation, the action it runs (so a crash resumes it),
-- and the leader's record of the last reconciled commit.

ALTER TABLE fleet_status
	ADD COLUMN generation     integer NOT NULL DEFAULT 0 CHECK (generation >= 0),
	ADD COLUMN tenant_hash    text,
	ADD COLUMN wake_requested boolean NOT NULL DEFAULT false;

ALTER TABLE operations
	ADD COLUMN step   text,
	ADD COLUMN action jsonb CHECK (action IS NULL OR jsonb_typeof(action) = 'object');

ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check CHECK (kind IN (
	'create', 'hibernate', 'wake', 'destroy', 'resize', 'adopt',
	'reboot', 'power_cycle', 'rebuild', 'snapshot_delete', 'update_manifest'));

CREATE TABLE reconciler_state (
	key        text PRIMARY KEY,
	value      text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);
