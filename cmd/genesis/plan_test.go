package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
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

// TestPlanShowsRolloutWaves: with spec.rollout, genesis plan shows the
// waves a fleet-wide change goes through and its earliest finish, and
// with --reconciler whether this commit starts a rollout.
func TestPlanShowsRolloutWaves(t *testing.T) {
	files := map[string]string{}
	for i := range 20 {
		ws := fmt.Sprintf("ws-t%02d", i)
		files["tenants/"+ws+".yaml"] = strings.NewReplacer("ws-good", ws, "good.example", ws+".example").Replace(goodTenant)
	}
	repo := testRepo(t, files)
	fleet, err := os.ReadFile(filepath.Join(repo, "genesis.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	policy := "  rollout:\n    waves:\n      - {name: canary, percent: 10, bake: 10m}\n      - {name: rest, rest: true, maxUnavailable: 6, failureBudget: \"10%\"}\n"
	if err := os.WriteFile(filepath.Join(repo, "genesis.yaml"), append(fleet, policy...), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := cli(t, "", "plan", "--state", repo, "--rollout-apply-time", "1m")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// canary: 2 tenants one at a time (2m) + bake 10m; rest: 18 six at a
	// time (3m): 15m.
	for _, want := range []string{"wave canary: 2 tenant(s), 1 at a time, bake 10m0s, pauses after 1 failure(s)",
		"wave rest: 18 tenant(s), 6 at a time, bake 0s, pauses after 2 failure(s)", "earliest finish: 15m0s at 1m0s per droplet"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/observed":
			fmt.Fprint(w, `{"observed_at":"`+time.Now().UTC().Format(time.RFC3339Nano)+`","leader":"r-1","Status":{}}`)
		case "/v1/rollouts/latest":
			fmt.Fprint(w, `{"id":"r3-0123456789","state":"done","from":{"digest":"a","n8n_version":"1","templates":[]},"to":{"digest":"b","n8n_version":"1","templates":[]},"changes":[],"wave":2,"waves":[],"acked_failures":0,"last_progress_at":"2026-12-06T00:00:00Z","created_at":"2026-12-06T00:00:00Z"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	code, out, errOut = cli(t, "", "plan", "--state", repo, "--reconciler", srv.URL, "--format", "markdown")
	if code != 0 || !strings.Contains(out, "merging it starts a rollout, superseding r3-0123456789 (done)") {
		t.Errorf("exit %d, stderr %s; plan against a reconciler whose newest rollout has other inputs:\n%s", code, errOut, out)
	}
}
