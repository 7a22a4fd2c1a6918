-- 0020_notifications: the outbox of notifications to people (a tenant
-- FAILED, an idle warning, an account failing): one row per notice and
-- target, written in the same transaction as — or right after — what it
-- reports, delivered by the leader's sender with retries and backoff, so a
-- slow or failing target never blocks the loop and a crash loses nothing.
-- dedup_key (kind/subject/target) with created_at damps flapping: the same
-- notice for the same subject is queued once per damping window.
CREATE TABLE notifications (
	id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	kind            text NOT NULL CHECK (kind <> ''),
	subject         text NOT NULL,
	target          text NOT NULL CHECK (target <> ''),
	dedup_key       text NOT NULL,
	body            jsonb NOT NULL CHECK (jsonb_typeof(body) = 'object'),
	created_at      timestamptz NOT NULL DEFAULT now(),
	next_attempt_at timestamptz NOT NULL DEFAULT now(),
	attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
	sent_at         timestamptz,
	gave_up_at      timestamptz,
	last_error      text
);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE sent_at IS NULL AND gave_up_at IS NULL;
CREATE INDEX notifications_dedup ON notifications (dedup_key, created_at);
