package api

import (
	"time"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

// TenantStatus is what the reconciler records about a tenant (its
// fleet_status row). Its fields are store.FleetRow's, in the same order,
// so the server converts a row with TenantStatus(row): a field added to
// the row does not compile until it is added here, and so decided on as
// part of the API.
type TenantStatus struct {
	Workspace       string    `json:"workspace"`
	Desired         string    `json:"desired_state"`
	Lifecycle       string    `json:"lifecycle"`
	Health          string    `json:"health"`
	DropletID       int64     `json:"droplet_id,omitempty"`
	DropletName     string    `json:"droplet_name,omitempty"`
	Account         string    `json:"account,omitempty"`
	Region          string    `json:"region,omitempty"`
	Size            string    `json:"size,omitempty"`
	IP              string    `json:"ip,omitempty"`
	SnapshotID      string    `json:"snapshot_id,omitempty"`
	SnapshotGB      float64   `json:"snapshot_size_gb,omitempty"`
	HibernatedByPol bool      `json:"hibernated_by_policy,omitempty"`
	LastCommit      string    `json:"last_commit,omitempty"`
	LastError       string    `json:"last_error,omitempty"`
	LastHeartbeat   time.Time `json:"last_heartbeat,omitzero"`
	// ManifestIssued is the newest manifest version issued to the
	// workspace's droplet; ManifestApplied the one its agent last reported
	// applied. Equal: the agent runs (and trusts the keys of) the newest.
	ManifestIssued  int64 `json:"manifest_version_issued"`
	ManifestApplied int64 `json:"manifest_version_applied"`
	// N8NVersion and AgentVersion are what the droplet's agent last
	// reported running.
	N8NVersion   string    `json:"n8n_version,omitempty"`
	AgentVersion string    `json:"agent_version,omitempty"`
	UpdatedAt    time.Time `json:"updated_at"`
	// Hibernation (idle policy and the wake fast path).
	WakeRequested bool      `json:"wake_requested,omitempty"`
	LastActivity  time.Time `json:"last_activity,omitzero"`
	// IdleWarnedAt is when the tenant was warned of an idle hibernation
	// (shown only while no activity came after it).
	IdleWarnedAt time.Time `json:"idle_warned_at,omitzero"`
	// The work queue's retry state, when the last action failed: "backing
	// off until RetryAfter (attempt Attempts, last error kind
	// LastErrorKind)"; a terminal kind has no RetryAfter and waits for a
	// change of the tenant's file or POST /v1/tenants/{id}/retry.
	RetryAfter    time.Time `json:"retry_after,omitzero"`
	Attempts      int       `json:"attempts,omitempty"`
	LastErrorKind string    `json:"last_error_kind,omitempty"`
	// NameTarget is the address the tenant's stable DNS name was last
	// written to say (spec.dns; "" when it has no record).
	NameTarget string `json:"dns_target,omitempty"`
	// HealthDetail is what the droplet's newest heartbeat said: each
	// component's state and reason (local repairs included), memory,
	// disk, uptime (absent before the first heartbeat).
	HealthDetail *schema.HealthDetail `json:"health_detail,omitempty"`
}

// Fleet is GET /v1/fleet: every tenant, what git declares next to what the
// reconciler last recorded, and the leader's last plan's leftovers.
type Fleet struct {
	Commit string `json:"commit"`
	// SyncError is why the latest state repository sync failed (e.g. a
	// history rewrite refused); the fleet is reconciled at Commit meanwhile.
	SyncError string         `json:"sync_error,omitempty"`
	Leader    bool           `json:"leader"`
	At        time.Time      `json:"at"`
	Tenants   []FleetTenant  `json:"tenants"`
	Orphans   []plan.Orphan  `json:"orphans"`
	Refused   []plan.Refusal `json:"refused"`
	Deferred  []string       `json:"deferred,omitempty"`
	Cost      FleetCost      `json:"cost"`
}

// Tenant returns the tenant id of f, and whether it is listed.
func (f Fleet) Tenant(id string) (FleetTenant, bool) {
	for _, t := range f.Tenants {
		if t.Workspace == id {
			return t, true
		}
	}
	return FleetTenant{}, false
}

// FleetTenant is one tenant in GET /v1/fleet.
type FleetTenant struct {
	TenantStatus
	Declared   bool     `json:"declared"`
	Valid      bool     `json:"valid"`
	FileErrors []string `json:"file_errors,omitempty"`
	Commit     string   `json:"desired_commit,omitempty"`
	// MonthlyUSD is what the tenant costs now: its droplet's size price,
	// or its snapshot's storage when hibernated.
	MonthlyUSD float64 `json:"monthly_usd"`
	// StableName is the tenant's <workspace>.<spec.dns.zone>: the name
	// customers' CNAMEs target ("" without spec.dns).
	StableName string `json:"stable_name,omitempty"`
	// RecoveryPoint is the tenant's newest copy (nil: backups are not
	// wired in, or the tenant is not known to them yet).
	RecoveryPoint *RecoveryPoint `json:"recovery_point,omitempty"`
}

// RecoveryPoint is a tenant's recovery point: its newest good copy, a
// backup or a snapshot, against its tier's objective.
type RecoveryPoint struct {
	// At is when the copy's data was taken (zero: no copy).
	At time.Time `json:"at,omitzero"`
	// Kind is "backup" or "snapshot" ("" when there is no copy).
	Kind string `json:"kind,omitempty"`
	// ID is the backup id or the snapshot id.
	ID string `json:"id,omitempty"`
	// AgeSeconds is how old the copy is; for a live tenant with no copy,
	// how long its droplet has been live.
	AgeSeconds float64 `json:"age_seconds"`
	// ObjectiveSeconds is the tier's recovery-point objective.
	ObjectiveSeconds float64 `json:"objective_seconds"`
	// Stale: the tenant runs and its copy is older than the objective.
	Stale bool `json:"stale"`
}

// FleetCost is GET /v1/fleet's monthly totals in USD.
type FleetCost struct {
	Droplets  float64 `json:"droplets_monthly_usd"`
	Snapshots float64 `json:"snapshots_monthly_usd"`
	Total     float64 `json:"total_monthly_usd"`
}

// Observed is GET /v1/observed: the observation the planner used, when it
// was made and by which replica. genesis plan refuses one without
// observed_at and leader (a reconciler older than this document).
type Observed struct {
	plan.Observed
	ObservedAt time.Time `json:"observed_at"`
	Leader     string    `json:"leader"`
	// LeaderEpoch is the observing leader's lease epoch (0 when leader
	// election records none).
	LeaderEpoch int64 `json:"leader_epoch,omitempty"`
}

// RetryResult is the 202 answer of POST /v1/tenants/{id}/retry. (POST
// /v1/tenants/{id}/wake answers the tenant's TenantStatus.)
type RetryResult struct {
	Workspace string `json:"workspace"`
	Result    string `json:"result"`
}

// ActionRequest is the body of POST /v1/tenants/{id}/actions: an
// operator's remediation step for the tenant's droplet.
type ActionRequest struct {
	// Action is reboot, power_cycle, rebuild, snapshot or backup.
	Action string `json:"action"`
	// Reason is why (audited; 1-500 characters).
	Reason string `json:"reason"`
}

// ActionResult is the 202 answer of POST /v1/tenants/{id}/actions: the
// step is recorded; the leader's watchdog takes it at its next run.
type ActionResult struct {
	Workspace string `json:"workspace"`
	Action    string `json:"action"`
	Result    string `json:"result"`
}
