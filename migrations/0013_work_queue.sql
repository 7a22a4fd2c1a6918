-- 0013_work_queue: the reconciler's per-workspace retry state (ARCHITECTURE.md,
-- Day-2 rule 7: failures back off by kind, persisted so a new leader
-- continues them).
--
-- The pass is a keyed work queue: one job per workspace. When a job's action
-- fails, its outcome maps to one queue operation by the error's kind
-- (reconciler/queue.go), written here; success deletes the row (forget).
--
--   transient (5xx, 429, timeouts): retry_after = now + a capped, jittered
--       exponential backoff of attempts;
--   capacity, pending, not_found ("not yet"): retry_after = now + a known
--       wait;
--   terminal (422 and other bad input): retry_after is NULL: the workspace
--       waits until its tenant file changes (tenant_hash differs from the
--       file's hash now) or an operator retries (POST /v1/tenants/{id}/retry
--       deletes the row).
--
-- The planner leaves a held workspace alone (plan.Observed.Held); attempts
-- counts the failures in a row. No foreign key to fleet_status: a spare's or
-- a removed tenant's row is kept the same way, and deleted by its next
-- success or by the pass once nothing is left to do for it.

CREATE TABLE tenant_retries (
	workspace       workspace_id PRIMARY KEY,
	attempts        integer NOT NULL CHECK (attempts > 0),
	last_error_kind text NOT NULL
	                CHECK (last_error_kind IN ('transient', 'terminal', 'capacity', 'pending', 'not_found')),
	last_error      text NOT NULL DEFAULT '',
	action          text NOT NULL CHECK (action <> ''),
	retry_after     timestamptz,
	tenant_hash     text,
	commit          git_commit,
	updated_at      timestamptz NOT NULL DEFAULT now(),
	-- Only a terminal failure waits for new input instead of a time.
	CONSTRAINT tenant_retries_after_check CHECK ((retry_after IS NULL) = (last_error_kind = 'terminal'))
);
