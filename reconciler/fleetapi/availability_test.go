package fleetapi

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/api"
)

// TestAvailabilityQuery: GET /v1/availability rejects bad input with a
// 400 naming the parameter, and passes worst to the report.
func TestAvailabilityQuery(t *testing.T) {
	var asked int
	report := func(_ context.Context, worst int) (api.Availability, error) {
		asked = worst
		return api.Availability{Objective: 0.995, At: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC), Tiers: []api.TierAvailability{}, Worst: []api.TenantAvailability{}}, nil
	}
	h := serveAvailability(report)
	for _, tc := range []struct {
		query  string
		status int
		detail string
		worst  int
	}{
		{"", 200, "", DefaultWorst},
		{"worst=0", 200, "", 0},
		{"worst=100", 200, "", 100},
		{"worst=101", 400, `worst: "101" is not an integer from 0 to 100`, 0},
		{"worst=-1", 400, `worst: "-1" is not an integer from 0 to 100`, 0},
		{"worst=ten", 400, `worst: "ten" is not an integer from 0 to 100`, 0},
		{"worst=", 400, `worst: "" is not an integer from 0 to 100`, 0},
		{"worst=1&worst=2", 400, "worst: given 2 times, want once", 0},
		{"tier=pro", 400, `unknown query parameter "tier" (the only one is worst)`, 0},
	} {
		t.Run(tc.query, func(t *testing.T) {
			asked = -1
			rec := httptest.NewRecorder()
			h(rec, httptest.NewRequest(http.MethodGet, "/v1/availability?"+tc.query, nil))
			if rec.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			if tc.status != 200 {
				var p api.Problem
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Detail != tc.detail {
					t.Errorf("problem %+v (%v), want detail %q", p, err, tc.detail)
				}
				return
			}
			if asked != tc.worst {
				t.Errorf("report asked for %d worst, want %d", asked, tc.worst)
			}
		})
	}
	rec := httptest.NewRecorder()
	serveAvailability(nil)(rec, httptest.NewRequest(http.MethodGet, "/v1/availability", nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "not wired") {
		t.Errorf("without a report: %d %s", rec.Code, rec.Body)
	}
}

func FuzzParseAvailabilityQuery(f *testing.F) {
	for _, s := range []string{"", "worst=5", "worst=1&worst=2", "x=1", "worst=%zz", "worst=99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		n, err := ParseAvailabilityQuery(q)
		if err == nil && (n < 0 || n > MaxWorst) {
			t.Errorf("%q: accepted worst=%d", raw, n)
		}
	})
}
