-- 0011_agent_revocation: an agent's credential dies with its droplet.
--
-- agents.revoked_at marks a credential that no longer authenticates. The
-- row stays (its manifest_version high-water mark keeps the workspace's
-- versions growing for the droplet that replaces it; its manifests stay for
-- the record).
--
-- One rule decides revocation, for every path at once: when a workspace's
-- fleet_status.droplet_id moves off a droplet (absent destroy, hibernation,
-- wake, resize, watchdog rebuild, spare assignment, a stale row cleared by
-- a create), that droplet's agent is revoked unless, at commit, it is its
-- workspace's current droplet again (a spare moved to a tenant: its row is
-- cleared and the tenant's row takes the droplet in one transaction). The
-- check is a deferred constraint trigger, so it sees the transaction's end
-- state and commits or rolls back with the change that caused it.
--
-- A revoked agent stays revoked: an enrollment may not give it a new
-- credential or clear revoked_at (a droplet id is never reused; a droplet
-- that was destroyed or replaced has no business enrolling).
--
-- Every change of the set of valid credentials is announced on channel
-- genesis_agents, which every agentapi replica follows to keep that set in
-- memory: "k <droplet> <hex sha256>" when a credential becomes valid (an
-- insert or a new credential), "r <droplet> <hex sha256>" when one stops
-- being valid (revoked, replaced by a new one, or its row deleted, also by
-- cascade).

ALTER TABLE agents ADD COLUMN revoked_at timestamptz;

-- Agents of droplets already destroyed or replaced before this migration:
-- not their workspace's current droplet, and either the workspace has no
-- droplet to come (hibernated, destroyed) or a later agent is current.
-- (An agent enrolled before its droplet was recorded, during a create,
-- wake or rebuild, is neither and stays valid.)
UPDATE agents a SET revoked_at = now()
FROM fleet_status f
WHERE f.workspace = a.workspace AND f.droplet_id IS DISTINCT FROM a.droplet_id
	AND (f.state IN ('HIBERNATED', 'DESTROYED')
		OR EXISTS (SELECT 1 FROM agents c WHERE c.droplet_id = f.droplet_id AND c.enrolled_at > a.enrolled_at));

-- Reported activity is clamped to the server's clock plus a small skew from
-- now on (agentapi.MaxClockSkew); a time stored in the future before that
-- would keep idle hibernation off for as long.
UPDATE fleet_status SET last_activity_at = now() WHERE last_activity_at > now() + interval '5 minutes';

CREATE FUNCTION agents_revoke_replaced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	UPDATE agents a SET revoked_at = now()
	WHERE a.droplet_id = OLD.droplet_id AND a.revoked_at IS NULL
		AND NOT EXISTS (SELECT 1 FROM fleet_status f WHERE f.workspace = a.workspace AND f.droplet_id = a.droplet_id);
	RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER fleet_status_revoke_replaced
	AFTER UPDATE OF droplet_id ON fleet_status
	DEFERRABLE INITIALLY DEFERRED
	FOR EACH ROW
	WHEN (OLD.droplet_id IS NOT NULL AND OLD.droplet_id IS DISTINCT FROM NEW.droplet_id)
	EXECUTE FUNCTION agents_revoke_replaced();

CREATE FUNCTION agents_keep_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF OLD.revoked_at IS NOT NULL AND (NEW.revoked_at IS NULL OR NEW.credential_hash <> OLD.credential_hash) THEN
		RAISE EXCEPTION 'the agent of droplet % was revoked: its droplet was destroyed or replaced', OLD.droplet_id
			USING ERRCODE = 'check_violation', CONSTRAINT = 'agents_revoked_check';
	END IF;
	RETURN NEW;
END
$$;

CREATE TRIGGER agents_keep_revoked
	BEFORE UPDATE OF revoked_at, credential_hash ON agents
	FOR EACH ROW EXECUTE FUNCTION agents_keep_revoked();

CREATE FUNCTION agents_notify_credential() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'DELETE' THEN
		IF OLD.revoked_at IS NULL THEN
			PERFORM pg_notify('genesis_agents', 'r ' || OLD.droplet_id || ' ' || encode(OLD.credential_hash, 'hex'));
		END IF;
		RETURN NULL;
	END IF;
	IF TG_OP = 'UPDATE' THEN
		IF OLD.revoked_at IS NULL AND (NEW.revoked_at IS NOT NULL OR NEW.credential_hash <> OLD.credential_hash) THEN
			PERFORM pg_notify('genesis_agents', 'r ' || OLD.droplet_id || ' ' || encode(OLD.credential_hash, 'hex'));
		END IF;
		IF NEW.revoked_at IS NULL AND NEW.credential_hash <> OLD.credential_hash THEN
			PERFORM pg_notify('genesis_agents', 'k ' || NEW.droplet_id || ' ' || encode(NEW.credential_hash, 'hex'));
		END IF;
		RETURN NULL;
	END IF;
	IF NEW.revoked_at IS NULL THEN
		PERFORM pg_notify('genesis_agents', 'k ' || NEW.droplet_id || ' ' || encode(NEW.credential_hash, 'hex'));
	END IF;
	RETURN NULL;
END
$$;

CREATE TRIGGER agents_notify_credential
	AFTER INSERT OR UPDATE OF revoked_at, credential_hash OR DELETE ON agents
	FOR EACH ROW EXECUTE FUNCTION agents_notify_credential();
