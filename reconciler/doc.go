// Package reconciler is the control plane's loop: it makes DigitalOcean and
// Postgres match the state repository.
//
// Each pass observes the desired state (a tenants.Snapshot at a commit) and
// the actual state (DigitalOcean listings by tag, fleet_status and the
// operations journal), computes a plan with the pure plan.Compute, and hands
// its actions to the executor (package actions: an action with the side
// steps its kind needs, as the kinds table plan.KindInfo says): each action
// is journaled before it starts, runs through the per-account rate-aware
// scheduler, and has its outcome recorded with an audit entry. Only the
// replica holding the Postgres leader lock plans and executes; every
// replica serves HTTP (package reconciler/fleetapi, through the loop's
// methods: Snapshot, Wake, Retry …). After a crash the new leader first
// resumes the journal's unfinished operations, which are idempotent, then
// plans afresh.
//
// Under the pass is a keyed work queue (queue.go): one job per workspace,
// whose outcome maps by error kind to one queue operation — forget on
// success, a capped jittered backoff for a transient error, a wait for a
// changed tenant file or an operator's retry for a terminal one, a known
// wait for "not yet". The retry state is in Postgres (tenant_retries), so
// a new leader continues it, and is an input of the pure planner
// (plan.Observed.Held), which leaves held workspaces alone. The Reconciler
// owns its workers: Run waits for them when leadership ends; callers of
// Pass and Watch outside Run call Wait.
//
// Every replica is equal to callers: a push webhook, a dashboard commit, a
// wake or a retry taken by any replica is announced on the Postgres channel
// store.EventChannel, which every replica follows (events.go), so the
// leader acts at once; and the leader stores each observation in Postgres,
// from which every replica answers GET /v1/observed (observed.go stores and
// loads it; fleetapi serves it).
//
// Leadership is fenced. Each take of the lock has a new epoch
// (store.Leader.Epoch); everything the leader runs carries a cloud.Lease of
// that epoch and the epoch for the journal (store.WithEpoch). Before every
// mutating DigitalOcean request the lease is proven on the lock's own
// session; a journal write meeting a newer epoch is refused. Either failure
// revokes the lease: its context is cancelled, the request is not sent
// (cloud.ErrFenced), jobs leave their operations in flight without
// recording a failure, and the replica stops leading until it takes the
// lock again (with a new epoch).
package reconciler
