-- 0018_names: tenants' stable DNS names (spec.dns) and reserved IPs
-- (spec.tiers.<t>.reservedIP).
--
-- dns_target is the IPv4 address the tenant's <workspace>.<zone> A record
-- was last written to say (NULL: no record), by the action that moved the
-- droplet (create, wake, resize, rebuild, spare assignment, hibernate,
-- destroy) or a point_name repair; the planner compares it with where the
-- name should point. dns_at is when it was written.
--
-- reserved_ip is the tenant's reserved IPv4 and reserved_ip_account the
-- account holding it: kept while the tenant hibernates, released at
-- state: absent.
ALTER TABLE fleet_status
	ADD COLUMN dns_target inet,
	ADD COLUMN dns_at timestamptz,
	ADD COLUMN reserved_ip inet,
	ADD COLUMN reserved_ip_account text;

-- point_name: the repair that moves a tenant's stable name (or, for a
-- tenant at state: absent, removes it and releases its reserved IP).
ALTER TABLE operations DROP CONSTRAINT operations_kind_check;
ALTER TABLE operations ADD CONSTRAINT operations_kind_check CHECK (kind IN (
	'create', 'hibernate', 'wake', 'destroy', 'resize', 'adopt',
	'reboot', 'power_cycle', 'rebuild', 'snapshot_delete', 'update_manifest',
	'create_spare', 'assign_spare', 'destroy_spare', 'retire', 'point_name'));
