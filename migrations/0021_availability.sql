-- 0021_availability: the availability prober's state (reconciler/availability).
--
-- availability_replicas: every replica running the prober, with when it was
-- last seen (its heartbeat is its round). The live ones divide the shards.
CREATE TABLE availability_replicas (
	replica text PRIMARY KEY CHECK (replica <> ''),
	seen_at timestamptz NOT NULL
);

-- availability_shards: the 64 shards of the fleet (a tenant's shard is the
-- FNV-1a hash of its workspace id modulo 64), each leased to one replica
-- until expires_at. A replica renews its leases every round; a dead
-- replica's leases expire and the others take them.
CREATE TABLE availability_shards (
	shard      smallint PRIMARY KEY CHECK (shard >= 0 AND shard < 64),
	holder     text,
	expires_at timestamptz NOT NULL DEFAULT 'epoch'
);
INSERT INTO availability_shards (shard) SELECT generate_series(0, 63);

-- availability_days: one row per tenant and UTC day. Bit m (0-based, from
-- the left) of probed says minute m of the day was probed, of up that the
-- probe (every probe, when several fell in that minute) succeeded; total
-- and ok are their bit counts, kept beside them so sums over whole days
-- read no bitmap. tier is the tenant's tier at its newest probe of the day.
-- Rows older than 30 days are pruned. See README "Availability".
CREATE TABLE availability_days (
	workspace text NOT NULL,
	day       date NOT NULL,
	tier      text NOT NULL,
	probed    bit(1440) NOT NULL,
	up        bit(1440) NOT NULL,
	total     smallint NOT NULL CHECK (total BETWEEN 0 AND 1440),
	ok        smallint NOT NULL CHECK (ok BETWEEN 0 AND total),
	PRIMARY KEY (workspace, day)
) WITH (fillfactor = 80);
CREATE INDEX availability_days_day ON availability_days (day);
