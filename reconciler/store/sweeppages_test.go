package store

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSweepTargetsPages: walking SweepTargetsAfter page by page gives
// exactly SweepTargets, each workspace once (its newest agent), in order,
// whatever the page size.
func TestSweepTargetsPages(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	for i := range 7 {
		addDroplet(t, s, fmt.Sprintf("ws-page-%d", i), int64(100+i), fmt.Sprintf("genesis-ws-page-%d-1", i), "ACTIVE_HEALTHY")
	}
	all, err := s.SweepTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	var wantOrder []string
	for _, tg := range all {
		want[tg.Workspace] = true
		wantOrder = append(wantOrder, tg.Workspace)
	}
	for _, page := range []int{1, 3, 7, 100} {
		var got []string
		for after := ""; ; {
			ts, err := s.SweepTargetsAfter(ctx, after, page)
			if err != nil {
				t.Fatal(err)
			}
			for _, tg := range ts {
				got = append(got, tg.Workspace)
			}
			if len(ts) < page {
				break
			}
			after = ts[len(ts)-1].Workspace
		}
		if diff := cmp.Diff(wantOrder, got); diff != "" {
			t.Errorf("page %d (-SweepTargets +pages):\n%s", page, diff)
		}
	}
	if len(want) != len(all) || len(all) < 7 {
		t.Errorf("SweepTargets = %d targets (%d workspaces), want the 7 live ones once each", len(all), len(want))
	}
}
