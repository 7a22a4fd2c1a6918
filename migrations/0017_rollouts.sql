-- 0017_rollouts: progressive rollouts of fleet-wide changes.
--
-- The fleet-wide inputs of a manifest (the default n8n version, the agent
-- build, the golden templates) are stored once per content, by digest, in
-- rollout_inputs. A change to them under spec.rollout becomes a rollouts
-- row that moves the tenants from each one's previous inputs to the new
-- ones wave by wave; rollout_members holds each tenant's wave and how far
-- it got. The newest rollout (highest seq) is the one manifests are
-- rendered from; an older one is history.
--
-- Manifests record the fleet inputs they were rendered from
-- (fleet_inputs), so "this droplet applied the rollout's change" is exact:
-- the manifest it reports applied carries the rollout's target digest.
CREATE TABLE rollout_inputs (
	digest     text PRIMARY KEY CHECK (digest ~ '^[0-9a-f]{64}$'),
	-- The canonical JSON exactly as hashed (not jsonb, which would
	-- reorder it: a render from it must match one from git byte for byte).
	body       bytea NOT NULL CHECK (octet_length(body) > 0),
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rollouts (
	id            text PRIMARY KEY CHECK (id ~ '^[a-z0-9-]{1,80}$'),
	seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
	commit        git_commit,
	correlation   text,
	baseline      text NOT NULL REFERENCES rollout_inputs (digest),
	target        text NOT NULL REFERENCES rollout_inputs (digest),
	-- The resolved waves (name, size, bake, maxUnavailable, failureBudget)
	-- and policy (onFailure, progressDeadline, maintenance windows).
	waves         jsonb NOT NULL CHECK (jsonb_typeof(waves) = 'array'),
	policy        jsonb NOT NULL CHECK (jsonb_typeof(policy) = 'object'),
	state         text NOT NULL CHECK (state IN (
	                  'running', 'paused', 'done', 'aborted', 'rolled_back', 'superseded')),
	wave          integer NOT NULL DEFAULT 0 CHECK (wave >= 0),
	wave_started_at timestamptz,
	-- When every member of the wave had applied (or failed within the
	-- budget): the bake runs from here.
	baking_since  timestamptz,
	-- Failures a person accepted by resuming after a breach.
	acked_failures integer NOT NULL DEFAULT 0 CHECK (acked_failures >= 0),
	reason        text NOT NULL DEFAULT '',
	superseded_by text REFERENCES rollouts (id),
	last_progress_at timestamptz NOT NULL DEFAULT now(),
	created_at    timestamptz NOT NULL DEFAULT now(),
	updated_at    timestamptz NOT NULL DEFAULT now(),
	finished_at   timestamptz
);

CREATE TABLE rollout_members (
	rollout_id  text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
	workspace   text NOT NULL,
	wave        integer NOT NULL CHECK (wave >= 0),
	-- The inputs the tenant had before this rollout when they differ from
	-- the rollout's baseline (a superseded rollout had already changed it).
	from_inputs text REFERENCES rollout_inputs (digest),
	released_at timestamptz,
	applied_at  timestamptz,
	failed_at   timestamptz,
	skipped     boolean NOT NULL DEFAULT false,
	reason      text NOT NULL DEFAULT '',
	PRIMARY KEY (rollout_id, workspace)
);
CREATE INDEX rollout_members_wave ON rollout_members (rollout_id, wave);
CREATE INDEX rollout_members_workspace ON rollout_members (workspace);

ALTER TABLE manifests ADD COLUMN fleet_inputs text;
