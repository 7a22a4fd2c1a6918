// Package api is the wire contract of the reconciler's admin API: the JSON
// bodies of GET /v1/fleet, /v1/tenants..., /v1/observed and of the wake and
// retry answers, and the one error body every route of every replica
// answers with: RFC 9457 problem details (application/problem+json), whose
// member "error" repeats the detail for clients written before it. The
// server (reconciler/fleetapi, reconciler/stateapi, reconciler/agentapi,
// reconciler/auth) writes these types; the typed client (api/client), the
// admin CLI, the demo and the tests read them. api/openapi.yaml documents
// the same bodies, and reconciler/fleetapi's tests keep the two agreeing.
//
// The types are values, not database rows: the server converts what it
// stores into them. api imports only the standard library and the pure
// packages schema and reconciler/plan; it must not import the database,
// the cloud, the reconciler or any server package, so a client links none
// of them.
package api
