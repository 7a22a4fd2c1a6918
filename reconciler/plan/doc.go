// Package plan decides what the reconciler does. Compute is a pure function
// of (desired, observed, now): the state repository at a commit, what
// DigitalOcean and Postgres showed, and the time. It returns a Plan — the
// actions to run, in priority order (wake > create > resize > hibernate >
// cleanup), plus orphans, capacity shortfalls and safety refusals to report —
// and does no I/O, so the same inputs always give the same plan and a plan
// can be previewed (genesis plan) exactly as it would run.
//
// The planner is level-based: it looks only at current state, never at which
// event happened. Droplet names are deterministic (genesis-<ws>-<generation>)
// and tagged, so an executor that retries finds what the last try made.
// Deletion is explicit: only a tenant that says state: absent loses its
// droplet. A droplet nobody declares is an orphan to report; an incomplete
// observation defers every destructive action; and a plan past the fleet's
// safety limits is refused whole until a person overrides.
package plan
