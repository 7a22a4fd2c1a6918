// Package converge makes a droplet's n8n and Caddy match its verified
// manifest; a *Converger is the agent's Applier.
//
// An Apply is level-based and runs in a fixed order, leaving what worked in
// place when a later step fails (the agent retries the whole manifest with
// backoff):
//
//  1. n8n: the first time, the owner is created with a random password and
//     an API key is made; both are kept 0600 in the state directory
//     (n8n.json, the password written before the owner exists so a crash
//     in between can still log in).
//  2. Credentials: n8n 1.x can only create and delete credentials, and
//     cannot list them, so the agent keeps the dynamic UUID map in its state
//     directory (converge.json): credential name → n8n id and the SHA-256
//     of the sealed ciphertext it was made from. An unchanged digest writes
//     nothing. A changed one creates a new credential and retires the old
//     id; a credential no longer declared is retired too. Plaintext lives
//     only in memory, for the duration of the call.
//  3. Workflows: each node's credential placeholder (TEMPLATE_<X>_UUID) is
//     replaced by the id of the manifest credential of the node's
//     credential type (by name when several share the type: X is the name
//     upper-cased, '-' → '_'). Ours carry the n8n tag "genesis-managed";
//     a workflow without it is never touched. Each is created or replaced
//     when the SHA-256 of what would be sent differs from the one recorded,
//     then activated when inactive. Tagged workflows no longer declared are
//     deleted. Only then are retired credentials deleted, so a workflow
//     never points at a deleted credential.
//  4. Caddy: the ask endpoint is given the manifest's domains, then the
//     rendered config is loaded when its digest differs from the running
//     one.
//  5. n8n version: moved through a Runtime when the manifest pins another
//     (below).
//
// Re-applying an applied manifest sends only GET requests to n8n and nothing
// to Caddy's /load. Every write to n8n is recorded in the state directory
// right after it succeeds; a restarted agent resumes from there. The one
// window left is a crash between n8n creating something and the record: a
// workflow is then found again by its name (and our tag, or its exact
// content); a credential, which n8n cannot list, stays behind unused.
//
// # n8n upgrades
//
// A version switch runs backup → switch → verify → commit:
//
//  1. BeforeUpgrade (the agent's backup to storage, when the manifest asks
//     for backups), then a local backup (Config.Backups: pg_dump of n8n's
//     database and its data directory, encrypted to the agent's own age
//     key, kept in the state directory with the record of which upgrade it
//     was taken before). n8n-upgrade.json records the switch in progress.
//  2. Switch: docker compose up -d n8n with the new image; wait for
//     readiness.
//  3. Verify: every managed workflow of the manifest is active in n8n, and a
//     synthetic execution through one managed webhook (the first workflow by
//     name with a webhook trigger without path parameters) answers 2xx. Its
//     body is {"genesis":"upgrade-check","n8n_version":...}: templates with
//     side effects should ignore it. Without a webhook trigger the check is
//     readiness and active workflows, and the log says so.
//  4. Commit: the version file (n8n-version) names the new version; the
//     switch record is removed.
//
// Any failure in 2–3 is undone: n8n is stopped, the local backup restored
// (backup.Restore, the code of the agent's restores), the previous image
// started and waited for; then the version is recorded as rejected
// (Config.Rejections, reported in heartbeats) and the apply fails naming
// the failed step. While the manifest keeps asking for a rejected version,
// an apply changes nothing and answers "n8n X was rejected at T: reason;
// waiting for a manifest with another version" (a RejectedError); a
// manifest asking another version forgets the rejection. An agent stopped
// mid-switch finds the record at its next apply and undoes the switch
// (unless the version was already committed) before anything else.
//
// A downgrade (the manifest asks a version older than the running one, a
// rolled-back rollout) cannot just start the older image: n8n migrated the
// database when the newer version started, and an older n8n does not run on
// a newer schema. So a downgrade restores the newest local backup taken
// before the upgrade from that older version (losing what was written
// since) and runs it; without such a backup it is refused and rejected.
//
// Why not blue-green (start the new version beside the old one and move
// traffic when it is healthy): n8n migrates its schema in place when it
// starts, and two versions cannot share one database. A second container
// would need its own copy of the database, and would miss every write (an
// execution, a webhook's data, a user's edit) made to the old one while the
// new one started and was checked. Stopping the old version, keeping a
// backup and restoring it on failure is the honest version of that: a
// short, bounded outage and no lost or forked data.
package converge
