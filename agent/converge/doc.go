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
//  5. n8n version: moved through a Runtime when the manifest pins another.
//
// Re-applying an applied manifest sends only GET requests to n8n and nothing
// to Caddy's /load. Every write to n8n is recorded in the state directory
// right after it succeeds; a restarted agent resumes from there. The one
// window left is a crash between n8n creating something and the record: a
// workflow is then found again by its name (and our tag, or its exact
// content); a credential, which n8n cannot list, stays behind unused.
package converge
