// Package schema is the contract of the state repository: the Go types of
// genesis.yaml (kind Fleet) and tenants/<id>.yaml (kind Tenant), their strict
// decoding and validation, and the golden workflow templates they refer to.
//
// Decoding is strict: an unknown or duplicate field, a YAML alias, a custom
// tag or a second document is an error, and every error names its place as
// file:line:col. Validation comes in three layers so each file is judged on
// its own: DecodeTenant checks what the file alone can tell (formats, names,
// id = file name, sealed credentials parse as age armor); Tenant.Check adds
// what needs the fleet and the templates (regions, sizes, placeholders,
// params); CheckUnique adds what spans tenants (ids, domains), where the
// first file by name keeps a contested id or domain. LoadDir runs all three
// over a whole repository. A bad file makes only its own tenant invalid; it
// never reads as "tenant deleted", because deletion is explicit
// (state: absent).
//
// The package imports nothing else of this module: every other part builds
// on it, and tools outside this module can read the same files with it.
package schema
