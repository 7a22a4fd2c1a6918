package store

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestAssignShards(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	live, dead := now.Add(time.Minute), now.Add(-time.Second)
	leases := func(holders ...string) []shardLease {
		out := make([]shardLease, len(holders))
		for i, h := range holders {
			out[i] = shardLease{Shard: i, Holder: h, Expires: live}
			if h == "" {
				out[i].Expires = time.Time{}
			}
			if h == "dead" {
				out[i].Expires = dead
			}
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		leases []shardLease
		live   int
		want   []int
	}{
		{"alone takes all", leases("", "", "", ""), 1, []int{0, 1, 2, 3}},
		{"newcomer waits for releases", leases("a", "a", "a", "a"), 2, nil},
		{"holder gives back above its share", leases("me", "me", "me", "me"), 2, []int{0, 1}},
		{"takes what was given back", leases("a", "a", "", ""), 2, []int{2, 3}},
		{"expired leases are free", leases("dead", "a", "dead", "a"), 2, []int{0, 2}},
		{"keeps its own, claims up to its share", leases("me", "a", "", "b"), 3, []int{0, 2}},
		{"never takes a live lease", leases("a", "b", "c", "d"), 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := assignShards(tc.leases, "me", tc.live, now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("shards (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAvailabilityLeases: two replicas share the 64 shards without
// overlap; one that stops renewing loses them to the other after the ttl.
func TestAvailabilityLeases(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ttl := 3 * time.Minute
	a, err := s.LeaseAvailabilityShards(ctx, "a", now, ttl)
	if err != nil || len(a) != AvailabilityShards {
		t.Fatalf("a alone: %d shards, err %v", len(a), err)
	}
	b, _ := s.LeaseAvailabilityShards(ctx, "b", now.Add(time.Second), ttl)
	if len(b) != 0 {
		t.Fatalf("b while a holds everything: %v", b)
	}
	now = now.Add(time.Minute)
	a, _ = s.LeaseAvailabilityShards(ctx, "a", now, ttl)
	b, _ = s.LeaseAvailabilityShards(ctx, "b", now.Add(time.Second), ttl)
	if len(a) != 32 || len(b) != 32 {
		t.Fatalf("after a round each: a %d, b %d shards, want 32 each", len(a), len(b))
	}
	holders, _ := s.ShardHolders(ctx, now.Add(2*time.Second))
	for _, sh := range b {
		if holders[sh] != "b" {
			t.Errorf("shard %d: holder %q, want b", sh, holders[sh])
		}
	}
	// a stops; b renews every minute and takes a's shards once they expire.
	for i := 1; i <= 4; i++ {
		b, _ = s.LeaseAvailabilityShards(ctx, "b", now.Add(time.Duration(i)*time.Minute), ttl)
	}
	if len(b) != AvailabilityShards {
		t.Errorf("b after a's leases expired: %d shards, want %d", len(b), AvailabilityShards)
	}
	if err := s.ReleaseAvailabilityShards(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.ShardHolders(ctx, now); len(h) != 0 {
		t.Errorf("holders after b released: %v", h)
	}
}

// TestAvailabilityWindows: a day of one probe a minute with a 10-minute
// outage reads exactly 1430/1440 over the day and the 30 days.
func TestAvailabilityWindows(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	day := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	held, err := s.LeaseAvailabilityShards(ctx, "r", day, 48*time.Hour)
	if err != nil || len(held) != AvailabilityShards {
		t.Fatalf("lease: %v %v", held, err)
	}
	var now time.Time
	for m := range MinutesPerDay {
		now = day.Add(time.Duration(m) * time.Minute)
		down := m >= 600 && m < 610
		probes := []Probe{{Workspace: "ws-a", Tier: "pro", Shard: 1, Up: !down}, {Workspace: "ws-b", Tier: "pro", Shard: 2, Up: true}}
		if n, err := s.RecordProbes(ctx, "r", now, now, probes); err != nil || n != 2 {
			t.Fatalf("minute %d: stored %d, err %v", m, n, err)
		}
		switch m {
		case 659: // the hour 10:00-10:59 holds the outage
			got, _, _ := s.TenantAvailability(ctx, "ws-a", now)
			if diff := cmp.Diff([]Counts{{60, 50}, {660, 650}, {660, 650}, {660, 650}}, got.Windows); diff != "" {
				t.Errorf("ws-a at 10:59 (-want +got):\n%s", diff)
			}
		case 664:
			// Over the hour 10:05-11:04, ws-a lost 5 of 60 minutes: burn
			// (5/60)/0.005 = 16.7; the tier 5 of 120: 8.3.
			burning, err := s.AvailabilityBurning(ctx, now, time.Hour, 0.995, 6, 1)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, b := range burning {
				got = append(got, fmt.Sprintf("%s/%s %.1f", b.Tier, b.Workspace, b.Burn))
			}
			if diff := cmp.Diff([]string{"pro/ 8.3", "pro/ws-a 16.7"}, got); diff != "" {
				t.Errorf("burning (-want +got):\n%s", diff)
			}
		}
	}
	// A second probe in a minute: a failure makes the minute down, a
	// success afterwards does not bring it back.
	for _, up := range []bool{false, true} {
		if _, err := s.RecordProbes(ctx, "r", now, now, []Probe{{Workspace: "ws-b", Tier: "pro", Shard: 2, Up: up}}); err != nil {
			t.Fatal(err)
		}
	}
	got, ok, err := s.TenantAvailability(ctx, "ws-a", now)
	if err != nil || !ok {
		t.Fatalf("ws-a: ok %v, err %v", ok, err)
	}
	want := AvailabilityRow{Workspace: "ws-a", Tier: "pro", Tenants: 1, Windows: []Counts{{60, 60}, {1440, 1430}, {1440, 1430}, {1440, 1430}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ws-a (-want +got):\n%s", diff)
	}
	tiers, err := s.AvailabilityByTier(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]AvailabilityRow{{Tier: "pro", Tenants: 2, Windows: []Counts{{120, 119}, {2880, 2869}, {2880, 2869}, {2880, 2869}}}}, tiers); diff != "" {
		t.Errorf("tiers (-want +got):\n%s", diff)
	}
	worst, err := s.AvailabilityWorst(ctx, now, AvailabilityWindows, 1)
	if err != nil || len(worst) != 1 || worst[0].Workspace != "ws-a" {
		t.Errorf("worst: %+v, err %v", worst, err)
	}
	// The next day, the 1d window is yesterday 00:01 to today 00:00.
	next := day.Add(24 * time.Hour)
	if _, err := s.RecordProbes(ctx, "r", next, next, []Probe{{Workspace: "ws-a", Tier: "pro", Shard: 1, Up: true}}); err != nil {
		t.Fatal(err)
	}
	got, _, _ = s.TenantAvailability(ctx, "ws-a", next)
	if diff := cmp.Diff([]Counts{{60, 60}, {1440, 1430}, {1441, 1431}, {1441, 1431}}, got.Windows); diff != "" {
		t.Errorf("ws-a the next day (-want +got):\n%s", diff)
	}
	if _, err := s.AvailabilityBurning(ctx, now, 0, 0.995, 1, 1); err == nil {
		t.Error("burning over a zero window: no error")
	}
	// Pruning keeps 30 days before today.
	if n, err := s.PruneAvailability(ctx, day.AddDate(0, 0, 30)); err != nil || n != 0 {
		t.Errorf("prune at +30d: %d rows, err %v", n, err)
	}
	if n, err := s.PruneAvailability(ctx, day.AddDate(0, 0, 31)); err != nil || n != 2 {
		t.Errorf("prune at +31d: %d rows, err %v", n, err)
	}
}

// TestRecordProbesNeedsTheLease: a replica whose lease expired stores
// nothing (another may probe the shard now).
func TestRecordProbesNeedsTheLease(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	now := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	if _, err := s.LeaseAvailabilityShards(ctx, "r", now, time.Minute); err != nil {
		t.Fatal(err)
	}
	p := []Probe{{Workspace: "ws-a", Tier: "pro", Shard: 1, Up: true}}
	if n, _ := s.RecordProbes(ctx, "other", now, now, p); n != 0 {
		t.Errorf("a replica without the shard stored %d", n)
	}
	if n, _ := s.RecordProbes(ctx, "r", now, now.Add(2*time.Minute), p); n != 0 {
		t.Errorf("an expired lease stored %d", n)
	}
}
