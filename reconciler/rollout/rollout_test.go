package rollout

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"genesis.dev/fleet/schema"
)

func tenant(tier schema.Tier, labels map[string]string) *schema.Tenant {
	return &schema.Tenant{Metadata: schema.TenantMeta{Tier: tier, Labels: labels}}
}

// fleetOf is n starter tenants ws-000..ws-<n-1>.
func fleetOf(n int) map[string]*schema.Tenant {
	out := map[string]*schema.Tenant{}
	for i := range n {
		out[fmt.Sprintf("ws-%03d", i)] = tenant(schema.TierStarter, nil)
	}
	return out
}

func names(ws []Wave) map[string][]string {
	out := map[string][]string{}
	for _, w := range ws {
		out[w.Name] = w.Tenants
	}
	return out
}

func rest(name string) schema.RolloutWave {
	return schema.RolloutWave{Name: name, Rest: true, MaxUnavailable: "1", FailureBudget: "0"}
}

func TestAssign(t *testing.T) {
	mixed := map[string]*schema.Tenant{
		"ws-a": tenant(schema.TierStarter, map[string]string{"ring": "canary"}),
		"ws-b": tenant(schema.TierStarter, nil),
		"ws-c": tenant(schema.TierPro, map[string]string{"ring": "canary", "team": "eu"}),
		"ws-d": tenant(schema.TierEnterprise, map[string]string{"ring": "canary"}),
		"ws-e": tenant(schema.TierPro, nil),
		"ws-f": nil,
	}
	tests := []struct {
		name    string
		policy  *schema.Rollout
		tenants map[string]*schema.Tenant
		want    []Wave
	}{
		{
			name:    "no policy: one wave, all at once, never pauses",
			tenants: mixed,
			want:    []Wave{{Name: AllAtOnce, Tenants: []string{"ws-a", "ws-b", "ws-c", "ws-d", "ws-e", "ws-f"}, MaxUnavailable: 6, FailureBudget: 6}},
		},
		{
			name:   "no policy, no tenants",
			policy: nil,
			want:   []Wave{{Name: AllAtOnce, MaxUnavailable: 1}},
		},
		{
			name:    "only the rest wave",
			policy:  &schema.Rollout{Waves: []schema.RolloutWave{rest("all")}},
			tenants: mixed,
			want:    []Wave{{Name: "all", Tenants: []string{"ws-a", "ws-b", "ws-c", "ws-d", "ws-e", "ws-f"}, MaxUnavailable: 1}},
		},
		{
			name: "filters: first wave that selects a tenant wins",
			policy: &schema.Rollout{Waves: []schema.RolloutWave{
				{Name: "labelled", Percent: 100, Labels: map[string]string{"ring": "canary"}, MaxUnavailable: "1"},
				{Name: "pro", Percent: 100, Tiers: []schema.Tier{schema.TierPro, schema.TierEnterprise}, MaxUnavailable: "5", FailureBudget: "1", Bake: schema.Duration(time.Hour)},
				rest("rest"),
			}},
			tenants: mixed,
			want: []Wave{
				{Name: "labelled", Tenants: []string{"ws-a", "ws-c", "ws-d"}, MaxUnavailable: 1},
				{Name: "pro", Tenants: []string{"ws-e"}, Bake: time.Hour, MaxUnavailable: 1, FailureBudget: 1},
				{Name: "rest", Tenants: []string{"ws-b", "ws-f"}, MaxUnavailable: 1},
			},
		},
		{
			name: "labels must all match; tier and labels together",
			policy: &schema.Rollout{Waves: []schema.RolloutWave{
				{Name: "eu-pro", Tiers: []schema.Tier{schema.TierPro}, Labels: map[string]string{"ring": "canary", "team": "eu"}, MaxUnavailable: "1"},
				{Name: "nobody", Tiers: []schema.Tier{schema.TierEnterprise}, Labels: map[string]string{"team": "eu"}, MaxUnavailable: "1"},
				rest("rest"),
			}},
			tenants: mixed,
			want: []Wave{
				{Name: "eu-pro", Tenants: []string{"ws-c"}, MaxUnavailable: 1},
				{Name: "nobody", Tenants: []string{}, MaxUnavailable: 1},
				{Name: "rest", Tenants: []string{"ws-a", "ws-b", "ws-d", "ws-e", "ws-f"}, MaxUnavailable: 1},
			},
		},
		{
			name: "percentages of the wave resolve rounded down, at least 1",
			policy: &schema.Rollout{Waves: []schema.RolloutWave{
				{Name: "half", Percent: 50, MaxUnavailable: "10%", FailureBudget: "10%"},
				{Name: "rest", Rest: true, MaxUnavailable: "50%", FailureBudget: "34%"},
			}},
			tenants: fleetOf(40),
			want: []Wave{
				{Name: "half", MaxUnavailable: 2, FailureBudget: 2},
				{Name: "rest", MaxUnavailable: 10, FailureBudget: 6},
			},
		},
		{
			name: "a count larger than the wave is the wave",
			policy: &schema.Rollout{Waves: []schema.RolloutWave{
				{Name: "rest", Rest: true, MaxUnavailable: "50", FailureBudget: "50"},
			}},
			tenants: fleetOf(3),
			want:    []Wave{{Name: "rest", MaxUnavailable: 3, FailureBudget: 50}},
		},
	}
	ignoreTenants := cmpopts.IgnoreFields(Wave{}, "Tenants")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Assign(tt.policy, tt.tenants, "r1")
			var opts cmp.Options = cmp.Options{cmpopts.EquateEmpty()}
			if tt.want[0].Tenants == nil && len(tt.tenants) > 0 {
				opts = append(opts, ignoreTenants)
			}
			if diff := cmp.Diff(tt.want, got, opts...); diff != "" {
				t.Errorf("Assign (-want +got):\n%s", diff)
			}
		})
	}
}

func TestAssignPercentSizes(t *testing.T) {
	// ceil(p% × eligible), at least one when any is eligible.
	tests := []struct {
		percent        float64
		eligible, want int
	}{
		{1, 0, 0}, {1, 1, 1}, {1, 99, 1}, {1, 100, 1}, {1, 101, 2}, {1, 1000, 10},
		{12.5, 8, 1}, {12.5, 9, 2}, {10, 30, 3}, {33.3, 3, 1}, {50, 3, 2},
		{100, 7, 7}, {0.01, 5, 1}, {0, 5, 5},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%v%% of %d", tt.percent, tt.eligible), func(t *testing.T) {
			if got := Size(tt.percent, tt.eligible); got != tt.want {
				t.Errorf("Size = %d, want %d", got, tt.want)
			}
			p := &schema.Rollout{Waves: []schema.RolloutWave{{Name: "p", Percent: tt.percent}, rest("rest")}}
			if got := len(Assign(p, fleetOf(tt.eligible), "r")[0].Tenants); got != tt.want {
				t.Errorf("Assign took %d, want %d", got, tt.want)
			}
		})
	}
}

// TestCanaryPinned pins which workspace a known rollout picks: changing how
// tenants are ranked would move the canary of a rollout already under way.
func TestCanaryPinned(t *testing.T) {
	p := &schema.Rollout{Waves: []schema.RolloutWave{{Name: "canary", Percent: 1}, rest("rest")}}
	got := Assign(p, fleetOf(100), "n8n-1.124.0")[0].Tenants
	if diff := cmp.Diff([]string{"ws-019"}, got); diff != "" {
		t.Errorf("canary (-want +got):\n%s", diff)
	}
}

func TestCanaryMovesWithRolloutID(t *testing.T) {
	p := &schema.Rollout{Waves: []schema.RolloutWave{{Name: "canary", Percent: 1}, rest("rest")}}
	fleet := fleetOf(100)
	seen := map[string]bool{}
	for i := range 20 {
		c := Assign(p, fleet, fmt.Sprintf("rollout-%d", i))[0].Tenants
		if len(c) != 1 {
			t.Fatalf("canary of rollout-%d: %v, want one tenant", i, c)
		}
		seen[c[0]] = true
	}
	if len(seen) < 10 {
		t.Errorf("20 rollouts picked only %d different canaries: %v", len(seen), seen)
	}
}

// TestAssignProperties checks random policies over random fleets: every
// tenant is in exactly one wave; the result does not depend on the order
// the tenants were read in; each percent wave takes ceil(p% of the
// eligible tenants left), those of lowest rank, and only tenants its
// filters select; the rest wave takes everything left.
func TestAssignProperties(t *testing.T) {
	tiers := schema.Tiers()
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 19))
		fleet := map[string]*schema.Tenant{}
		for i := range r.IntN(200) {
			labels := map[string]string{}
			if r.IntN(3) == 0 {
				labels["ring"] = []string{"canary", "early"}[r.IntN(2)]
			}
			if r.IntN(2) == 0 {
				labels["team"] = []string{"eu", "us"}[r.IntN(2)]
			}
			fleet[fmt.Sprintf("ws-%d-%d", seed, i)] = tenant(tiers[r.IntN(len(tiers))], labels)
		}
		policy := &schema.Rollout{}
		for i := range r.IntN(4) {
			w := schema.RolloutWave{Name: fmt.Sprintf("w%d", i), Percent: []float64{1, 5, 12.5, 50, 100, 0.5}[r.IntN(6)], MaxUnavailable: "10%", FailureBudget: "1"}
			if r.IntN(2) == 0 {
				w.Tiers = []schema.Tier{tiers[r.IntN(len(tiers))]}
			}
			if r.IntN(3) == 0 {
				w.Labels = map[string]string{"ring": "canary"}
			}
			policy.Waves = append(policy.Waves, w)
		}
		policy.Waves = append(policy.Waves, rest("rest"))
		id := fmt.Sprintf("rollout-%d", r.IntN(5))

		t.Run(fmt.Sprintf("seed %d", seed), func(t *testing.T) {
			got := Assign(policy, fleet, id)
			if diff := cmp.Diff(got, Assign(policy, fleet, id)); diff != "" {
				t.Fatalf("not deterministic:\n%s", diff)
			}
			// The same tenants inserted in another order.
			keys := make([]string, 0, len(fleet))
			for k := range fleet {
				keys = append(keys, k)
			}
			r.Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
			shuffled := make(map[string]*schema.Tenant, len(fleet))
			for _, k := range keys {
				shuffled[k] = fleet[k]
			}
			if diff := cmp.Diff(got, Assign(policy, shuffled, id)); diff != "" {
				t.Fatalf("depends on the order of the tenants:\n%s", diff)
			}
			if len(got) != len(policy.Waves) {
				t.Fatalf("%d waves, want %d", len(got), len(policy.Waves))
			}
			left := map[string]bool{}
			for k := range fleet {
				left[k] = true
			}
			for i, w := range got {
				pw := policy.Waves[i]
				if w.Name != pw.Name {
					t.Errorf("wave %d is %q, want %q", i, w.Name, pw.Name)
				}
				if !sort.StringsAreSorted(w.Tenants) {
					t.Errorf("wave %s: tenants not sorted", w.Name)
				}
				if w.MaxUnavailable < 1 {
					t.Errorf("wave %s: maxUnavailable %d < 1", w.Name, w.MaxUnavailable)
				}
				var eligible []string
				for k := range left {
					if pw.Rest || selects(pw, fleet[k]) {
						eligible = append(eligible, k)
					}
				}
				for _, ws := range w.Tenants {
					if !left[ws] {
						t.Fatalf("wave %s: %s is in an earlier wave or not in the fleet", w.Name, ws)
					}
					if !slices.Contains(eligible, ws) {
						t.Errorf("wave %s: %s is not selected by its filters", w.Name, ws)
					}
					delete(left, ws)
				}
				want := len(eligible)
				if !pw.Rest {
					want = int(math.Ceil(pw.Percent * float64(len(eligible)) / 100))
				}
				if len(w.Tenants) != want {
					t.Errorf("wave %s: %d tenants, want %d (%v%% of %d eligible)", w.Name, len(w.Tenants), want, pw.Percent, len(eligible))
				}
				// Those taken rank below every eligible tenant left behind.
				for _, in := range w.Tenants {
					for _, out := range eligible {
						a, b := Rank(id, in), Rank(id, out)
						if left[out] && bytes.Compare(a[:], b[:]) > 0 {
							t.Fatalf("wave %s took %s over %s of lower rank", w.Name, in, out)
						}
					}
				}
			}
			if len(left) > 0 {
				t.Errorf("tenants in no wave: %v", left)
			}
		})
	}
}

func TestLowerBound(t *testing.T) {
	waves := func(ws ...Wave) []Wave { return ws }
	of := func(n int) []string { return make([]string, n) }
	tests := []struct {
		name  string
		waves []Wave
		per   time.Duration
		want  time.Duration
	}{
		{"no waves", nil, time.Minute, 0},
		{"all at once", Assign(nil, fleetOf(50), "r"), 3 * time.Minute, 3 * time.Minute},
		{"one at a time", waves(Wave{Tenants: of(5), MaxUnavailable: 1}), time.Minute, 5 * time.Minute},
		{"batches round up", waves(Wave{Tenants: of(5), MaxUnavailable: 2}), time.Minute, 3 * time.Minute},
		{"bake adds", waves(Wave{Tenants: of(1), MaxUnavailable: 1, Bake: 10 * time.Minute}, Wave{Tenants: of(20), MaxUnavailable: 4, Bake: 30 * time.Minute}), time.Minute, (1 + 10 + 5 + 30) * time.Minute},
		{"empty wave neither changes nor bakes", waves(Wave{Tenants: nil, MaxUnavailable: 1, Bake: time.Hour}, Wave{Tenants: of(2), MaxUnavailable: 1}), time.Minute, 2 * time.Minute},
		{"maxUnavailable 0 reads as 1", waves(Wave{Tenants: of(3)}), time.Minute, 3 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LowerBound(tt.waves, tt.per); got != tt.want {
				t.Errorf("LowerBound = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestLowerBoundOfPolicy(t *testing.T) {
	// 1000 tenants: canary 1% (10, one at a time, bake 10m), then the
	// rest (990, 10% = 99 at a time: 10 batches, bake 30m).
	p := &schema.Rollout{Waves: []schema.RolloutWave{
		{Name: "canary", Percent: 1, Bake: schema.Duration(10 * time.Minute), MaxUnavailable: "1"},
		{Name: "rest", Rest: true, Bake: schema.Duration(30 * time.Minute), MaxUnavailable: "10%"},
	}}
	got := LowerBound(Assign(p, fleetOf(1000), "r"), 2*time.Minute)
	if want := (10*2 + 10 + 10*2 + 30) * time.Minute; got != want {
		t.Errorf("LowerBound = %v, want %v", got, want)
	}
}
