package reconciler

import (
	"encoding/json"
	"errors"
	"net/http"

	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// fleetCost is GET /v1/fleet's monthly totals in USD.
type fleetCost struct {
	Droplets  float64 `json:"droplets_monthly_usd"`
	Snapshots float64 `json:"snapshots_monthly_usd"`
	Total     float64 `json:"total_monthly_usd"`
}

// tenantCost is a fleet_status row's monthly cost (its droplet's size, or
// the snapshot it wakes from when it has no droplet), added to sum.
func tenantCost(f *schema.Fleet, row store.FleetRow, sum *fleetCost) float64 {
	if f == nil {
		return 0
	}
	var c float64
	switch {
	case row.DropletID != 0 && row.Size != "":
		c = f.MonthlyUSD(row.Size)
		sum.Droplets += c
	case row.SnapshotID != "":
		c = f.SnapshotMonthlyUSD(row.SnapshotGB)
		sum.Snapshots += c
	}
	sum.Total += c
	return c
}

// handleWake is POST /v1/tenants/{id}/wake: 202 with the tenant's status,
// 404 for an unknown tenant, 409 when it is not hibernated (or git
// declares it hibernated). The actor is the caller's token name.
func handleWake(w http.ResponseWriter, r *http.Request, rec *Reconciler) {
	row, err := rec.Wake(r.Context(), r.PathValue("id"), apiActor(r))
	switch {
	case errors.Is(err, ErrUnknownTenant):
		httpError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrWakeConflict):
		httpError(w, http.StatusConflict, err.Error())
	case errors.Is(err, errNoSnapshot):
		httpError(w, http.StatusServiceUnavailable, err.Error())
	case err != nil:
		httpError(w, http.StatusInternalServerError, err.Error())
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(row)
	}
}
