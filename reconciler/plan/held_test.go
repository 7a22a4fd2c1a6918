package plan

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/schema"
)

// TestHeld: a workspace whose last action failed is left out of the plan
// while its hold holds, and reported; a transient hold ends at its time, a
// terminal one when the tenant's file changes, and any hold with the file.
func TestHeld(t *testing.T) {
	f := testFleet(t)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tn := tenant(t, f, caseTenant{ID: "ws-a", State: "running", Region: "nyc3"})
	d := Desired{Fleet: f, Tenants: map[string]*schema.Tenant{"ws-a": tn}, Hashes: map[string]string{"ws-a": "h1"}}
	for _, tc := range []struct {
		name string
		hold Hold
		hash string
		held bool
	}{
		{"transient before its time", Hold{Kind: HoldTransient, Attempts: 3, Until: now.Add(time.Second), Hash: "h1"}, "h1", true},
		{"transient at its time", Hold{Kind: HoldTransient, Attempts: 3, Until: now, Hash: "h1"}, "h1", false},
		{"transient, file changed", Hold{Kind: HoldTransient, Attempts: 3, Until: now.Add(time.Hour), Hash: "h0"}, "h1", false},
		{"terminal, same file", Hold{Kind: HoldTerminal, Attempts: 1, Hash: "h1"}, "h1", true},
		{"terminal, file changed", Hold{Kind: HoldTerminal, Attempts: 1, Hash: "h0"}, "h1", false},
		{"terminal, hash unknown", Hold{Kind: HoldTerminal, Attempts: 1}, "h1", true},
		{"capacity before its time", Hold{Kind: HoldCapacity, Attempts: 1, Until: now.Add(time.Minute), Hash: "h1"}, "h1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d.Hashes["ws-a"] = tc.hash
			o := Observed{Held: map[string]Hold{"ws-a": tc.hold}}
			p := Compute(d, o, now, Options{})
			var got []string
			for _, a := range p.Actions {
				got = append(got, string(a.Kind)+" "+a.Workspace)
			}
			want := []string{"create ws-a"}
			var wantHeld []Held
			if tc.held {
				want, wantHeld = nil, []Held{{Workspace: "ws-a", Hold: tc.hold}}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(wantHeld, p.Held); diff != "" {
				t.Errorf("held (-want +got):\n%s", diff)
			}
		})
	}
}
