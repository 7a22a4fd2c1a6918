// Package stateapi is the dashboard's API to the desired state: it reads
// tenants as git declares them (next to what the reconciler observes) and
// turns every change into a git commit.
//
// The dashboard never writes Postgres or DigitalOcean. A write (onboard,
// replace, JSON merge patch, credential, offboard) names the version of the
// tenant file it was made against (If-Match: the file's git blob hash, the
// ETag of every tenant response); the change is applied to the file's YAML
// node tree so comments and key order survive, validated with the same
// functions and messages as genesis validate, committed with the caller as
// author and pushed by a tenants.Writer, which rebases over commits that
// landed meanwhile and refuses a concurrent change of the same tenant. The
// response carries the commit. DELETE never removes the file: it sets
// state: absent, the only declaration that destroys a droplet. Each write
// is recorded in audit_log with the caller and the commit.
//
// Caller input never shapes a commit message: a body is decoded once
// (yamledit.ParseJSON), before If-Match or the tenant is looked at, and
// refused with 400 naming the field when a field name at any depth is not
// one a tenant file can have, or it nests or holds past the limits; what a
// message lists (a patch's fields, a credential's name and type) is
// quoted, and a correlation id is one of a fixed alphabet, so no
// caller-chosen byte starts a line or forges a trailer.
package stateapi
