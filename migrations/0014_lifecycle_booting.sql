-- 0014_lifecycle_booting: BOOTING is entered when DigitalOcean's create
-- call returns the droplet (the journal's "created"/"found" step), before
-- the executor records the droplet in fleet_status (when DigitalOcean
-- reports it active with an address: INITIALIZING). A BOOTING row may so
-- have no droplet id yet; every later droplet state still needs one
-- (reconciler/lifecycle explains the machine).

ALTER TABLE fleet_status DROP CONSTRAINT fleet_status_droplet_check;
ALTER TABLE fleet_status ADD CONSTRAINT fleet_status_droplet_check CHECK (
	droplet_id IS NOT NULL OR state NOT IN (
		'INITIALIZING', 'HANDSHAKE', 'CONFIGURING', 'DEPLOYING',
		'ACTIVE_HEALTHY', 'ACTIVE_DEGRADED', 'ACTIVE_CRITICAL', 'REBOOTING'));
