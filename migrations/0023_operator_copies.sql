-- 0023_operator_copies: an operator's "snapshot now" and "backup now"
-- (POST /v1/tenants/{id}/actions).
--
-- snapshot: an operator_step like reboot, taken by the leader's watchdog
-- run and journaled as an operation of kind snapshot — a live snapshot of
-- the running droplet named genesis-<ws>-<gen>-snap-<UTC stamp> (never the
-- name a hibernation looks for), which leaves the tenant's state, health
-- and remediation ladder alone.
ALTER TABLE fleet_status DROP CONSTRAINT fleet_status_operator_step_check;
ALTER TABLE fleet_status ADD CONSTRAINT fleet_status_operator_step_check
	CHECK (operator_step IN ('reboot', 'power_cycle', 'rebuild', 'snapshot'));
ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check CHECK (kind IN (
	'create', 'hibernate', 'wake', 'destroy', 'resize', 'adopt',
	'reboot', 'power_cycle', 'rebuild', 'snapshot_delete', 'update_manifest',
	'create_spare', 'assign_spare', 'destroy_spare', 'retire', 'point_name',
	'snapshot'));

-- backup: backup_requested_at goes into the droplet's next manifest
-- (backup.requested_at); the agent takes a backup when its newest good
-- one started before it. The request is satisfied (and shown so) once a
-- good backup of the workspace started at or after it; a newer request
-- replaces an older one.
ALTER TABLE fleet_status
	ADD COLUMN backup_requested_at timestamptz,
	ADD COLUMN backup_requested_by text,
	ADD COLUMN backup_request_reason text;
