// Package agent is the droplet side of the agent protocol: it enrolls the
// droplet with the reconciler, pulls and verifies the droplet's signed
// manifest, hands an accepted manifest to an Applier, and sends heartbeats.
//
// Trust follows Uptane's director role with TUF's defences. On first start
// the agent makes its own age X25519 identity and ed25519 key in its state
// directory; the private halves never leave the droplet. Enrollment trades
// the one-time provisioning token from cloud-init for a per-droplet bearer
// credential. The keys are on disk before the first try and the
// reconciler derives the credential from the token, droplet id and keys, so
// a retry after a lost response gets the same credential. Enrollment is
// retried until it succeeds: with backoff after network errors, 5xx
// (including 503 "not yet", before the reconciler recorded the droplet) and
// 429; slowly (Config.RefusedRetry), logged as an error, after a refusal
// (401, 403, 400), since exiting would only make systemd restart the agent.
// A droplet woken from a snapshot keeps its disk, so its keys, but has a
// new droplet id and a new token: it enrolls again with the same keys. The
// reconciler revokes a credential when its droplet is destroyed or
// replaced; after RevokedAfter refusals in a row (401/403; the first ones
// may be a replica that has not yet heard of a new credential) the agent
// enrolls once more if it still has a token, else it keeps asking at its
// slowest backoff and keeps running its last good configuration.
//
// A manifest is a DSSE envelope signed by a key the agent trusts (the keys
// cloud-init gave it, plus keys that earlier accepted manifests announced in
// signing_keys: that is how the signing key rotates). Verify accepts one
// only if it is for this workspace and droplet, of a version no lower than
// the one applied (rollback), never the applied version with other bytes,
// not an absurd jump, not expired (freeze), not issued in the future beyond
// the clock-skew allowance, within the 4 MiB limit, strictly decoded, and
// every credential opens with the droplet's identity bound to its own slot.
// Anything else is rejected with a Reason; the droplet keeps running its
// last good configuration and reports the reason in its next heartbeat.
//
// An accepted manifest is applied first, then its exact bytes, version and
// any newly trusted keys are written to the state directory in one atomic
// replace (write, fsync, rename, fsync the directory) before success is
// reported. The state directory therefore holds the floor below which a
// restarted agent never goes. Decrypted credentials exist only in memory.
//
// The package must not grow dependencies on Postgres, DigitalOcean or git
// clients: it runs on every droplet (a test enforces it).
package agent
