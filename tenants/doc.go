// Package tenants is the desired-state repository as a Go value: it reads
// genesis.yaml, the golden templates and every tenants/<id>.yaml at one git
// commit and hands the reconciler a Snapshot of what should exist.
//
// # Incremental index
//
// Reading is incremental. The index remembers, per file path, the git blob
// hash it last saw and what parsing that blob produced. At a new commit it
// walks the commit's tree (cheap: hashes only, and the whole tenants/ tree is
// skipped when its own hash has not moved) and decodes only the blobs that
// are new or changed, so a commit touching one tenant costs one parse however
// large the fleet. The tenants/ tree itself is compared with the index in its
// raw form, entry by entry, without a value made for each unchanged entry
// (tree.go). Decoding (schema.DecodeTenant) is the expensive step, so
// the decoded *schema.Tenant is kept per blob; the cheaper rules that depend
// on genesis.yaml and the templates (schema.Tenant.Check) are re-run for
// every tenant only when the fleet or a template changed. The rules that
// span tenants (schema.CheckUnique: ids and domains) are incremental too: an
// index kept with the snapshot lists, for every id and domain, the files
// claiming it, and a sync re-checks only the files whose version changed
// and those sharing an id or a domain with them (unique.go), with the same
// errors the whole-set check gives. The Snapshot is patched the same way:
// a commit that changes tenant files but neither the fleet nor a template
// copies the previous tenant map (a Snapshot is never modified once
// returned) and redoes only the tenants it touched, those whose
// cross-tenant errors moved, and ids with two files; the changed list and
// the errors are kept per file and updated likewise. A commit that changes
// genesis.yaml or a template re-checks and rebuilds every tenant.
//
// # Bad files never delete anything
//
// A tenant whose file fails validation keeps the last version that was valid
// and is reported with status invalid and its errors: the reconciler keeps
// acting on the old version and never reads the failure as "tenant removed".
// An invalid genesis.yaml likewise keeps the last valid fleet, and a broken
// template keeps its last valid version for the tenants still pinned to it.
// A tenant whose file is deleted is simply absent from the next Snapshot; the
// planner reports it as an orphan and destroys nothing (only state: absent
// destroys).
//
// # Sources
//
// Source reads a git repository: either a URL, cloned (bare) into a cache
// directory and fetched on every Sync, or a local path opened in place. Both
// read the committed head of the configured branch, never uncommitted edits.
// A new head that does not descend from the last reconciled commit (a
// force-push to older or unrelated history) is refused with ErrNotDescendant
// and the previous Snapshot stays current until a person resolves it.
//
// # Credentials
//
// A URL's user information is a credential ("https://TOKEN@host/...",
// "https://user:TOKEN@host/..."): Open and NewWriter split it off into HTTP
// basic auth, passed to go-git on every fetch and push, and store only the
// clean URL as the clone's origin (rewriting an origin an older version
// stored with the credential). Clones are 0700, their config 0600. Every
// address that reaches a log line or an error goes through RedactURL (user
// name and password removed), and every error that leaves Sync, Fetch or
// Write is a *RedactedError: go-git's message with the credential scrubbed.
//
// DirSource reads a folder's files directly, committed or not, for the demo
// and for "genesis plan --state DIR" on a pull request's checkout; its
// snapshots carry no commit.
//
// Watcher drives either: it syncs at start, then on a jittered poll interval,
// on Trigger (the push webhook, after VerifySignature), and, for a DirSource,
// shortly after fsnotify reports a saved file (events are debounced).
package tenants
