-- 0010_enrollment_binding: a provisioning token binds the droplet id the
-- executor recorded when the create returned (issue 15).
--
-- Before, a token named only a workspace and a droplet name, and the first
-- enrollment stored whatever droplet id the caller claimed: one token could
-- squat another tenant's droplet id before its own agent enrolled. The
-- executor now fills droplet_id when DigitalOcean answers the create (or a
-- resumed create finds its droplet by name); enrollment requires the
-- claimed id to equal it, and answers "not yet" (503, Retry-After) while it
-- is NULL. used_by, once set, equals droplet_id.

ALTER TABLE enrollment_tokens ADD COLUMN droplet_id bigint CHECK (droplet_id > 0);

-- Tokens from before: a used one is bound to the droplet that used it; an
-- unused one to the droplet its workspace records under that name, if any
-- (else it stays unbound until the executor records the droplet).
UPDATE enrollment_tokens SET droplet_id = used_by WHERE used_by IS NOT NULL;
UPDATE enrollment_tokens t SET droplet_id = f.droplet_id FROM fleet_status f
	WHERE t.droplet_id IS NULL AND f.workspace = t.workspace AND f.droplet_name = t.droplet_name AND f.droplet_id IS NOT NULL;

ALTER TABLE enrollment_tokens ADD CONSTRAINT enrollment_tokens_bound_check CHECK (used_by IS NULL OR used_by IS NOT DISTINCT FROM droplet_id);

-- The executor binds the unbound tokens of a workspace's droplet name.
CREATE INDEX enrollment_tokens_unbound_idx ON enrollment_tokens (workspace, droplet_name) WHERE droplet_id IS NULL;
