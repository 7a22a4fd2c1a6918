package api

import "genesis.dev/fleet/schema"

// Tenant is one tenant in the tenant API's answers: its file as declared
// at Commit, and what the reconciler records about it (Status, nil before
// it planned the tenant).
type Tenant struct {
	ID     string         `json:"id"`
	File   string         `json:"file"`
	ETag   string         `json:"etag"`
	Commit string         `json:"commit"`
	Valid  bool           `json:"valid"`
	Errors schema.Errors  `json:"errors,omitempty"`
	Tenant *schema.Tenant `json:"tenant"`
	YAML   string         `json:"yaml,omitempty"`
	Status *TenantStatus  `json:"status"`
	// RecoveryPoint is the tenant's newest copy (nil: backups are not
	// wired in, or the tenant is not known to them yet).
	RecoveryPoint *RecoveryPoint `json:"recovery_point,omitempty"`
	// Availability is what the availability prober measured of the
	// tenant (GET /v1/tenants/{id} only; nil: not probed in 30 days, or
	// the prober is not wired in).
	Availability *TenantAvailability `json:"availability,omitempty"`
}

// TenantList is GET /v1/tenants.
type TenantList struct {
	Commit  string   `json:"commit"`
	Tenants []Tenant `json:"tenants"`
}

// WriteResult is the answer to every write of the tenant API.
type WriteResult struct {
	Commit    string `json:"commit"`
	Branch    string `json:"branch"`
	File      string `json:"file"`
	ETag      string `json:"etag"`
	Proposed  bool   `json:"proposed"`
	Unchanged bool   `json:"unchanged"`
}
