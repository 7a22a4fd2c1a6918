package api

import "time"

// Availability is GET /v1/availability: what the availability prober
// (reconciler/availability) measured, per tier and for the tenants with
// the lowest 30-day ratio.
type Availability struct {
	// Objective is the availability objective the budgets are counted
	// against (0.995).
	Objective float64 `json:"objective"`
	// At is the end of every window (the reading's time, to the minute).
	At time.Time `json:"at"`
	// Tiers has one entry per tier that had a probe in 30 days.
	Tiers []TierAvailability `json:"tiers"`
	// Worst are the ?worst=N tenants with the lowest 30-day ratio,
	// lowest first.
	Worst []TenantAvailability `json:"worst"`
}

// TierAvailability is one tier's probes pooled over its tenants.
type TierAvailability struct {
	Tier string `json:"tier"`
	// Tenants is how many tenants of the tier were probed in 30 days.
	Tenants int                 `json:"tenants"`
	Windows AvailabilityWindows `json:"windows"`
}

// TenantAvailability is one tenant's probes (also the availability field
// of GET /v1/tenants/{id}).
type TenantAvailability struct {
	Workspace string `json:"workspace"`
	// Tier is the tenant's tier at its newest probe.
	Tier    string              `json:"tier"`
	Windows AvailabilityWindows `json:"windows"`
}

// AvailabilityWindows are the rolling windows, each ending at the
// reading's minute.
type AvailabilityWindows struct {
	Hour  AvailabilityWindow `json:"1h"`
	Day   AvailabilityWindow `json:"1d"`
	Week  AvailabilityWindow `json:"7d"`
	Month AvailabilityWindow `json:"30d"`
}

// AvailabilityWindow counts the minutes probed in a window and those up.
type AvailabilityWindow struct {
	Probes int64 `json:"probes"`
	Up     int64 `json:"up"`
	// Ratio is Up/Probes (null without probes).
	Ratio *float64 `json:"ratio"`
	// BudgetRemaining is the share of the window's error budget left:
	// 1 - (1 - ratio) / (1 - objective); negative once overspent (null
	// without probes).
	BudgetRemaining *float64 `json:"budget_remaining"`
}
