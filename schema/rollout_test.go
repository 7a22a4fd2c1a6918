package schema

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDecodedRollout(t *testing.T) {
	f, errs := DecodeFleet(FleetFile, mustRead(t, "testdata/fleets/rollout.good.yaml"))
	if errs != nil {
		t.Fatal(errs)
	}
	want := &Rollout{
		Waves: []RolloutWave{
			{Name: "canary", Percent: 1, Tiers: []Tier{TierStarter}, Labels: map[string]string{"ring": "canary"}, Bake: Duration(10 * time.Minute), MaxUnavailable: "1", FailureBudget: "1"},
			{Name: "early", Percent: 12.5, MaxUnavailable: DefaultMaxUnavailable, FailureBudget: DefaultFailureBudget},
			{Name: "everyone-else", Rest: true, Bake: Duration(30 * time.Minute), MaxUnavailable: "10%", FailureBudget: "2%"},
		},
		TenantChanges: TenantChangesRollout,
		MaintenanceWindows: []MaintenanceWindow{
			{Days: []string{"sat", "sun"}, Start: "02:00", End: "05:00"},
			{Days: []string{"wed"}, Start: "22:30", End: "01:00"},
		},
		OnFailure:        OnFailureRollback,
		ProgressDeadline: Duration(45 * time.Minute),
	}
	if diff := cmp.Diff(want, f.Spec.Rollout); diff != "" {
		t.Errorf("spec.rollout (-want +got):\n%s", diff)
	}
	wantAgent := &AgentRelease{Version: "1.4.0", SHA256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
		URL: "https://releases.example.com/genesis-agent/1.4.0/genesis-agent-linux-amd64"}
	if diff := cmp.Diff(wantAgent, f.Spec.Defaults.Agent); diff != "" {
		t.Errorf("spec.defaults.agent (-want +got):\n%s", diff)
	}
	plain, errs := DecodeFleet(FleetFile, mustRead(t, "testdata/fleets/backup.good.yaml"))
	if errs != nil {
		t.Fatal(errs)
	}
	if plain.Spec.Rollout != nil {
		t.Errorf("no spec.rollout: got %+v, want nil (every droplet at once)", plain.Spec.Rollout)
	}
	minimal := strings.Replace(string(mustRead(t, "testdata/fleets/backup.good.yaml")), "  backup:\n", "  rollout:\n    waves: [{name: all, rest: true}]\n  backup:\n", 1)
	f, errs = DecodeFleet(FleetFile, []byte(minimal))
	if errs != nil {
		t.Fatal(errs)
	}
	wantMin := &Rollout{Waves: []RolloutWave{{Name: "all", Rest: true, MaxUnavailable: "1", FailureBudget: "0"}}, TenantChanges: TenantChangesImmediate,
		OnFailure: OnFailurePause, ProgressDeadline: Duration(DefaultProgressDeadline)}
	if diff := cmp.Diff(wantMin, f.Spec.Rollout); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestQuantityOf(t *testing.T) {
	tests := []struct {
		q    Quantity
		size int
		want int
	}{
		{"1", 50, 1},
		{"7", 3, 7},
		{"10%", 50, 5},
		{"10%", 9, 0},
		{"2%", 99, 1},
		{"100%", 7, 7},
		{"0", 10, 0},
		{"bad", 10, 0},
		{"", 10, 0},
	}
	for _, tt := range tests {
		t.Run(string(tt.q), func(t *testing.T) {
			if got := tt.q.Of(tt.size); got != tt.want {
				t.Errorf("Quantity(%q).Of(%d) = %d, want %d", tt.q, tt.size, got, tt.want)
			}
		})
	}
}

func TestWeekdayAndMinutes(t *testing.T) {
	if got, want := Weekday("sun"), int(time.Sunday); got != want {
		t.Errorf("Weekday(sun) = %d, want %d", got, want)
	}
	if got, want := Weekday("sat"), int(time.Saturday); got != want {
		t.Errorf("Weekday(sat) = %d, want %d", got, want)
	}
	if got := Weekday("saturday"); got != -1 {
		t.Errorf("Weekday(saturday) = %d, want -1", got)
	}
	for in, want := range map[string]int{"00:00": 0, "02:30": 150, "23:59": 1439, "24:00": -1, "2:30": -1} {
		if got := Minutes(in); got != want {
			t.Errorf("Minutes(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestTenantTimezone(t *testing.T) {
	base := string(mustRead(t, "testdata/tenants/ws-labels.good.yaml"))
	const declared = "timezone: America/Argentina/Buenos_Aires"
	for tz, ok := range map[string]bool{
		"UTC":              true,
		"Europe/Paris":     true,
		"Etc/GMT+5":        true,
		"Mars/Olympus":     false, // the shape of a name, but no such zone
		"Local":            false, // the host's zone, not a declared one
		"Europe/../Paris":  false,
		"/etc/localtime":   false,
		"Europe/Paris/Foo": false,
	} {
		t.Run(tz, func(t *testing.T) {
			tn, errs := DecodeTenant("tenants/ws-labels.yaml", []byte(strings.Replace(base, declared, "timezone: "+tz, 1)))
			if got := len(errs) == 0; got != ok {
				t.Fatalf("accepted = %v, want %v (%v)", got, ok, errs)
			}
			for _, e := range errs {
				if !strings.HasPrefix(e.Message, "metadata.timezone: ") || e.Line != 8 {
					t.Errorf("error %d:%d %q does not name the timezone at its line", e.Line, e.Col, e.Message)
				}
			}
			if ok {
				loc, err := tn.Metadata.Location()
				if err != nil || loc.String() != tz {
					t.Errorf("Location() = %v, %v; want %s", loc, err, tz)
				}
			}
		})
	}
	if loc, err := (TenantMeta{}).Location(); err != nil || loc != time.UTC {
		t.Errorf("no timezone: Location() = %v, %v; want UTC", loc, err)
	}
}
