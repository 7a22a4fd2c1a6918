package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const availabilityDoc = `{"objective":0.995,"at":"2026-03-02T23:59:00Z","tiers":[{"tier":"pro","tenants":2,"windows":{
"1h":{"probes":120,"up":120,"ratio":1,"budget_remaining":1},"1d":{"probes":2880,"up":2870,"ratio":0.9965277777777778,"budget_remaining":0.305555556},
"7d":{"probes":2880,"up":2870,"ratio":0.9965277777777778,"budget_remaining":0.305555556},"30d":{"probes":2880,"up":2870,"ratio":0.9965277777777778,"budget_remaining":0.305555556}}}],
"worst":[{"workspace":"ws-acme","tier":"pro","windows":{"1h":{"probes":60,"up":60,"ratio":1,"budget_remaining":1},
"1d":{"probes":1440,"up":1430,"ratio":0.9930555555555556,"budget_remaining":-0.388888889},"7d":{"probes":1440,"up":1430,"ratio":0.9930555555555556,"budget_remaining":-0.388888889},
"30d":{"probes":1440,"up":1430,"ratio":0.9930555555555556,"budget_remaining":-0.388888889}}}]}`

// TestAvailabilityCommand: genesis availability asks for --worst with the
// token, prints tiers and tenants, and refuses bad flags with exit 2.
func TestAvailabilityCommand(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Method + " " + r.URL.RequestURI() + " " + r.Header.Get("Authorization")
		fmt.Fprint(w, availabilityDoc)
	}))
	defer srv.Close()
	code, out, errOut := cli(t, "", "availability", "--worst", "5", "--reconciler", srv.URL, "--token", "t0k")
	if code != 0 || got != "GET /v1/availability?worst=5 Bearer t0k" {
		t.Fatalf("exit %d, request %q, stderr %s", code, got, errOut)
	}
	for _, want := range []string{"objective 99.5%", "pro", "99.653%", "ws-acme (pro)", "99.306%", "-38.889%"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	for _, args := range [][]string{{"availability", "--worst", "101", "--reconciler", srv.URL}, {"availability", "extra", "--reconciler", srv.URL}, {"availability"}} {
		if code, _, _ := cli(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
