// Package caddy renders the droplet's Caddy configuration and applies it
// through Caddy's admin API.
//
// # Configuration
//
// Render builds the whole JSON config from typed structs (never from string
// templates): one HTTPS server whose routes send each declared host (the
// droplet's bootstrap <ip>.sslip.io name and every tracking domain) to n8n
// through reverse_proxy, then a 404 for anything else; Caddy's automatic
// HTTPS adds the HTTP→HTTPS redirects on the HTTP port. Certificates are
// obtained on demand at the first TLS handshake for a name, and only when
// the agent's ask endpoint allows it (Caddy calls GET <ask>?domain=<sni>; 200
// allows). Issuers are ACME in production and Caddy's internal CA in offline
// tests (with install_trust false, so nothing touches the system trust
// store). A private ACME CA (Pebble in tests, see internal/acmetest) is an
// ACME issuer with its directory URL and the roots its API is trusted with
// (trusted_roots_pem_files). The CA validates a name at the address it
// resolves to: when the listeners are bound to one address or moved off
// ports 80/443, the issuer's challenge solvers bind to that address and
// answer on the same ports (challenges.bind_host and the HTTP-01 and
// TLS-ALPN-01 alternate_port), so Caddys on distinct loopback addresses
// answer their own validations on shared ports. The admin block is always part of the config (listen on
// 127.0.0.1:2019, persist false): a config without it would reset the admin
// endpoint to defaults and turn autosave on. grace_period bounds how long a
// reload waits for old connections (the default waits forever, and n8n's
// websockets would pile old servers up).
//
// The rendered JSON is canonical (object keys sorted, compact), the same
// form Caddy answers GET /config/ in, so the SHA-256 digest of the bytes
// identifies a config on both sides.
//
// # Applying
//
// POST /load replaces the running config atomically: a 400 {"error": ...}
// leaves the old one running and comes back as an *Error. The admin API
// accepts only requests whose Host is its listen address and mutations with
// Content-Type application/json. Client.Load posts a config only when its
// digest differs from the last one applied; the first time (after an agent
// restart) it asks Caddy for the running config and compares with that, so
// a config that is already running is never posted again.
//
// # Ask
//
// Ask is the on-demand TLS permission endpoint. It answers 200 only for the
// declared domains, which are swapped atomically by Set, so a removed domain
// gets no new certificate and an undeclared name fails the TLS handshake.
package caddy
