-- 0003_agent_protocol: what the agent protocol needs beyond the initial
-- schema. A manifest records the digest of the inputs it was rendered from
-- (tenant blob, rendered workflows, n8n version, domains, state, the
-- droplet's recipient), so the renderer re-renders a droplet only when one
-- of them changed, also after a restart or on another replica.

ALTER TABLE manifests ADD COLUMN inputs_hash sha256_digest;

-- The renderer and the servers read the newest manifest of a droplet.
-- (The primary key (droplet_id, version) already serves
-- ORDER BY version DESC LIMIT 1.)

-- Enrollment looks up the newest agent of a workspace.
CREATE INDEX agents_workspace_enrolled_idx ON agents (workspace, enrolled_at DESC);
