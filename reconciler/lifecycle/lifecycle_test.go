package lifecycle

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// constraint returns the quoted names of the last definition of the CHECK
// constraint name in the migrations (in file order).
func constraint(t *testing.T, name string) []State {
	t.Helper()
	files, err := filepath.Glob("../../migrations/*.sql")
	if err != nil || len(files) == 0 {
		t.Fatalf("migrations: %v (%d files)", err, len(files))
	}
	slices.Sort(files)
	def := regexp.MustCompile(`(?s)CONSTRAINT ` + name + ` CHECK \((.*?)\)\)`)
	quoted := regexp.MustCompile(`'([A-Z_]+)'`)
	var got []State
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range def.FindAllStringSubmatch(string(b), -1) {
			got = nil
			for _, q := range quoted.FindAllStringSubmatch(m[1], -1) {
				got = append(got, State(q[1]))
			}
		}
	}
	if got == nil {
		t.Fatalf("no CHECK %s in the migrations", name)
	}
	return got
}

// TestStatesMatchMigrations: the package's states are the database's, and
// NeedDroplet is what fleet_status_droplet_check forbids without a droplet.
func TestStatesMatchMigrations(t *testing.T) {
	for _, c := range []struct {
		name string
		want []State
	}{
		{"fleet_status_state_check", All()},
		{"fleet_status_droplet_check", NeedDroplet()},
	} {
		t.Run(c.name, func(t *testing.T) {
			if diff := cmp.Diff(constraint(t, c.name), c.want); diff != "" {
				t.Errorf("CHECK %s (-got +want):\n%s", c.name, diff)
			}
		})
	}
}

var policy = Policy{DegradedAfter: 5 * time.Minute, CriticalAfter: 15 * time.Minute, Cooldown: 10 * time.Minute, BootDeadline: 20 * time.Minute}

// TestEveryStateHasADeadline: every non-steady state has a deadline and a
// consequence; steady ones have neither.
func TestEveryStateHasADeadline(t *testing.T) {
	for _, s := range All() {
		t.Run(string(s), func(t *testing.T) {
			_, ok := Deadline(s, policy)
			c := OnDeadline(s)
			if got, want := ok, !s.Steady(); got != want {
				t.Errorf("has a deadline = %v, want %v", got, want)
			}
			if got, want := c != None, !s.Steady(); got != want {
				t.Errorf("consequence %q, want one: %v", c, want)
			}
		})
	}
}

func TestOnHeartbeat(t *testing.T) {
	okNew := Heartbeat{OK: true, Applied: 2, Issued: 2}
	okOld := Heartbeat{OK: true, Applied: 1, Issued: 2}
	okNone := Heartbeat{OK: true, Issued: 2}
	bad := Heartbeat{OK: false, Applied: 2, Issued: 2}
	for _, c := range []struct {
		from State
		hb   Heartbeat
		want State
	}{
		{Booting, okNone, Configuring},
		{Initializing, okNone, Configuring},
		{Handshake, okNone, Configuring},
		{Configuring, okNone, Configuring},
		{Handshake, okOld, Deploying},
		{Configuring, bad, Deploying},
		{Deploying, okOld, Deploying},
		{Deploying, okNew, ActiveHealthy},
		{Handshake, okNew, ActiveHealthy},
		{ActiveHealthy, bad, ActiveDegraded},
		{ActiveDegraded, bad, ActiveDegraded},
		{ActiveDegraded, okNew, ActiveHealthy},
		{ActiveDegraded, okOld, ActiveDegraded},
		{ActiveCritical, bad, ActiveDegraded},
		{Rebooting, okNew, ActiveHealthy},
		{Rebooting, okOld, Rebooting},
		{Failed, okNew, Failed},
		{Hibernating, okNew, Hibernating},
		{Provisioning, okNew, Provisioning},
		{ActiveHealthy, Heartbeat{OK: true}, ActiveHealthy},
	} {
		t.Run(string(c.from), func(t *testing.T) {
			if got := OnHeartbeat(c.from, c.hb); got != c.want {
				t.Errorf("OnHeartbeat(%s, %+v) = %s, want %s", c.from, c.hb, got, c.want)
			}
		})
	}
}

// TestTransitionsStayInTheTable: every function returns a stored state
// (or "" for no change).
func TestTransitionsStayInTheTable(t *testing.T) {
	acts := []Action{Create, Wake, Hibernate, Resize, Destroy, Reboot, PowerCycle, Rebuild, Adopt, CreateSpare, AssignSpare, DestroySpare}
	var got []State
	for _, a := range acts {
		got = append(got, Start(a), Finished(a, false), Finished(a, true))
	}
	for _, s := range All() {
		got = append(got, Created(s), FailedFrom(s, true), FailedFrom(s, false), OnSilence(s, time.Hour, policy))
		for _, r := range HeartbeatRules() {
			got = append(got, r.To)
		}
	}
	got = append(got, Retried(true), Retried(false))
	for _, s := range got {
		if s != "" && !s.Valid() {
			t.Errorf("%q is not a stored state", s)
		}
	}
}

func TestRender(t *testing.T) {
	for _, c := range []struct {
		name                string
		row, declared, hold bool
		state               State
		desired             string
		want                State
		wantDesired         string
	}{
		{"declared hibernated, never created", false, true, false, "", "hibernated", NotCreated, "hibernated"},
		{"declared absent, never created", false, true, false, "", "absent", NotCreated, "absent"},
		{"declared running, not yet created", false, true, false, "", "running", Pending, "running"},
		{"file removed, droplet left", true, false, true, ActiveHealthy, "running", Orphaned, DesiredUndeclared},
		{"file removed after destroy", true, false, false, Destroyed, "absent", Destroyed, DesiredUndeclared},
		{"declared with a row", true, true, true, ActiveHealthy, "running", ActiveHealthy, "running"},
		{"declared hibernated, row never created", true, true, false, Pending, "hibernated", NotCreated, "hibernated"},
		{"declared absent, row never created", true, true, false, Pending, "absent", NotCreated, "absent"},
		{"declared running, row pending", true, true, false, Pending, "running", Pending, "running"},
		{"declared hibernated, pending with a snapshot", true, true, true, Pending, "hibernated", Pending, "hibernated"},
		{"file removed before the create", true, false, false, Pending, "running", NotCreated, DesiredUndeclared},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, gotDesired := Render(c.row, c.state, c.declared, c.desired, c.hold)
			if got != c.want || gotDesired != c.wantDesired {
				t.Errorf("Render = %s, %s; want %s, %s", got, gotDesired, c.want, c.wantDesired)
			}
		})
	}
}

func TestSQLList(t *testing.T) {
	if got, want := SQLList([]State{Booting, Waking}), "'BOOTING', 'WAKING'"; got != want {
		t.Errorf("SQLList = %s, want %s", got, want)
	}
	for _, s := range All() {
		if strings.Trim(string(s), "ABCDEFGHIJKLMNOPQRSTUVWXYZ_") != "" {
			t.Errorf("%q is not safe to quote in SQL", s)
		}
	}
}
