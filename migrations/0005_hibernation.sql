-- 0005_hibernation: what idle hibernation and its warning need. The
-- reconciler records when it warned a tenant that it is about to be
-- hibernated for idleness (idle_warned_at; cleared by newer n8n activity),
-- and the activity the warning was about, so an idle hibernation happens
-- only after the warning went out at least the fleet's warning period ago.
-- A hibernation records whether its agent confirmed n8n stopped before the
-- snapshot (false: the agent did not confirm in time; snapshotted anyway).

ALTER TABLE fleet_status
	ADD COLUMN idle_warned_at       timestamptz,
	ADD COLUMN hibernate_confirmed  boolean;
