package service

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/store"
)

// TestStaleNotices: stale recovery points are told one per tenant, oldest
// first, up to staleNoticeMax; past it one notice for the fleet counts
// them and names the oldest.
func TestStaleNotices(t *testing.T) {
	pts := map[string]backup.Point{
		"ws-ok":  {Kind: "backup", ID: "b-1", Age: time.Hour, Objective: 2 * time.Hour},
		"ws-old": {Kind: "backup", ID: "b-2", Age: 5 * time.Hour, Objective: 2 * time.Hour, Stale: true},
		"ws-new": {Age: 3 * time.Hour, Objective: 2 * time.Hour, Stale: true},
	}
	ns := staleNotices(pts)
	if len(ns) != 2 || ns[0].Workspace != "ws-old" || ns[1].Workspace != "ws-new" ||
		ns[0].Detail != "ws-old's newest copy (backup b-2) is 5h0m0s old (objective 2h0m0s)" || ns[1].Detail != "ws-new has no copy (objective 2h0m0s)" {
		t.Errorf("notices %+v", ns)
	}
	for i := range 10 {
		pts[fmt.Sprintf("ws-%02d", i)] = backup.Point{Kind: "snapshot", ID: "s", Age: time.Duration(10+i) * time.Hour, Objective: time.Hour, Stale: true}
	}
	ns = staleNotices(pts)
	if len(ns) != 1 || ns[0].Workspace != "" || ns[0].Subject() != "fleet" || !strings.HasPrefix(ns[0].Summary, "12 tenants' recovery points") ||
		!strings.HasPrefix(ns[0].Detail, "oldest: ws-09's newest copy") {
		t.Errorf("fleet notice %+v", ns)
	}
}

// TestBurnNotices: only what burns fast over the hour and over the last
// 5 minutes is told (a burn that already stopped pages nobody): one
// notice per tier, one for the fleet naming the fastest tenants.
func TestBurnNotices(t *testing.T) {
	c := func(up, probes int64) store.Counts { return store.Counts{Probes: probes, Up: up} }
	hour := []store.Burning{
		{Tier: "pro", Counts: c(50, 60), Burn: 33.3},
		{Tier: "starter", Counts: c(55, 60), Burn: 16.7},
		{Workspace: "ws-a", Tier: "pro", Counts: c(40, 60), Burn: 66.7},
		{Workspace: "ws-b", Tier: "pro", Counts: c(50, 60), Burn: 33.3},
		{Workspace: "ws-gone", Tier: "starter", Counts: c(50, 60), Burn: 33.3}, // recovered in the last 5 minutes
	}
	recent := []store.Burning{
		{Tier: "pro", Counts: c(0, 5), Burn: 200},
		{Workspace: "ws-a", Tier: "pro", Counts: c(0, 5), Burn: 200},
		{Workspace: "ws-b", Tier: "pro", Counts: c(1, 5), Burn: 160},
	}
	ns := burnNotices(hour, recent)
	if len(ns) != 2 {
		t.Fatalf("notices %+v, want the pro tier and the fleet", ns)
	}
	if n := ns[0]; n.Kind != notify.SLOBurn || n.Tier != "pro" || n.Subject() != "pro" ||
		n.Summary != "tier pro is burning its 99.5% availability budget 33x too fast" || !strings.Contains(n.Detail, "83.33% of 60 probes over the last hour") {
		t.Errorf("tier notice %+v", n)
	}
	if n := ns[1]; n.Subject() != "fleet" || n.Summary != "2 tenants are burning their 99.5% availability budget fast" ||
		n.Detail != "fastest: ws-a (pro, 66.67% over the hour, burn 67); ws-b (pro, 83.33% over the hour, burn 33)" {
		t.Errorf("fleet notice %+v", n)
	}
	if ns := burnNotices(hour, nil); len(ns) != 0 {
		t.Errorf("nothing burns now: %+v", ns)
	}
}
