package fleetapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"genesis.dev/fleet/api"
)

// DefaultWorst and MaxWorst bound GET /v1/availability's ?worst=N.
const (
	DefaultWorst = 10
	MaxWorst     = 100
)

// AvailabilityReport answers GET /v1/availability with the worst n tenants
// (reconciler/availability Report on the store, at the current time).
type AvailabilityReport func(ctx context.Context, worst int) (api.Availability, error)

// ParseAvailabilityQuery reads GET /v1/availability's query: worst, an
// integer from 0 to MaxWorst (default DefaultWorst). Any other parameter,
// or worst given twice, is an error naming it.
func ParseAvailabilityQuery(q url.Values) (worst int, err error) {
	worst = DefaultWorst
	for k, vs := range q {
		if k != "worst" {
			return 0, fmt.Errorf("unknown query parameter %q (the only one is worst)", k)
		}
		if len(vs) != 1 {
			return 0, fmt.Errorf("worst: given %d times, want once", len(vs))
		}
		n, err := strconv.Atoi(vs[0])
		if err != nil || n < 0 || n > MaxWorst {
			return 0, fmt.Errorf("worst: %q is not an integer from 0 to %d", vs[0], MaxWorst)
		}
		worst = n
	}
	return worst, nil
}

// serveAvailability is GET /v1/availability.
func serveAvailability(report AvailabilityReport) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		worst, err := ParseAvailabilityQuery(r.URL.Query())
		if err != nil {
			api.WriteProblem(w, http.StatusBadRequest, err.Error())
			return
		}
		if report == nil {
			api.WriteProblem(w, http.StatusServiceUnavailable, "availability probing is not wired into this server")
			return
		}
		doc, err := report(r.Context(), worst)
		if err != nil {
			api.WriteProblem(w, http.StatusServiceUnavailable, "availability: "+err.Error())
			return
		}
		api.WriteJSON(w, http.StatusOK, doc)
	}
}
