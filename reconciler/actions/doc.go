// Package actions runs one planned action (package plan) with the side
// steps its kind needs around the DigitalOcean call (cloud.Pool.Execute),
// and records its outcome in the journal (package store):
//
//   - before it: the droplet's cloud-init user data (kinds that create a
//     droplet, plan.KindInfo.NeedsUserData), and a hibernation's prepare
//     phase (the agent confirms that n8n stopped: hibernate.go);
//   - with it: a spare's assignment (the droplet, its agent and its
//     manifest move to the tenant: spares.go), an update_manifest's render;
//   - after it: the rollback of a half-made droplet when a kind that creates
//     one fails (plan.Action.RollBack), the journal's outcome, and the
//     manifest rendered again for a droplet just recorded
//     (plan.KindInfo.RenderAfter);
//   - the watchdog's acting side (remediate.go): the action of a ladder
//     step, FAILED, the journal of a remediation and of a retired droplet;
//   - idle warnings, recorded and sent to the notifier (idle.go).
//
// What a kind needs is read from the kinds table (plan.KindInfo), never
// listed here. The loop (package reconciler) decides when an action runs:
// it journals it, claims its workspace, starts and owns the job, and feeds
// the outcome to its work queue; this package owns no goroutine, no queue
// and no leadership, serves no HTTP, and must not import the reconciler or
// its HTTP API.
package actions
