// Package cloud is the reconciler's DigitalOcean side: it observes the
// fleet's droplets and snapshots in every account and executes planned
// actions (package plan) against them through godo.
//
// # Accounts and budgets
//
// A Pool holds, per account, a godo client (oauth2 static token), a rate
// budget and a job scheduler. Every HTTP attempt passes a RoundTripper that
// first takes a token from the account's budget and then records the
// answer: the genesis_do_* metrics, RateLimit-Remaining/Reset, and 429s.
// The budget mirrors DigitalOcean's sliding windows (250 requests a minute,
// 5,000 an hour, per token): a token returns to the bucket one window after
// the request that took it was answered, so the scheduler bursts as far as
// DigitalOcean allows and no further. When the headers show that somebody
// else spends the same token, the server's count caps the bucket until
// RateLimit-Reset; a 429 closes it until Retry-After. Waiting requests and
// jobs are served by priority (plan.Kind.Priority: wake before create
// before resize before hibernate before cleanup; Observe's listings before
// all), first come first served within one; each account runs at most
// Limits.MaxInFlight jobs at once.
//
// Retries are ours, not godo's: 5xx, 429, timeouts and connection errors
// are retried with capped, jittered exponential backoff; anything else is
// returned at once with a kind (ErrorKind: IsCapacity, IsTerminal,
// IsNotFound, IsTransient). godo's own retries are off because they would
// send a droplet create again blindly; a retried create here lists first.
//
// # Idempotent execution
//
// Execute is level-based: each step looks at what DigitalOcean shows before
// acting, using the planner's deterministic names — a droplet is found by
// its name among those tagged genesis:ws:<id>, a hibernation snapshot by
// plan.SnapshotName. So the reconciler resumes a journaled operation after
// a crash simply by calling Execute again: a create finds the droplet the
// last try made, a hibernate that already snapshotted goes straight to the
// destroy, and a droplet is destroyed only once its snapshot exists.
// Execute reports each step through ExecOptions.Progress for the journal.
//
// # Fencing
//
// Only the leader mutates DigitalOcean, and only while it holds its lease
// (Lease, see reconciler/store for the epoch behind it). The leader puts
// its Lease in the context (WithLease); the transport then checks, before
// every mutating request (POST, PUT, DELETE: create, destroy, droplet
// actions, tags, snapshot deletes; reads are not fenced), that the lease
// is valid and proves it on the lock's own session. A lease that fails
// is revoked and its context cancelled, and the request is not sent: the
// call returns ErrFenced (KindFenced), which the caller treats as "stop
// leading", not as the action's failure. A Pool made with RequireLease
// refuses mutating requests that carry no lease. The request in flight at
// the moment the lock is lost may still land; the next leader's resume
// finds its effect by name (above).
//
// Time (the budget's windows, backoffs, waits on boots and actions) comes
// from Config.Now and Config.Sleep, so tests drive it with the DigitalOcean
// simulator's clock instead of sleeping.
package cloud
