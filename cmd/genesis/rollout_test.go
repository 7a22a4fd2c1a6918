package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const rolloutDoc = `{"id":"r7-5c1e0a9b2f","state":"paused","reason":"wave canary: 1 of 1 droplets failed (budget 0): ws-a: the agent rejected the change",
"commit":"abc","from":{"digest":"a","n8n_version":"1.123.81","templates":[]},"to":{"digest":"b","n8n_version":"1.124.0","templates":[]},
"changes":["n8n 1.123.81 -> 1.124.0"],"wave":0,"waves":[{"name":"canary","status":"current","bake_seconds":600,"max_unavailable":1,"failure_budget":0,
"members":1,"released":1,"applied":0,"skipped":0,"failed":1},{"name":"rest","status":"waiting","bake_seconds":0,"max_unavailable":5,"failure_budget":1,
"members":9,"released":0,"applied":0,"skipped":0,"failed":0}],"failures":[{"workspace":"ws-a","wave":"canary","reason":"the agent rejected the change","at":"2026-12-06T12:00:00Z"}],
"acked_failures":0,"last_progress_at":"2026-12-06T12:00:00Z","created_at":"2026-12-06T11:00:00Z"}`

// TestRolloutCommand: genesis rollout talks to the API with the token,
// prints waves and failures, sends the reason, and exits 1 on an API
// refusal and 2 on a usage error.
func TestRolloutCommand(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" "+string(body))
		switch {
		case r.URL.Path == "/v1/rollouts":
			fmt.Fprint(w, `{"rollouts":[`+rolloutDoc+`]}`)
		case r.URL.Path == "/v1/rollouts/r7-5c1e0a9b2f/pause":
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"title":"Conflict","status":409,"detail":"cannot pause: rollout r7-5c1e0a9b2f is paused","error":"cannot pause"}`)
		default:
			fmt.Fprint(w, rolloutDoc)
		}
	}))
	defer srv.Close()
	code, out, errOut := cli(t, "", "rollout", "list", "--reconciler", srv.URL, "--token", "t0k")
	if code != 0 || !strings.Contains(out, "r7-5c1e0a9b2f") || !strings.Contains(out, "1/2 canary") || !strings.Contains(out, "n8n 1.123.81 -> 1.124.0") {
		t.Errorf("list: exit %d, stderr %s:\n%s", code, errOut, out)
	}
	code, out, _ = cli(t, "", "rollout", "status", "--reconciler", srv.URL)
	for _, want := range []string{"rollout r7-5c1e0a9b2f: paused", "canary", "failed: ws-a (wave canary", "10m0s"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status: exit %d, lacks %q:\n%s", code, want, out)
		}
	}
	code, _, _ = cli(t, "", "rollout", "abort", "r7-5c1e0a9b2f", "--reason", "bad release", "--reconciler", srv.URL, "--token", "t0k")
	if code != 0 || !strings.Contains(got[len(got)-1], `POST /v1/rollouts/r7-5c1e0a9b2f/abort Bearer t0k {"reason":"bad release"}`) {
		t.Errorf("abort: exit %d, request %q", code, got[len(got)-1])
	}
	if code, _, errOut = cli(t, "", "rollout", "pause", "r7-5c1e0a9b2f", "--reconciler", srv.URL); code != 1 || !strings.Contains(errOut, "is paused") {
		t.Errorf("pause of a paused rollout: exit %d, stderr %q; want 1 with the API's reason", code, errOut)
	}
	for _, args := range [][]string{{"rollout"}, {"rollout", "pause"}, {"rollout", "bogus", "--reconciler", srv.URL}, {"rollout", "list"}} {
		if code, _, _ := cli(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}

// TestActionCommand: genesis action sends the operator's step with its
// reason and the token, prints what happens next, and exits 1 with the
// API's problem on a refusal, 2 on a usage error.
func TestActionCommand(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" "+string(body))
		if r.URL.Path == "/v1/tenants/ws-off/actions" {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"title":"Conflict","status":409,"detail":"cannot act ws-off: the tenant has no running droplet (lifecycle HIBERNATED)"}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"workspace":"ws-a","action":"power_cycle","result":"requested"}`)
	}))
	defer srv.Close()
	code, out, errOut := cli(t, "", "action", "power-cycle", "ws-a", "--reason", "n8n wedged", "--reconciler", srv.URL, "--token", "t0k")
	if code != 0 || !strings.Contains(out, "power-cycle of ws-a requested") ||
		got[len(got)-1] != `POST /v1/tenants/ws-a/actions Bearer t0k {"action":"power_cycle","reason":"n8n wedged"}` {
		t.Errorf("action: exit %d, stderr %s, out %s, request %q", code, errOut, out, got)
	}
	for action, says := range map[string]string{"snapshot": "snapshot of ws-a requested", "backup": "backup of ws-a requested"} {
		code, out, errOut := cli(t, "", "action", action, "ws-a", "--reason", "before the migration", "--reconciler", srv.URL, "--token", "t0k")
		if code != 0 || !strings.Contains(out, says) ||
			got[len(got)-1] != `POST /v1/tenants/ws-a/actions Bearer t0k {"action":"`+action+`","reason":"before the migration"}` {
			t.Errorf("action %s: exit %d, stderr %s, out %s, request %q", action, code, errOut, out, got[len(got)-1])
		}
	}
	code, _, errOut = cli(t, "", "action", "reboot", "ws-off", "--reason", "x", "--reconciler", srv.URL)
	if code != 1 || !strings.Contains(errOut, "no running droplet") {
		t.Errorf("refused: exit %d, stderr %s", code, errOut)
	}
	for _, args := range [][]string{{"action", "reboot", "ws-a", "--reconciler", srv.URL}, {"action", "explode", "ws-a", "--reason", "x", "--reconciler", srv.URL}, {"action", "reboot"}} {
		if code, _, _ := cli(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
