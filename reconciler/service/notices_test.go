package service

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/backup"
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
