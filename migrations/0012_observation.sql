-- 0012_observation: the leader's last observation, shared by every replica.
--
-- GET /v1/observed (and so genesis plan --reconciler) must answer the same on
-- every replica, and only the leader observes DigitalOcean. After each
-- observation the leader upserts this one row: the observation as the
-- planner saw it (plan.Observed as JSON), when it was made, and which
-- replica made it. An unchanged observation only moves observed_at (the
-- large value is not rewritten). Every replica serves the row, or 503 when
-- there is none or it is older than its bound (--observed-max-age).

CREATE TABLE observation (
	-- One row: the key can only be true.
	singleton    boolean PRIMARY KEY DEFAULT true CHECK (singleton),
	observed     json NOT NULL CHECK (json_typeof(observed) = 'object'),
	digest       sha256_digest NOT NULL,
	observed_at  timestamptz NOT NULL,
	-- The replica that observed (--replica-id) and, when leader election
	-- has one, the epoch of its lease.
	leader       text NOT NULL CHECK (leader ~ '^[A-Za-z0-9._:/@-]{1,128}$'),
	leader_epoch bigint CHECK (leader_epoch > 0),
	-- Whether every account was listed in full, and how many droplets.
	complete     boolean NOT NULL,
	droplets     integer NOT NULL CHECK (droplets >= 0),
	written_at   timestamptz NOT NULL DEFAULT now()
);
