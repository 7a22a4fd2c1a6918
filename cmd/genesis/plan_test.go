package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestPlanRefusesObservation: genesis plan --reconciler refuses, with exit
// status 1 and a message naming why, an observation it must not plan
// against (what an old reconciler's follower served, a stale one, an empty
// one from failed listings, none stored yet), and plans against a fresh,
// complete empty one (a new fleet).
func TestPlanRefusesObservation(t *testing.T) {
	repo := testRepo(t, map[string]string{"tenants/ws-good.yaml": goodTenant})
	now := time.Now().UTC()
	at := func(d time.Duration) string { return now.Add(-d).Format(time.RFC3339Nano) }
	for _, tc := range []struct {
		name   string
		status int
		body   string
		args   []string
		code   int
		want   string // in stderr, or in stdout when code is 0
	}{
		{"old follower: empty and unmarked", 200, `{"Incomplete":null,"Droplets":null,"Snapshots":null,"Status":null,"InFlight":null}`, nil,
			1, "unmarked (no observed_at or leader)"},
		{"marked without leader", 200, `{"observed_at":"` + at(0) + `","Status":{}}`, nil, 1, "unmarked"},
		{"stale", 200, `{"observed_at":"` + at(11*time.Minute) + `","leader":"r-1","Status":{}}`, nil, 1, "stale: observed_at"},
		{"stale by a tighter bound", 200, `{"observed_at":"` + at(time.Minute) + `","leader":"r-1","Status":{}}`, []string{"--max-observed-age", "30s"},
			1, "more than --max-observed-age 30s"},
		{"empty and incomplete", 200, `{"observed_at":"` + at(0) + `","leader":"r-1","Incomplete":{"acct-a":"list droplets: 500"},"Status":{}}`, nil,
			1, "empty and incomplete (DigitalOcean listing failed: acct-a: list droplets: 500)"},
		{"no status", 200, `{"observed_at":"` + at(0) + `","leader":"r-1"}`, nil, 1, "no Status"},
		{"none stored yet", 503, `{"error":"no observation stored yet"}`, nil, 1, "503 Service Unavailable"},
		{"unknown field", 200, `{"observed_at":"` + at(0) + `","leader":"r-1","Status":{},"Extra":1}`, nil, 1, `unknown field "Extra"`},
		{"new fleet: empty, complete and fresh", 200, `{"observed_at":"` + at(0) + `","leader":"r-1","Status":{}}`, nil, 0, "genesis-ws-good-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tc.status)
				fmt.Fprint(w, tc.body)
			}))
			defer srv.Close()
			code, out, errOut := cli(t, "", append([]string{"plan", "--state", repo, "--reconciler", srv.URL}, tc.args...)...)
			got := errOut
			if tc.code == 0 {
				got = out
			}
			if code != tc.code || !strings.Contains(got, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want exit %d and %q", code, out, errOut, tc.code, tc.want)
			}
			if tc.code != 0 && strings.Contains(out, "create") {
				t.Errorf("a refused observation still printed a plan:\n%s", out)
			}
		})
	}
}
