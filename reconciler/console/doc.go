// Package console is the fleet console: server-rendered pages an operator
// opens first, served by every reconciler replica under /console/ on the
// API's listener.
//
// Pages are html/template, styled by one embedded stylesheet and enhanced
// by one small embedded script (theme toggle without a round trip, live
// lifecycle updates); nothing is loaded from outside the binary and the
// Content-Security-Policy allows only 'self'. Every page works without
// script.
//
// Who may see it is the API's business: a person logs in with an API token
// (reconciler/auth), which the console authenticates again on every request
// and uses for every action. The session cookie seals that token with
// AES-GCM under a key every replica shares (DeriveKey of --console-key, or
// of the tokens file), so any replica opens it. Every POST carries a
// synchronizer CSRF token derived from the session's random id and must be
// same-origin by its Origin or Referer.
//
// Reads that must stay fast at 100,000 tenants (the overview) are SQL of
// package store with keyset paging; what they filter by of git (tier,
// tracking domains) the leader records in Postgres as its pass records the
// desired state, so every replica filters alike with indexed predicates
// and no replica hands SQL a list of ids. Everything that changes
// something is a request to the reconciler's own API handler, served
// in-process with the viewer's token (so the API's scopes, validation and
// audit apply unchanged, and a refusal shows the API's problem detail).
// Live updates come from one LISTEN per replica on the lifecycle channel,
// fanned out to every browser's event stream (Hub); a stream is resynced
// with its tenants' current states when it opens and whenever it may have
// missed a change. What only the leader knows (DigitalOcean's rate budget)
// the leader's console publishes to Postgres for every replica's accounts
// page.
package console
