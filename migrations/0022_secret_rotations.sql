-- 0022_secret_rotations: an operator's "rotate secrets" (the seed's
-- ROTATE_SECRETS; POST /v1/tenants/{id}/actions {action: rotate_secrets}).
--
-- A rotation is driven by the droplet's agent, not by the executor, so it
-- is journaled here and not in operations (whose one-in-flight slot per
-- workspace the planner needs for hibernations and wakes, and whose rows a
-- new leader resumes as DigitalOcean actions). One row per request; at
-- most one running per workspace; generation numbers grow per workspace.
--
-- The request issues a one-time re-enrollment token: only its SHA-256 is
-- kept, and the token itself only sealed (age) to the droplet's age
-- recipient as it was when the rotation was requested, which is how the
-- manifest delivers it. The agent trades it (with its current credential)
-- for a credential of its new keys: agents.next_*. Both credentials
-- authenticate until the first heartbeat sent with the new one, which
-- promotes it (credential_hash, age_recipient and ed25519_public_key take
-- the next_* values; the old credential is revoked by that same update,
-- announced "r" by agents_notify_credential) and, when the heartbeat
-- reports the generation done, marks the rotation succeeded. Nothing old
-- is revoked before the new one has been used.

CREATE TABLE secret_rotations (
	id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	workspace    workspace_id NOT NULL REFERENCES fleet_status (workspace) ON DELETE CASCADE,
	generation   bigint NOT NULL CHECK (generation > 0),
	droplet_id   bigint NOT NULL CHECK (droplet_id > 0),
	state        text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'succeeded', 'failed')),
	-- requested: the token is out in the manifest; reenrolled: the agent
	-- holds a credential of its new keys; promoted: the reconciler saw it
	-- used and revoked the old one.
	step         text NOT NULL DEFAULT 'requested' CHECK (step IN ('requested', 'reenrolled', 'promoted')),
	token_hash   sha256_digest NOT NULL UNIQUE,
	token_sealed text NOT NULL CHECK (token_sealed <> ''),
	actor        text NOT NULL CHECK (actor <> ''),
	reason       text NOT NULL CHECK (reason <> ''),
	-- The last error the agent reported for this generation (it retries).
	error        text,
	created_at   timestamptz NOT NULL DEFAULT now(),
	expires_at   timestamptz NOT NULL,
	updated_at   timestamptz NOT NULL DEFAULT now(),
	finished_at  timestamptz,
	UNIQUE (workspace, generation),
	CONSTRAINT secret_rotations_finished_check CHECK ((state <> 'running') = (finished_at IS NOT NULL)),
	CONSTRAINT secret_rotations_expiry_check CHECK (expires_at > created_at)
);
CREATE UNIQUE INDEX secret_rotations_one_running ON secret_rotations (workspace) WHERE state = 'running';
CREATE INDEX secret_rotations_droplet_idx ON secret_rotations (droplet_id) WHERE state = 'running';
-- The fleet-wide rate budget counts the requests of the last minute.
CREATE INDEX secret_rotations_created_idx ON secret_rotations (created_at);

ALTER TABLE agents
	ADD COLUMN next_credential_hash sha256_digest UNIQUE,
	ADD COLUMN next_age_recipient text CHECK (next_age_recipient ~ '^age1[0-9a-z]+$'),
	ADD COLUMN next_ed25519_public_key bytea CHECK (octet_length(next_ed25519_public_key) = 32),
	ADD CONSTRAINT agents_next_check CHECK (
		(next_credential_hash IS NULL) = (next_age_recipient IS NULL)
		AND (next_credential_hash IS NULL) = (next_ed25519_public_key IS NULL));

-- The next credential joins the set of valid ones ("k") when it is
-- recorded, and leaves it ("r") when it is dropped without being promoted
-- or its agent is revoked or deleted. A promotion (credential_hash takes
-- the next value) is announced by agents_notify_credential.
CREATE FUNCTION agents_notify_next_credential() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		IF OLD.revoked_at IS NULL AND OLD.next_credential_hash IS NOT NULL THEN
			PERFORM pg_notify('genesis_agents', 'r ' || OLD.droplet_id || ' ' || encode(OLD.next_credential_hash, 'hex'));
		END IF;
		RETURN NULL;
	END IF;
	IF OLD.revoked_at IS NULL AND OLD.next_credential_hash IS NOT NULL
		AND (NEW.revoked_at IS NOT NULL OR NEW.next_credential_hash IS DISTINCT FROM OLD.next_credential_hash)
		AND NEW.credential_hash <> OLD.next_credential_hash THEN
		PERFORM pg_notify('genesis_agents', 'r ' || OLD.droplet_id || ' ' || encode(OLD.next_credential_hash, 'hex'));
	END IF;
	IF NEW.revoked_at IS NULL AND NEW.next_credential_hash IS NOT NULL
		AND NEW.next_credential_hash IS DISTINCT FROM OLD.next_credential_hash THEN
		PERFORM pg_notify('genesis_agents', 'k ' || NEW.droplet_id || ' ' || encode(NEW.next_credential_hash, 'hex'));
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER agents_notify_next_credential
	AFTER UPDATE OF revoked_at, next_credential_hash OR DELETE ON agents
	FOR EACH ROW EXECUTE FUNCTION agents_notify_next_credential();
