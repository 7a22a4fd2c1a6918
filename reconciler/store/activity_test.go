package store

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// TestActivityAndAddresses: the activator's reads and its activity write,
// on a real Postgres.
func TestActivityAndAddresses(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	future := time.Now().Add(time.Hour).UTC().Truncate(time.Microsecond)
	if _, err := s.pool.Exec(ctx, `INSERT INTO fleet_status (workspace, state, desired_state, droplet_id, ip, snapshot_id, last_activity_at, idle_warned_at) VALUES
		('ws-hib', 'HIBERNATED', 'running', NULL, NULL, '123456', now() - interval '3 days', now() - interval '1 day'),
		('ws-up', 'ACTIVE_HEALTHY', 'running', 77, '203.0.113.7', NULL, $1, NULL),
		('ws-new', 'WAKING', 'running', NULL, NULL, NULL, NULL, NULL)`, future); err != nil {
		t.Fatal(err)
	}
	all, err := s.Addresses(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Address{
		"ws-hib": {Lifecycle: lifecycle.Hibernated},
		"ws-up":  {Lifecycle: lifecycle.ActiveHealthy, IP: "203.0.113.7"},
		"ws-new": {Lifecycle: lifecycle.Waking},
	}
	if diff := cmp.Diff(want, all); diff != "" {
		t.Errorf("Addresses (-want +got):\n%s", diff)
	}
	if a, err := s.Address(ctx, "ws-up"); err != nil || a != want["ws-up"] {
		t.Errorf("Address(ws-up) = %+v, %v", a, err)
	}
	if _, err := s.Address(ctx, "ws-none"); !errors.Is(err, ErrUnknownTenant) {
		t.Errorf("Address(ws-none): err = %v, want ErrUnknownTenant", err)
	}

	before := time.Now().Add(-time.Minute)
	for _, ws := range []string{"ws-hib", "ws-up", "ws-new"} {
		if err := s.RecordActivity(ctx, ws); err != nil {
			t.Fatalf("RecordActivity(%s): %v", ws, err)
		}
	}
	if err := s.RecordActivity(ctx, "ws-none"); !errors.Is(err, ErrUnknownTenant) {
		t.Errorf("RecordActivity(ws-none): err = %v, want ErrUnknownTenant", err)
	}
	rows, err := s.Fleet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		switch r.Workspace {
		case "ws-hib", "ws-new":
			if r.LastActivity.Before(before) {
				t.Errorf("%s: last activity %v, want now", r.Workspace, r.LastActivity)
			}
		case "ws-up":
			if !r.LastActivity.Equal(future) {
				t.Errorf("ws-up: last activity %v moved back from %v", r.LastActivity, future)
			}
		}
		if !r.IdleWarnedAt.IsZero() {
			t.Errorf("%s: idle warning %v not cleared", r.Workspace, r.IdleWarnedAt)
		}
	}
	var warned int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM fleet_status WHERE idle_warned_at IS NOT NULL`).Scan(&warned); err != nil || warned != 0 {
		t.Errorf("idle warnings left: %d (%v)", warned, err)
	}
}
