// Package fleetapi is every replica's HTTP API around the reconciler's
// loop: health and readiness, metrics, GET /v1/fleet (what git declares
// next to what fleet_status records, with costs), GET /v1/observed (the
// leader's stored observation, for genesis plan), the wake and retry fast
// paths, the push webhook, and the mounting of the tenant API (stateapi)
// and the agent protocol (agentapi), each route behind the scope its route
// table names (routes.go).
//
// It depends on the loop only through the small interfaces it declares
// (Fleet, Waker, Retrier, Observations, Pusher), which
// *reconciler.Reconciler, *reconciler.Observations and *reconciler.Events
// satisfy; it must not import the root package reconciler (whose tests use
// View), the cloud or the planner's executor. Its answers are the wire
// types of package api; every error is api.Problem.
package fleetapi
