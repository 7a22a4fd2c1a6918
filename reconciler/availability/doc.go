// Package availability measures what customers see: every running
// tenant's stable name (<workspace>.<spec.dns.zone>) is fetched over HTTPS
// (GET /healthz, answered {"status":"ok"} by n8n behind the droplet's
// Caddy) once a round, a round every --probe-interval (60 s), by whichever
// replica holds the tenant's shard.
//
// Sharding. A tenant's shard is FNV-1a(workspace) mod 64. Shards are
// leased in Postgres (availability_shards) with an expiry of three
// intervals; every replica running the prober (all of them, leader or
// not) records itself in availability_replicas and, at the start of each
// round, in one transaction that locks the shard rows, renews its leases,
// gives back what exceeds its fair share ceil(64 / live replicas) and
// claims free or expired shards up to it (store.LeaseAvailabilityShards).
// A lease is held by one replica at a time, so a tenant is probed once a
// round; a newcomer gets shards as the others give them back at their next
// round (a shard in transit may miss one round, never get two probes); a
// replica that dies keeps its shards until its leases expire, then the
// others take them. A replica that stops cleanly gives its shards back at
// once. Probes of a shard whose lease the replica lost meanwhile are not
// stored (the write checks the lease), so a stalled replica cannot count a
// tenant twice.
//
// What is probed. A tenant declared state: running whose lifecycle is
// ACTIVE_HEALTHY, ACTIVE_DEGRADED, ACTIVE_CRITICAL, REBOOTING or FAILED:
// running by intention and not in a planned transition. The pre-ACTIVE
// states (being created, woken, booting, deploying), HIBERNATING,
// HIBERNATED (its name points at the activator), WAKING, DESTROYING and
// DESTROYED are planned and not counted; REBOOTING and FAILED are the
// watchdog's answer to an outage, so they count (leaving them out would
// hide the outages the objective is about). A watchdog rebuild goes
// through PROVISIONING and is therefore not counted: a known gap.
//
// A probe is up when the name resolves (the system resolver), the TLS
// handshake verifies against the configured roots (the system roots by
// default; never skipped), and GET /healthz answers 200 with a JSON body
// whose status is "ok", all within the probe timeout. Anything else is
// down, counted by kind (dns, connect, tls, timeout, status, body). Each
// probe uses a new connection: a handshake a probe, so an expired
// certificate is seen, and no idle connection is kept per tenant.
//
// Storage (store.RecordProbes, one statement per round per replica): per
// tenant and UTC day a bitmap of the minutes probed and of those up, so
// every window (1h, 1d, 7d, 30d) is exact to the minute; 30 days are kept.
// Alerting does not read the table: the counters
// genesis_availability_probes_total{tier,result} feed Prometheus's
// multiwindow burn-rate rules for the 99.5% objective
// (deploy/prometheus/alerts.yml). No metric has a per-tenant label; the
// worst tenants are read from the API (GET /v1/availability).
package availability
