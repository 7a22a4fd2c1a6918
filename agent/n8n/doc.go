// Package n8n is the agent's client for a local n8n 1.123.x: the REST
// bootstrap that makes an instance usable, and the public API the agent
// converges credentials and workflows through.
//
// # Protocol
//
// Readiness: n8n answers /healthz as soon as it listens, but it is usable only
// when /healthz/readiness is 200. While it starts, every other route answers
// 200 text/plain "n8n is starting up. Please wait", so the client treats that
// body as ErrStartingUp on any route, never as success. WaitReady polls the
// readiness route until it is ready or the context ends.
//
// Bootstrap: a fresh n8n has no owner. Bootstrap creates it with POST
// /rest/owner/setup (the password needs 8–64 characters, a digit and an
// uppercase letter), or, when n8n answers 400 "Instance owner already setup",
// logs in with POST /rest/login. Either sets the n8n-auth cookie, which
// authorises GET /rest/api-keys/scopes and POST /rest/api-keys {label,
// scopes, expiresAt: null}; the answer carries the key once, as rawApiKey.
// The caller keeps it (the agent stores it 0600) and passes it to WithAPIKey.
//
// Public API: every call sends X-N8N-API-KEY. n8n validates bodies strictly:
// a workflow body holds only name, nodes, connections, settings and
// staticData (SpecFromExport strips a UI export to those); PUT replaces the
// whole workflow and an active one stays active. Credentials can only be
// created and deleted (and their type's schema read); rotating one is
// create, repoint the workflows, delete the old. Listings follow n8n's
// cursor until it runs out.
//
// # Errors and writes
//
// A non-2xx answer is an *Error with the status and n8n's message (never a
// header, body or secret the client sent). Retryable reports whether the
// status is worth retrying; ErrStartingUp and transport errors are "not yet"
// and worth waiting for. Writes counts every request other than GET the
// client (and the clients derived from it with WithAPIKey) sent, so a caller
// can assert that re-applying a configuration wrote nothing.
package n8n
