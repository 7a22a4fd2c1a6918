-- 0025_console_index: what git declares of each tenant that the fleet
-- console filters and searches by, and the leader's account figures, kept
-- in Postgres so every replica answers from one indexed statement.
--
-- Tiers and domains live in the state repository. The console used to
-- resolve a tier filter or a domain search to a list of workspace ids from
-- its replica's snapshot and hand that list to SQL (33,000 ids for a tier
-- at 100,000 tenants: a fifth of a second a page). Now the leader writes
-- them when its pass records the desired state (reconciler.pass ->
-- store.SetTenantFacts): on a full pass every declared tenant's, clearing
-- those of tenants git no longer declares; on a scoped pass the scope's.
-- Followers only read. Until a leader's first pass after this migration
-- the columns are empty (the tier filter matches nothing, domains are not
-- found).

-- The tier, as a column of the status row: the overview's filter is then
-- an index range ordered by workspace for keyset paging, like region's and
-- n8n_version's of 0024. NULL: not declared in git (an orphan, a spare).
ALTER TABLE fleet_status ADD COLUMN tier text CHECK (tier <> '');
CREATE INDEX fleet_status_tier_idx ON fleet_status (tier, workspace) WHERE tier IS NOT NULL;

-- Every declared tracking domain, lower case, one row each. A table of its
-- own rather than a column of fleet_status: heartbeats rewrite status rows
-- all day (not HOT: last_heartbeat_at is indexed), and each rewrite would
-- add every domain's trigrams to a GIN index again; this table changes only
-- when git does.
CREATE TABLE tenant_domains (
	workspace text NOT NULL,
	domain    text NOT NULL CHECK (domain <> '' AND domain = lower(domain)),
	PRIMARY KEY (workspace, domain)
);

-- The search matches a domain by substring (as it always did: "acme"
-- finds track.acme.example). A trigram index (pg_trgm, shipped with
-- PostgreSQL's contrib modules and trusted since PostgreSQL 13, so the
-- database's owner may create it) answers LIKE '%acme%' from the index for
-- three characters or more. Where the extension cannot be created the
-- migration still applies and the search scans tenant_domains instead
-- (correct, slower: about 10 ms per 100,000 domains).
DO $$
DECLARE
	ext_schema text;
BEGIN
	BEGIN
		CREATE EXTENSION IF NOT EXISTS pg_trgm;
	EXCEPTION WHEN undefined_file OR insufficient_privilege OR feature_not_supported OR undefined_object THEN
		RAISE NOTICE 'pg_trgm is not available (%); the console''s domain search scans tenant_domains', SQLERRM;
	END;
	SELECT n.nspname INTO ext_schema FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_trgm';
	IF ext_schema IS NOT NULL THEN
		EXECUTE format('CREATE INDEX tenant_domains_trgm_idx ON tenant_domains USING gin (domain %I.gin_trgm_ops)', ext_schema);
	END IF;
END;
$$;

-- The leader's per-account figures as it last published them (the
-- console does, every 15 s while its replica leads): DigitalOcean's
-- RateLimit-Remaining as the leader last saw it, and the headroom the
-- leader computed. Only the leader calls DigitalOcean, so only it has them;
-- every replica's accounts page reads them here, with their age.
CREATE TABLE account_figures (
	account        text PRIMARY KEY,
	rate_remaining integer,
	headroom       integer,
	replica        text NOT NULL DEFAULT '',
	observed_at    timestamptz NOT NULL
);
