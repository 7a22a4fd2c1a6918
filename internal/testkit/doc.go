// Package testkit is the scaffolding the module's tests share, so that no
// package writes its own copy: a git state repository built from typed
// values (a fleet, tenants marshalled through the schema types, credentials
// sealed to the fleet, commits, a bare remote to push to), and a small
// port and wait toolkit (free loopback ports, polling with a deadline).
// Stopping a process group is internal/procgroup's: code that is not a
// test needs it too.
//
// Only tests import testkit. It may import the schema packages and the
// standard library's testing support; it must not import the reconciler,
// the agent, the store or any package that does network or database I/O of
// its own, so that any package's tests can use it without an import cycle.
// The module-wide guard tests (guard_test.go) also live here.
package testkit
