-- 0001_initial: the control plane's state (ARCHITECTURE.md, "Data").
--
-- Git is the source of truth for what each tenant should be; these tables
-- hold what the reconciler has observed and done: one fleet_status row per
-- workspace, the DigitalOcean account pool, enrolled agents and their
-- one-time enrollment tokens, the signed manifests each droplet pulls, the
-- operations journal (written before every action, so a crash resumes
-- instead of repeating) and an append-only audit log.
--
-- Conventions: times are timestamptz; DigitalOcean droplet ids are bigint;
-- hashes and keys are raw bytea with their exact length checked; free-form
-- details are jsonb objects; every enumerated text column has a CHECK that
-- lists its values. This file runs inside one transaction (see migrations.go).

-- A workspace (tenant) id as tenants/<id>.yaml spells it.
CREATE DOMAIN workspace_id AS text
	CHECK (VALUE ~ '^[a-z0-9-]{3,40}$');

-- A git commit id: SHA-1 (40 hex) or SHA-256 (64 hex), lowercase.
CREATE DOMAIN git_commit AS text
	CHECK (VALUE ~ '^[0-9a-f]{40}([0-9a-f]{24})?$');

-- A sha256 digest (or keyed hash) in raw form.
CREATE DOMAIN sha256_digest AS bytea
	CHECK (octet_length(VALUE) = 32);

-- The DigitalOcean account pool (seed 3.1), mirrored from genesis.yaml.
-- Tokens never live here: genesis.yaml names the environment variable.
CREATE TABLE do_accounts (
	name         text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$'),
	status       text NOT NULL DEFAULT 'active'
	             CHECK (status IN ('active', 'draining', 'disabled')),
	regions      text[] NOT NULL DEFAULT '{}',
	max_droplets integer NOT NULL CHECK (max_droplets >= 0),
	last_error   text,
	created_at   timestamptz NOT NULL DEFAULT now(),
	updated_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per workspace: where its droplet is and what state it is in.
-- Heartbeats are written here in batches (last_heartbeat_at, health,
-- manifest_version_applied, heartbeat), keyed by workspace or droplet_id.
CREATE TABLE fleet_status (
	workspace                workspace_id PRIMARY KEY,
	droplet_id               bigint UNIQUE CHECK (droplet_id > 0),
	droplet_name             text CHECK (droplet_name <> ''),
	account                  text REFERENCES do_accounts (name),
	region                   text CHECK (region <> ''),
	size                     text CHECK (size <> ''),
	ip                       inet,
	state                    text NOT NULL DEFAULT 'PENDING'
	                         CONSTRAINT fleet_status_state_check CHECK (state IN (
	                             'PENDING', 'PROVISIONING', 'BOOTING', 'INITIALIZING',
	                             'HANDSHAKE', 'CONFIGURING', 'DEPLOYING',
	                             'ACTIVE_HEALTHY', 'ACTIVE_DEGRADED', 'ACTIVE_CRITICAL',
	                             'REBOOTING', 'FAILED',
	                             'HIBERNATING', 'HIBERNATED', 'WAKING',
	                             'DESTROYING', 'DESTROYED')),
	state_since              timestamptz NOT NULL DEFAULT now(),
	health                   text NOT NULL DEFAULT 'unknown'
	                         CHECK (health IN ('unknown', 'healthy', 'degraded', 'critical')),
	desired_state            text NOT NULL
	                         CHECK (desired_state IN ('running', 'hibernated', 'absent')),
	-- true when idle hibernation (not git) put the tenant to sleep.
	hibernated_by_policy     boolean NOT NULL DEFAULT false,
	n8n_version              text CHECK (n8n_version <> ''),
	manifest_version_issued  bigint NOT NULL DEFAULT 0 CHECK (manifest_version_issued >= 0),
	manifest_version_applied bigint NOT NULL DEFAULT 0 CHECK (manifest_version_applied >= 0),
	last_heartbeat_at        timestamptz,
	last_activity_at         timestamptz,
	agent_version            text,
	-- The latest agent report (component health, memory, disk, uptime,
	-- clock offset, last verification error).
	heartbeat                jsonb NOT NULL DEFAULT '{}'
	                         CHECK (jsonb_typeof(heartbeat) = 'object'),
	-- The snapshot a hibernated tenant wakes from (DigitalOcean ids are strings).
	snapshot_id              text CHECK (snapshot_id <> ''),
	snapshot_size_gb         double precision CHECK (snapshot_size_gb >= 0),
	snapshot_at              timestamptz,
	last_commit              git_commit,
	last_error               text,
	created_at               timestamptz NOT NULL DEFAULT now(),
	updated_at               timestamptz NOT NULL DEFAULT now(),
	-- A droplet that boots, runs or reboots has an id.
	CONSTRAINT fleet_status_droplet_check CHECK (
		droplet_id IS NOT NULL OR state NOT IN (
			'BOOTING', 'INITIALIZING', 'HANDSHAKE', 'CONFIGURING', 'DEPLOYING',
			'ACTIVE_HEALTHY', 'ACTIVE_DEGRADED', 'ACTIVE_CRITICAL', 'REBOOTING')),
	-- Never hibernated without a snapshot to wake from.
	CONSTRAINT fleet_status_snapshot_check CHECK (
		state <> 'HIBERNATED' OR snapshot_id IS NOT NULL)
);
CREATE INDEX fleet_status_account_idx ON fleet_status (account) WHERE account IS NOT NULL;
CREATE INDEX fleet_status_state_idx ON fleet_status (state);
-- The watchdog scans running droplets by heartbeat age.
CREATE INDEX fleet_status_heartbeat_idx ON fleet_status (last_heartbeat_at)
	WHERE state IN ('ACTIVE_HEALTHY', 'ACTIVE_DEGRADED', 'ACTIVE_CRITICAL');

-- Enrolled droplets. The agent made its keys; only the public halves are
-- here, and the per-droplet credential only as a hash.
CREATE TABLE agents (
	droplet_id          bigint PRIMARY KEY CHECK (droplet_id > 0),
	workspace           workspace_id NOT NULL
	                    REFERENCES fleet_status (workspace) ON DELETE CASCADE,
	age_recipient       text NOT NULL CHECK (age_recipient ~ '^age1[0-9a-z]+$'),
	ed25519_public_key  bytea NOT NULL CHECK (octet_length(ed25519_public_key) = 32),
	credential_hash     sha256_digest NOT NULL UNIQUE,
	enrolled_at         timestamptz NOT NULL DEFAULT now(),
	-- The highest heartbeat sequence number accepted (replays are ignored).
	last_heartbeat_seq  bigint NOT NULL DEFAULT 0 CHECK (last_heartbeat_seq >= 0),
	-- The highest manifest version ever issued to this droplet; maintained by
	-- the manifests trigger below and never lowered, so a version is never
	-- reused even after old manifests are pruned.
	manifest_version    bigint NOT NULL DEFAULT 0 CHECK (manifest_version >= 0),
	UNIQUE (droplet_id, workspace)
);
CREATE INDEX agents_workspace_idx ON agents (workspace);

-- One-time provisioning tokens, stored only as a hash, bound to one
-- workspace and droplet name. Enrollment consumes a token with
--   UPDATE ... SET used_at = now(), used_by = $id
--   WHERE token_hash = $h AND used_at IS NULL AND expires_at > now()
-- so of two concurrent uses exactly one wins.
CREATE TABLE enrollment_tokens (
	token_hash   sha256_digest PRIMARY KEY,
	workspace    workspace_id NOT NULL
	             REFERENCES fleet_status (workspace) ON DELETE CASCADE,
	droplet_name text NOT NULL CHECK (droplet_name <> ''),
	created_at   timestamptz NOT NULL DEFAULT now(),
	expires_at   timestamptz NOT NULL,
	used_at      timestamptz,
	used_by      bigint CHECK (used_by > 0),
	CONSTRAINT enrollment_tokens_expiry_check CHECK (expires_at > created_at),
	CONSTRAINT enrollment_tokens_used_check CHECK (used_by IS NULL OR used_at IS NOT NULL)
);
CREATE INDEX enrollment_tokens_expires_idx ON enrollment_tokens (expires_at);

-- Rendered, signed manifests (DSSE envelopes), one row per droplet and
-- version. Versions only grow per droplet: lower than the highest issued is
-- refused by the trigger (check_violation), equal by the primary key
-- (unique_violation). The (droplet_id, workspace) foreign key keeps a
-- manifest from naming another tenant's droplet.
CREATE TABLE manifests (
	droplet_id bigint NOT NULL,
	version    bigint NOT NULL CONSTRAINT manifests_version_check CHECK (version > 0),
	workspace  workspace_id NOT NULL,
	envelope   bytea NOT NULL
	           CHECK (octet_length(envelope) BETWEEN 1 AND 4194304),
	digest     sha256_digest NOT NULL,
	issued_at  timestamptz NOT NULL,
	expires_at timestamptz NOT NULL,
	commit     git_commit NOT NULL,
	PRIMARY KEY (droplet_id, version),
	FOREIGN KEY (droplet_id, workspace)
		REFERENCES agents (droplet_id, workspace) ON DELETE CASCADE,
	CONSTRAINT manifests_expiry_check CHECK (expires_at > issued_at)
);

CREATE FUNCTION manifests_version_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
	hwm bigint;
BEGIN
	IF NEW.version <= 0 THEN
		RETURN NEW; -- manifests_version_check reports it
	END IF;
	-- Lock the agent row so concurrent inserts for one droplet serialize.
	SELECT manifest_version INTO hwm FROM agents
	WHERE droplet_id = NEW.droplet_id
	FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RETURN NEW; -- the foreign key reports the unknown droplet
	END IF;
	IF NEW.version < hwm OR (NEW.version = hwm AND NOT EXISTS (
		SELECT 1 FROM manifests WHERE droplet_id = NEW.droplet_id AND version = NEW.version))
	THEN
		RAISE EXCEPTION 'manifest version % for droplet % does not exceed issued version %',
			NEW.version, NEW.droplet_id, hwm
			USING ERRCODE = 'check_violation',
			      TABLE = 'manifests',
			      CONSTRAINT = 'manifests_version_increasing';
	END IF;
	UPDATE agents SET manifest_version = NEW.version
	WHERE droplet_id = NEW.droplet_id AND manifest_version < NEW.version;
	RETURN NEW;
END;
$$;

CREATE TRIGGER manifests_version_guard
	BEFORE INSERT OR UPDATE OF droplet_id, version ON manifests
	FOR EACH ROW EXECUTE FUNCTION manifests_version_guard();

-- The operations journal: every DigitalOcean action is written here before
-- it starts and updated as it proceeds. At most one operation per workspace
-- is in flight (pending or running), enforced by a partial unique index.
CREATE TABLE operations (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	workspace    workspace_id NOT NULL,
	kind         text NOT NULL CHECK (kind IN (
	                 'create', 'hibernate', 'wake', 'destroy', 'resize', 'adopt',
	                 'reboot', 'power_cycle', 'rebuild', 'snapshot_delete')),
	state        text NOT NULL DEFAULT 'pending' CHECK (state IN (
	                 'pending', 'running', 'succeeded', 'failed', 'cancelled')),
	account      text REFERENCES do_accounts (name),
	droplet_name text CHECK (droplet_name <> ''),
	droplet_id   bigint CHECK (droplet_id > 0),
	attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	payload      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
	error        text,
	-- The commit the action came from; NULL for API fast paths (wake).
	commit       git_commit,
	created_at   timestamptz NOT NULL DEFAULT now(),
	started_at   timestamptz,
	updated_at   timestamptz NOT NULL DEFAULT now(),
	finished_at  timestamptz,
	CONSTRAINT operations_started_check CHECK (
		state NOT IN ('running', 'succeeded') OR started_at IS NOT NULL),
	CONSTRAINT operations_finished_check CHECK (
		(state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
	CONSTRAINT operations_error_check CHECK (state <> 'failed' OR error IS NOT NULL)
);
CREATE UNIQUE INDEX operations_one_in_flight ON operations (workspace)
	WHERE state IN ('pending', 'running');
CREATE INDEX operations_workspace_idx ON operations (workspace, id DESC);
CREATE INDEX operations_unfinished_idx ON operations (created_at)
	WHERE state IN ('pending', 'running');

-- Who did what, to which workspace, from which commit. Rows are never
-- updated; old rows may be deleted by retention.
CREATE TABLE audit_log (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	at           timestamptz NOT NULL DEFAULT now(),
	actor        text NOT NULL CHECK (actor <> ''),
	action       text NOT NULL CHECK (action <> ''),
	workspace    workspace_id,
	operation_id bigint REFERENCES operations (id) ON DELETE SET NULL,
	detail       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(detail) = 'object'),
	commit       git_commit
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_workspace_idx ON audit_log (workspace, at) WHERE workspace IS NOT NULL;
