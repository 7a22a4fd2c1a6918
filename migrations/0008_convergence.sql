-- 0008_convergence: what a manifest was issued for, so the heartbeat that
-- reports it applied can measure commit -> applied convergence and log the
-- change's correlation id (the state API's request id, or git-<commit>).

ALTER TABLE manifests
	ADD COLUMN commit_at   timestamptz,
	ADD COLUMN correlation text CHECK (correlation IS NULL OR correlation ~ '^[A-Za-z0-9._:-]{1,64}$');
