// Package agentapi is the reconciler's side of the agent protocol: it
// provisions droplets with a one-time enrollment token, enrolls agents,
// renders, signs and serves each droplet's manifest, and ingests heartbeats.
//
// It keeps the protocol, the caches and the signing; package store owns the
// tables and runs every statement (agents.go, enrollment.go, manifests.go,
// heartbeats.go there): this package writes no SQL.
//
// # Trust
//
// The model is Uptane's director: the reconciler signs per-droplet metadata
// (a DSSE envelope around a schema.Manifest) that each droplet pulls. A
// droplet's cloud-init user data carries the reconciler URL, the signing
// public keys and a one-time token (256 random bits; only its SHA-256 is
// stored, bound to one workspace and droplet name, single use, expiring
// after TokenTTL). The token is minted before the create; when
// DigitalOcean answers the create (or a resumed create finds the droplet by
// its name), the executor records the droplet id and binds the workspace's
// unbound tokens for that name to it in the same transaction
// (store.Created; store.Finish binds them too, should that journal step
// have failed). On first boot the agent makes its own age identity and
// ed25519 key and POSTs the public halves with the token and its droplet id
// to /v1/enroll. The token is consumed by one UPDATE ... WHERE used_at IS
// NULL AND expires_at > now AND droplet_id = <claimed id>, in the
// transaction that records the agent, so of two concurrent uses exactly one
// wins and a failed enrollment stores nothing. A token not bound yet (the
// agent was faster than the executor's record) is answered 503 "not yet"
// with Retry-After, and the caller's claimed id is never bound: a token
// cannot squat another droplet's id. A token bound to another droplet, or
// for another workspace or droplet name, is 403 and stays usable by its own
// droplet; an unknown or expired one is 401.
//
// The agent gets a per-droplet bearer credential: HMAC-SHA256 keyed by the
// token over a label, the droplet id and the agent's canonical age
// recipient and ed25519 public key (length-prefixed), stored as a SHA-256
// only. A retry of a completed enrollment with the same token, droplet id
// and keys within the token's lifetime therefore gets the same credential
// and changes nothing (result "repeated"); other keys with a used token are
// 401. So a lost response (a reset connection, an agent timeout, a crash
// after the commit) strands nobody: the agent keeps its keys on disk and
// retries. (Whoever holds the token and the agent's public keys can derive
// the credential; the token lives in the droplet's user data, as before.)
// The answer is written before any rendering: the first manifest is
// rendered just after by Run's worker (queued; when the queue is full the
// sweep renders it). Refusals are logged at most refusalBurst per result a
// minute, then one summary line with the count not logged; the metric
// genesis_enrollments_total counts every one. A droplet whose agent never
// gets through is rebuilt by the watchdog's boot deadline (a new droplet, a
// new token) and FAILED if the rebuilt one fails too.
//
// Every later call
// names its droplet through that credential alone, so an agent can read
// only its own manifest and write only its own heartbeats. A droplet woken
// from a snapshot keeps the agent's identity and enrolls again with its new
// droplet id and a new token: it gets a new agents row whose manifest
// versions continue from the workspace's highest, so the agent never sees a
// version go down.
//
// # Revocation
//
// A credential lives as long as its droplet is its workspace's droplet.
// When fleet_status moves a workspace off a droplet (absent destroy,
// hibernation, wake, resize, watchdog rebuild, spare assignment, whatever
// the path), a deferred trigger (migration 0011) sets that droplet's
// agents.revoked_at in the same transaction, unless at commit the droplet
// is its agent's workspace's droplet again (a spare's droplet moves to a
// tenant with its agent). The snapshot a droplet is woken or resized from
// holds the old agent's state and credential: revoked with the droplet. A
// revoked agent stays revoked (enrollment cannot give it a new credential).
// Revoked and unknown credentials are both answered 401 on the manifest and
// the heartbeat routes, and the heartbeat statement ignores a revoked
// agent's heartbeats queued before the revocation reached this replica.
//
// Every replica keeps the set of valid credentials in memory (credSet: the
// first 8 bytes of each hash, about 8.4 bytes per agent), loaded when the
// notification listener connects or reconnects and kept current by the
// agents table's trigger ("k <droplet> <hash>" when a credential becomes
// valid, "r <droplet> <hash>" when it is revoked, replaced or deleted) and
// by this replica's own enrollments. A credential outside the set costs no
// database round trip; until the set is loaded, credentials are looked up
// in Postgres. A replica may refuse a credential issued elsewhere for the
// notification's latency (milliseconds); agents retry a 401.
//
// Clients' clocks are not trusted: a heartbeat's last_activity and sent_at
// later than the server's clock plus MaxClockSkew (5 minutes) are stored as
// that, so a droplet cannot keep idle hibernation off by reporting activity
// in the future, and an earlier last_activity never lowers the stored one.
//
// The signing key rotates through the manifests themselves. Config.Announce
// lists public keys that every manifest carries in signing_keys; an agent
// that accepts a manifest (signed by a key it already trusts) trusts the
// announced keys from then on, and new droplets' user data carries them
// too. Once every agent has applied a manifest announcing the new key, the
// reconciler may sign with it. The announced keys and the signing key are
// part of a manifest's inputs, so changing either issues every droplet a
// new manifest.
//
// # Manifests
//
// The renderer builds a droplet's manifest from the tenant at the current
// desired-state snapshot: workflows rendered with the tenant's params (the
// TEMPLATE_*_UUID placeholders are kept for the agent to map), the n8n
// version (tenant or fleet default), tracking domains plus <ip>.sslip.io,
// the declared state, and every credential opened in memory with the fleet
// identity and sealed again to the droplet's own age recipient, bound to
// {workspace, droplet, name}. Plaintext exists only in memory during that
// call: never in Postgres, logs, errors or on disk. A digest of the inputs
// is stored with each manifest; a droplet is rendered again only when it
// changes (tenant blob, templates, fleet defaults, ip, recipient, signing
// and announced keys), or when less than a third of the manifest's
// lifetime remains (re-signed with a new version, so an agent never
// freezes on an expired manifest while the reconciler lives). Versions come from agents.manifest_version under a row
// lock and the manifests trigger refuses any that does not grow.
//
// Rendering happens after an enrollment (any replica), on the loop's
// update_manifest action, and in a periodic sweep on the leader that
// renders whatever drifted or nears expiry (kicked on every new snapshot).
//
// # Serving
//
// GET /v1/manifest answers from memory: each replica caches the newest
// version and ETag per droplet, so a 304 costs a hash lookup and a string
// compare. The envelopes themselves (a 200) come from a cache bounded in
// bytes (Config.EnvelopeCacheBytes, least recently used out) and, once
// pushed out, from Postgres by (droplet, version): a fleet-wide change holds
// the envelopes its agents are about to fetch, not every droplet's at once.
// The leader's sweep likewise reads and renders the fleet a page of
// droplets at a time. With ?wait= (at most 60s) and a matching If-None-Match the
// request waits on the droplet's notification channel and returns the new
// envelope as soon as one is stored. Replicas learn of manifests issued
// elsewhere through Postgres LISTEN/NOTIFY on channel genesis_agents
// ("m <droplet> <version>" after a manifest commits, "a <droplet>" after an
// enrollment, which drops cached credentials of that droplet, and the
// credential notifications above); when the listening connection drops,
// and again once LISTEN is in place (also the first time, so nothing stored
// before a replica listened is missed), the caches are flushed and refilled
// from the tables on demand, and the set of valid credentials is loaded
// again.
//
// # Heartbeats
//
// POST /v1/heartbeat is decoded strictly, checked against the credential's
// workspace and droplet (403 otherwise, nothing stored), and a sequence
// number at or below the last accepted one is ignored (still 202). Accepted
// heartbeats go to a bounded in-memory queue (503 when full; 202 once
// queued: a heartbeat lost in a crash is replaced by the next one a minute
// later) and a batcher writes every BatchInterval or BatchSize heartbeats in
// one statement (store.WriteHeartbeats: UPDATE ... FROM unnest(...)) into fleet_status and
// agents.last_heartbeat_seq, which also refuses a sequence number that does
// not grow, so replicas racing on one droplet cannot go back. A heartbeat
// touches its workspace's row only when the row records its droplet, or
// records none while PROVISIONING, BOOTING or WAKING (the new droplet may
// enroll before its action finishes): never a HIBERNATED, DESTROYED or
// PENDING row.
//
// Lifecycle, for a heartbeat from the droplet fleet_status records: the
// table of package reconciler/lifecycle (HeartbeatRules), rendered into the
// batched statement. A running state becomes ACTIVE_HEALTHY when its
// applied manifest version equals the issued one and the agent reports no
// problem; a heartbeat with problems makes ACTIVE_HEALTHY, ACTIVE_CRITICAL
// or REBOOTING ACTIVE_DEGRADED; a pre-ACTIVE droplet whose agent applied a
// manifest is DEPLOYING, one that applied none CONFIGURING; the rest stay.
// Health is healthy when every component is ok, else degraded. Enrollment
// moves INITIALIZING (or BOOTING) to HANDSHAKE.
package agentapi
