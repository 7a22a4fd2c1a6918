-- 0004_watchdog: what the watchdog and its remediation ladder remember per
-- workspace (reconciler/watchdog).
--
-- A critical droplet is remediated one step at a time (reboot, power_cycle,
-- rebuild), each step waiting the fleet's cool-down for a heartbeat before
-- the next; remediation_step and remediation_at are the last step taken and
-- when (the ladder resets when the droplet heartbeats again). A rebuild
-- points fleet_status at the new droplet and keeps the old one in
-- replacing_* until the new one reports healthy; only then is the old one
-- destroyed. A FAILED tenant stays so until a person retries it, through the
-- API or by a commit that changes its file: failed_hash is its tenant hash
-- when it failed. health_reason says why the watchdog (or the agent's own
-- report) degraded the tenant.

ALTER TABLE fleet_status
	ADD COLUMN remediation_step       text
	                                  CHECK (remediation_step IN ('reboot', 'power_cycle', 'rebuild')),
	ADD COLUMN remediation_at         timestamptz,
	ADD COLUMN replacing_droplet_id   bigint CHECK (replacing_droplet_id > 0),
	ADD COLUMN replacing_droplet_name text CHECK (replacing_droplet_name <> ''),
	ADD COLUMN replacing_account      text REFERENCES do_accounts (name),
	ADD COLUMN failed_hash            text,
	ADD COLUMN health_reason          text,
	ADD CONSTRAINT fleet_status_remediation_check CHECK (
		(remediation_step IS NULL) = (remediation_at IS NULL)),
	ADD CONSTRAINT fleet_status_replacing_check CHECK (
		replacing_droplet_id IS NULL OR replacing_droplet_id IS DISTINCT FROM droplet_id);
