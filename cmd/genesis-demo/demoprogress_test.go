package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/schema"
)

func TestProgressLine(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	row := func(id, state string, issued, applied int64, beat time.Duration) api.FleetTenant {
		r := api.FleetTenant{TenantStatus: api.TenantStatus{Workspace: id, Lifecycle: state, ManifestIssued: issued, ManifestApplied: applied}}
		if beat >= 0 {
			r.LastHeartbeat = now.Add(-beat)
		}
		return r
	}
	tests := []struct {
		name  string
		rows  []api.FleetTenant
		beats int
		want  string
	}{
		{"empty", nil, 0, "fleet: no tenants yet | manifests applied 0/0 | heartbeats last minute: 0 from 0 agents"},
		{"onboarding", []api.FleetTenant{
			row("a", "ACTIVE_HEALTHY", 2, 2, 3*time.Second),
			row("b", "PROVISIONING", 1, 0, -1),
			row("c", "INITIALIZING", 1, 1, 59*time.Second),
			row("d", "PENDING", 0, 0, -1),
			row("e", "ACTIVE_HEALTHY", 3, 2, 61*time.Second), // applied an older one, silent for a minute
		}, 42, "fleet: 1 PENDING, 1 PROVISIONING, 1 INITIALIZING, 2 ACTIVE_HEALTHY | manifests applied 2/4 | heartbeats last minute: 42 from 2 agents"},
		{"unknown states last, by name", []api.FleetTenant{
			row("a", "ZEBRA", 0, 0, -1), row("b", "", 0, 0, -1), row("c", "HIBERNATED", 0, 0, -1), row("d", "APPLE", 0, 0, -1),
		}, 0, "fleet: 1 HIBERNATED, 1 unknown, 1 APPLE, 1 ZEBRA | manifests applied 0/0 | heartbeats last minute: 0 from 0 agents"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := progressLine(api.Fleet{Tenants: tc.rows}, tc.beats, now)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("progressLine (-want +got):\n%s", diff)
			}
		})
	}
}

func TestBeatWindow(t *testing.T) {
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	var w beatWindow
	steps := []struct {
		at   time.Duration
		n    float64
		want int
	}{
		{0, 100, 0},
		{10 * time.Second, 110, 10},
		{60 * time.Second, 160, 60},  // the first sample is exactly a minute old: still the baseline
		{70 * time.Second, 165, 55},  // baseline 110 (at 10s)
		{200 * time.Second, 170, 5},  // everything older than a minute but the newest of them dropped
		{201 * time.Second, 3, 0},    // counter reset: starts over
		{230 * time.Second, 33, 30},  // counted from the reset
		{300 * time.Second, 100, 67}, // baseline 33 (at 230s)
	}
	for _, s := range steps {
		if got := w.add(t0.Add(s.at), s.n); got != s.want {
			t.Errorf("add(%s, %v) = %d, want %d", s.at, s.n, got, s.want)
		}
	}
	if len(w.samples) > 3 {
		t.Errorf("window keeps %d samples", len(w.samples))
	}
}

func TestCounterValue(t *testing.T) {
	const expo = `# HELP genesis_heartbeats_total Heartbeats by result.
# TYPE genesis_heartbeats_total counter
genesis_heartbeats_total{result="queued"} 40
genesis_heartbeats_total{result="written"} 37
genesis_heartbeats_total{other="x",result="written"} 3
genesis_heartbeats_total_extra{result="written"} 1000
genesis_heartbeats_total{result="written"} NaN
genesis_heartbeats_total{result="written" 5
genesis_other 7
genesis_other{a="b"} 8 1700000000000
`
	tests := []struct {
		name, label string
		want        float64
		found       bool
	}{
		{"genesis_heartbeats_total", `result="written"`, 40, true},
		{"genesis_heartbeats_total", `result="queued"`, 40, true},
		{"genesis_heartbeats_total", `result="dropped"`, 0, false},
		{"genesis_other", "", 15, true},
		{"missing_total", "", 0, false},
	}
	for _, tc := range tests {
		got, found := counterValue(expo, tc.name, tc.label)
		if got != tc.want || found != tc.found {
			t.Errorf("counterValue(%s, %s) = %v, %v; want %v, %v", tc.name, tc.label, got, found, tc.want, tc.found)
		}
	}
}

func FuzzCounterValue(f *testing.F) {
	f.Add("genesis_heartbeats_total{result=\"written\"} 37\n")
	f.Add("genesis_heartbeats_total{result=\"written\" 5")
	f.Add("genesis_heartbeats_total 1e400\n")
	f.Fuzz(func(t *testing.T, expo string) {
		v, found := counterValue(expo, "genesis_heartbeats_total", `result="written"`)
		if !found && v != 0 {
			t.Fatalf("not found but %v", v)
		}
	})
}

func TestParseDropletInfo(t *testing.T) {
	good := `{"droplet_id":"7","ip":"127.1.0.9","n8n_url":"http://127.0.0.1:1234","caddy_admin":"127.0.0.1:2019",
	"http_port":8080,"https_port":8443,"ask":"127.0.0.1:9180","caddy_root":"/d/root.crt","pid":10,"caddy_pid":11,"agent_pid":12}`
	got, err := parseDropletInfo([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	want := dropletInfo{DropletID: "7", IP: "127.1.0.9", N8NURL: "http://127.0.0.1:1234", CaddyAdmin: "127.0.0.1:2019",
		HTTPPort: 8080, HTTPSPort: 8443, Ask: "127.0.0.1:9180", CaddyRoot: "/d/root.crt", PID: 10, CaddyPID: 11, AgentPID: 12}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parse (-want +got):\n%s", diff)
	}
	bad := []struct{ edit, want string }{
		{`"ip":"127.1.0.9"`, `ip: invalid value ""`},
		{`"https_port":8443`, "https_port: invalid value 0"},
		{`"http_port":8080`, "http_port: invalid value 0"},
		{`"agent_pid":12`, "agent_pid: invalid value 0"},
		{`"pid":10`, "pid: invalid value 0"},
		{`"caddy_admin":"127.0.0.1:2019"`, `caddy_admin: invalid value ""`},
		{`"n8n_url":"http://127.0.0.1:1234"`, `n8n_url: invalid value ""`},
	}
	for _, b := range bad {
		t.Run(b.want, func(t *testing.T) {
			// Drop the field (a repeated droplet_id keeps the JSON valid).
			body := strings.Replace(good, b.edit, `"droplet_id":"7"`, 1)
			_, err := parseDropletInfo([]byte(body))
			if err == nil || !strings.Contains(err.Error(), b.want) {
				t.Errorf("error %v, want one naming %q", err, b.want)
			}
		})
	}
	for _, body := range []string{"", "{", "[]", good + "{}", `{"unknown":1}`, `{"pid":"ten"}`} {
		if _, err := parseDropletInfo([]byte(body)); err == nil || !strings.Contains(err.Error(), dropletInfoFile) {
			t.Errorf("parse %q: error %v", body, err)
		}
	}
}

func FuzzParseDropletInfo(f *testing.F) {
	f.Add([]byte(`{"droplet_id":"7","ip":"127.1.0.9","n8n_url":"http://127.0.0.1:1","caddy_admin":"127.0.0.1:2","http_port":1,"https_port":2,"ask":"127.0.0.1:3","caddy_root":"r","pid":10,"caddy_pid":11,"agent_pid":12}`))
	f.Add([]byte(`{"pid":-1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		in, err := parseDropletInfo(data)
		if err == nil && (in.PID < 2 || in.AgentPID < 2 || in.CaddyPID < 2 || in.HTTPSPort < 1 || in.HTTPSPort > 65535) {
			t.Fatalf("accepted %+v", in)
		}
	})
}

// TestDemoWatchdog: the demo's copy of genesis.yaml gets second-scale
// watchdog thresholds, whatever the original holds, and stays valid.
func TestDemoWatchdog(t *testing.T) {
	example, err := os.ReadFile("../../state-example/genesis.yaml")
	if err != nil {
		t.Fatal(err)
	}
	withoutBlock := strings.Replace(string(example), "  watchdog:\n", "  unused:\n", 1)
	i := strings.Index(withoutBlock, "  unused:\n")
	j := strings.Index(withoutBlock, "  hibernation:\n")
	withoutBlock = withoutBlock[:i] + withoutBlock[j:]
	partial := strings.Replace(string(example), "    criticalAfter: 15m\n", "", 1)
	for name, body := range map[string]string{"example": string(example), "no watchdog": withoutBlock, "partial": partial} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := copyTree("../../state-example", dir); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "genesis.yaml")
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := demoWatchdog(path); err != nil {
				t.Fatal(err)
			}
			repo := schema.LoadDir(os.DirFS(dir))
			if len(repo.Errors) > 0 {
				out, _ := os.ReadFile(path)
				t.Fatalf("invalid after demoWatchdog: %v\n%s", repo.Errors, out)
			}
			w := repo.Fleet.Spec.Watchdog
			got := []time.Duration{time.Duration(w.DegradedAfter), time.Duration(w.CriticalAfter), time.Duration(w.Cooldown)}
			if diff := cmp.Diff([]time.Duration{6 * time.Second, 12 * time.Second, 30 * time.Second}, got); diff != "" {
				t.Errorf("watchdog (-want +got):\n%s", diff)
			}
			if name == "example" && repo.Fleet.Spec.Watchdog.OutagePercent != 30 {
				t.Errorf("outagePercent changed to %v", repo.Fleet.Spec.Watchdog.OutagePercent)
			}
		})
	}
}
