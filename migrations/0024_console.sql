-- 0024_console: what the fleet console (reconciler/console) needs.
--
-- Every change of a tenant's lifecycle state is announced on the channel
-- genesis_lifecycle with the workspace id as payload, by a trigger, so every
-- writer (the loop, heartbeat batches, the watchdog, wakes and retries) is
-- covered without knowing of the console. Each replica's console LISTENs
-- once and fans the change out to its browsers (server-sent events). It is
-- a channel of its own, not genesis_reconciler: the leader's loop has no
-- use for it, and a notification in a writer's transaction before its own
-- announcement would reorder what that channel's listeners see.
-- Notifications of one transaction with equal payloads are sent once; with
-- no listener they cost a queue entry that is dropped at once.
CREATE FUNCTION fleet_status_lifecycle_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
	PERFORM pg_notify('genesis_lifecycle', NEW.workspace);
	RETURN NULL;
END;
$$;

CREATE TRIGGER fleet_status_lifecycle_notify
	AFTER UPDATE OF state ON fleet_status
	FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state)
	EXECUTE FUNCTION fleet_status_lifecycle_notify();

-- The overview's filters by region and n8n version (state and account
-- have indexes of 0001), each ordered by workspace for keyset paging.
CREATE INDEX fleet_status_region_idx ON fleet_status (region, workspace) WHERE region IS NOT NULL;
CREATE INDEX fleet_status_n8n_idx ON fleet_status (n8n_version, workspace) WHERE n8n_version IS NOT NULL;
