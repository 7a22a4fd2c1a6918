package tenants

import (
	"sort"
	"time"

	"genesis.dev/fleet/schema"
)

// Status says whether a tenant's current file is valid.
type Status string

// The statuses of a tenant in a Snapshot.
const (
	// StatusValid: the file at this commit passed every rule and Tenant is
	// that file's content.
	StatusValid Status = "valid"
	// StatusInvalid: the file at this commit failed; Errors says why and
	// Tenant is the last valid version (nil when there never was one).
	StatusInvalid Status = "invalid"
)

// TenantState is one tenant of a Snapshot.
type TenantState struct {
	// ID is the workspace id, taken from the file name.
	ID string
	// Tenant is the version to act on: the current file when Status is
	// valid, else the last valid version, or nil when the tenant has never
	// been valid (then there is nothing to act on yet).
	Tenant *schema.Tenant
	// File is the tenant's file at this commit, relative to the repository.
	File string
	// Blob is the git blob hash of File at this commit.
	Blob string
	// ValidBlob is the blob hash Tenant was decoded from; it differs from
	// Blob when the current file is invalid.
	ValidBlob string
	// Status is valid or invalid.
	Status Status
	// Errors lists what is wrong with File (nil when valid).
	Errors schema.Errors
}

// Snapshot is the desired state at one commit: what the reconciler plans
// from. A Snapshot is never modified after it is returned; the maps are safe
// to read from any goroutine.
type Snapshot struct {
	// Commit is the commit hash (hex); empty for a DirSource.
	Commit string
	// Time is the commit's committer time; for a DirSource, when it was read.
	Time time.Time
	// Correlation ties the work this commit causes (plan, actions,
	// manifests, heartbeats) to where it came from: the commit message's
	// Genesis-Correlation-Id trailer (the API writes the id of the request
	// that made the commit), else "git-" and the commit's first 12 hex
	// digits; "" for a DirSource.
	Correlation string
	// Fleet is genesis.yaml: the file at this commit when it is valid, else
	// the last valid fleet; nil when there never was one.
	Fleet *schema.Fleet
	// FleetErrors lists what is wrong with genesis.yaml at this commit.
	FleetErrors schema.Errors
	// FleetChanged reports that Fleet differs from the previous Snapshot.
	// Every tenant's defaults may have moved, so a planner re-plans all.
	FleetChanged bool
	// Templates are the golden templates by name: each valid template at this
	// commit, plus the last valid version of a broken or deleted template
	// that some tenant in Tenants still uses.
	Templates map[string]*schema.Template
	// Tenants maps each tenant id with a file at this commit to its state.
	Tenants map[string]TenantState
	// Changed lists, sorted, the tenant ids whose state differs from the
	// previous Snapshot: added, removed (absent here), edited, turned valid
	// or invalid, or using a template that changed.
	Changed []string
	// Errors is every error of every file at this commit, sorted.
	Errors schema.Errors
}

// IDs lists the tenant ids, sorted.
func (s Snapshot) IDs() []string {
	ids := make([]string, 0, len(s.Tenants))
	for id := range s.Tenants {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Invalid lists the ids of tenants whose file is invalid, sorted.
func (s Snapshot) Invalid() []string {
	var ids []string
	for id, t := range s.Tenants {
		if t.Status == StatusInvalid {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// Stats counts the work the index has done since it was created.
type Stats struct {
	// Syncs counts successful syncs that looked at a new commit or folder
	// state.
	Syncs int64
	// Parses counts files decoded: tenant, fleet and template files.
	Parses int64
	// TenantParses counts tenant files decoded (schema.DecodeTenant).
	TenantParses int64
	// Checks counts schema.Tenant.Check runs (the rules that need the fleet
	// and the templates).
	Checks int64
}
