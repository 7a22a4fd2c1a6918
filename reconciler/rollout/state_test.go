package rollout

import (
	"encoding/json"
	"maps"
	"testing"
	"time"

	"genesis.dev/fleet/schema"
)

func TestEffective(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Position
		want string
	}{
		{"done: everyone the target", Position{State: Done, Baseline: "b", Target: "t"}, "t"},
		{"running, released", Position{State: Running, Baseline: "b", Target: "t", Member: true, Released: true}, "t"},
		{"running, waiting", Position{State: Running, Baseline: "b", Target: "t", Member: true}, "b"},
		{"running, waiting, carried from a superseded rollout", Position{State: Running, Baseline: "b", Target: "t", Member: true, From: "x"}, "x"},
		{"running, not a member (onboarded since)", Position{State: Running, Baseline: "b", Target: "t"}, "b"},
		{"paused, released keeps the change", Position{State: Paused, Baseline: "b", Target: "t", Member: true, Released: true}, "t"},
		{"paused, waiting", Position{State: Paused, Baseline: "b", Target: "t", Member: true}, "b"},
		{"aborted: back", Position{State: Aborted, Baseline: "b", Target: "t", Member: true, Released: true}, "b"},
		{"rolled back: back to what it had", Position{State: RolledBack, Baseline: "b", Target: "t", Member: true, Released: true, From: "x"}, "x"},
		{"unknown state: what it had", Position{State: "?", Baseline: "b", Target: "t", Member: true, Released: true}, "b"},
	} {
		if got := Effective(tc.p); got != tc.want {
			t.Errorf("%s: Effective = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestInWindow(t *testing.T) {
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	windows := []schema.MaintenanceWindow{{Days: []string{"sat"}, Start: "22:00", End: "02:00"}, {Days: []string{"wed"}, Start: "03:00", End: "05:00"}}
	// 2026-12-05 is a Saturday.
	at := func(s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, paris)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UTC()
	}
	for _, tc := range []struct {
		when string
		want bool
	}{
		{"2026-12-05 21:59", false},
		{"2026-12-05 22:00", true},
		{"2026-12-05 23:59", true},
		{"2026-12-06 01:59", true}, // Sunday, in Saturday's window
		{"2026-12-06 02:00", false},
		{"2026-12-06 23:00", false}, // Sunday evening: no window starts on Sunday
		{"2026-12-09 03:30", true},  // Wednesday
		{"2026-12-09 05:00", false},
	} {
		if got := InWindow(windows, paris, at(tc.when)); got != tc.want {
			t.Errorf("%s Paris: InWindow = %v, want %v", tc.when, got, tc.want)
		}
	}
	// 22:30 UTC on Saturday is 23:30 in Paris (in the window) but 22:30 in
	// UTC too: the zone decides for 21:30 UTC (22:30 Paris, 21:30 UTC).
	sat2130 := time.Date(2026, 12, 5, 21, 30, 0, 0, time.UTC)
	if !InWindow(windows, paris, sat2130) || InWindow(windows, time.UTC, sat2130) {
		t.Error("the tenant's zone does not decide the window")
	}
	if !InWindow(nil, time.UTC, sat2130) {
		t.Error("no windows: always")
	}
}

func TestAffects(t *testing.T) {
	base := &Inputs{N8NVersion: "1.0.0", Templates: map[string]json.RawMessage{"a": json.RawMessage(`{"x":1}`), "b": json.RawMessage(`{"y":1}`)}}
	with := func(f func(*Inputs)) *Inputs {
		c := *base
		c.Templates = maps.Clone(base.Templates)
		f(&c)
		return &c
	}
	usesA := &schema.Tenant{Spec: schema.TenantSpec{Workflows: []schema.Workflow{{Template: "a"}}}}
	pinned := &schema.Tenant{Spec: schema.TenantSpec{N8N: schema.N8NSpec{Version: "0.9.0"}, Workflows: []schema.Workflow{{Template: "a"}}}}
	for _, tc := range []struct {
		name string
		b    *Inputs
		t    *schema.Tenant
		want bool
	}{
		{"same", with(func(*Inputs) {}), usesA, false},
		{"n8n default", with(func(i *Inputs) { i.N8NVersion = "1.1.0" }), usesA, true},
		{"n8n default, tenant pins its own", with(func(i *Inputs) { i.N8NVersion = "1.1.0" }), pinned, false},
		{"a template it uses", with(func(i *Inputs) { i.Templates["a"] = json.RawMessage(`{"x":2}`) }), usesA, true},
		{"a template it does not use", with(func(i *Inputs) { i.Templates["b"] = json.RawMessage(`{"y":2}`) }), usesA, false},
		{"the agent", with(func(i *Inputs) { i.Agent = &schema.AgentRelease{Version: "2"} }), pinned, true},
	} {
		if got := Affects(base, tc.b, tc.t); got != tc.want {
			t.Errorf("%s: Affects = %v, want %v", tc.name, got, tc.want)
		}
	}
}
