-- 0006_spares: hot spares (genesis.yaml spec.spares, seed "VIP pre-warm").
--
-- A spare is a droplet made for the pseudo-workspace spare-<region>-<slot>
-- (a prefix no tenant may use): it has a fleet_status row like a tenant's,
-- its agent enrolls in the agents table and pulls a manifest with no tenant
-- in it. Assigning it to a tenant moves, in one transaction, the droplet to
-- the tenant's fleet_status row and the agents row to the tenant's
-- workspace; the spare row keeps its generation for the next spare.
--
-- fleet_status.spare marks the spare rows (derived from the id, so it can
-- never disagree with it); the journal learns the three spare actions.

ALTER TABLE fleet_status
	ADD COLUMN spare boolean GENERATED ALWAYS AS (workspace LIKE 'spare-%') STORED;
CREATE INDEX fleet_status_spare_idx ON fleet_status (state) WHERE spare;

ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check CHECK (kind IN (
	'create', 'hibernate', 'wake', 'destroy', 'resize', 'adopt',
	'reboot', 'power_cycle', 'rebuild', 'snapshot_delete', 'update_manifest',
	'create_spare', 'assign_spare', 'destroy_spare'));
