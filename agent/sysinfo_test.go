package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/schema"
)

// meminfo is a droplet's /proc/meminfo with 4 GiB of swap, free as given
// (kB).
func meminfo(swapFreeKB int) string {
	return "MemTotal:        1004956 kB\nMemFree:           73412 kB\nMemAvailable:     301840 kB\nBuffers:           10732 kB\nCached:           262908 kB\n" +
		"SwapCached:        41232 kB\nSwapTotal:       4194300 kB\nSwapFree:        " + itoa(swapFreeKB) + " kB\nZswap:                 0 kB\n"
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
		if n == 0 {
			return string(b)
		}
	}
}

func TestParseSwap(t *testing.T) {
	for _, tc := range []struct {
		name        string
		in          string
		used, total uint64
		err         string
	}{
		{"droplet", meminfo(838860), (4194300 - 838860) * 1024, 4194300 * 1024, ""},
		{"no swap", "MemTotal: 10 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n", 0, 0, ""},
		{"no swap lines", "MemTotal: 10 kB\nMemAvailable: 5 kB\n", 0, 0, ""},
		{"free above total", "SwapTotal: 10 kB\nSwapFree: 20 kB\n", 0, 10240, ""},
		{"total without free", "SwapTotal: 10 kB\n", 0, 0, "SwapTotal without SwapFree"},
		{"garbage", "SwapTotal: x kB\nSwapFree: 1 kB\n", 0, 0, "malformed SwapTotal"},
		{"wrong unit", "SwapTotal: 1 kB\nSwapFree: 1 MB\n", 0, 0, "malformed SwapFree"},
		{"twice", "SwapTotal: 1 kB\nSwapTotal: 2 kB\nSwapFree: 1 kB\n", 0, 0, "SwapTotal twice"},
		{"huge", "SwapTotal: 99999999999999999999 kB\nSwapFree: 1 kB\n", 0, 0, "malformed SwapTotal"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			used, total, err := parseSwap([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || used != tc.used || total != tc.total {
				t.Errorf("parseSwap = %d, %d, %v; want %d, %d", used, total, err, tc.used, tc.total)
			}
		})
	}
}

// FuzzParseSwap: any meminfo is read or refused, never with used above
// total, and its component judged without a panic.
func FuzzParseSwap(f *testing.F) {
	f.Add([]byte(meminfo(100)))
	f.Add([]byte("SwapTotal: 0 kB\nSwapFree: 0 kB\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		used, total, err := parseSwap(data)
		if err != nil {
			return
		}
		if used > total {
			t.Fatalf("used %d > total %d", used, total)
		}
		swapHealth(used, total, DefaultSwapMaxPercent)
	})
}

func TestSwapHealth(t *testing.T) {
	for _, tc := range []struct {
		name        string
		used, total uint64
		max         float64
		want        schema.ComponentHealth
	}{
		{"none", 0, 0, 80, schema.ComponentHealth{OK: true, Detail: "no swap"}},
		{"light", 1 << 30, 4 << 30, 80, schema.ComponentHealth{OK: true, Detail: "1.0 GiB of 4.0 GiB swap used (25%)"}},
		{"at the threshold", 3435973836, 4 << 30, 80, schema.ComponentHealth{OK: true, Detail: "3.2 GiB of 4.0 GiB swap used (80%)"}},
		{"heavy", 3650722202, 4 << 30, 80, schema.ComponentHealth{OK: false, Detail: "3.4 GiB of 4.0 GiB swap used (85%), more than 80%"}},
		{"heavy, higher threshold", 3650722202, 4 << 30, 90, schema.ComponentHealth{OK: true, Detail: "3.4 GiB of 4.0 GiB swap used (85%)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, swapHealth(tc.used, tc.total, tc.max)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestHeartbeatReportsSwap: the heartbeat carries the swap figures of the
// droplet's meminfo and a swap component that is down past
// Config.SwapMaxPercent.
func TestHeartbeatReportsSwap(t *testing.T) {
	for _, tc := range []struct {
		name   string
		free   int // kB of 4194300
		max    float64
		ok     bool
		detail string
	}{
		{"heavy", 419430, 0, false, "3.6 GiB of 4.0 GiB swap used (90%), more than 80%"},
		{"heavy, threshold raised", 419430, 95, true, "3.6 GiB of 4.0 GiB swap used (90%)"},
		{"light", 4000000, 0, true, "0.2 GiB of 4.0 GiB swap used (5%)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			fx := h.fx
			proc := t.TempDir()
			if err := os.WriteFile(filepath.Join(proc, "meminfo"), []byte(meminfo(tc.free)), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(proc, "uptime"), []byte("3600.50 7000.00\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			r := h.start(fx.droplet, h.fake.token(fx.workspace, "genesis-ws-acme"), nil, func(c *Config) {
				c.ProcDir, c.SwapMaxPercent = proc, tc.max
			})
			defer r.stop()
			hb := h.fake.waitBeat(t, "a heartbeat", func(schema.Heartbeat) bool { return true })
			if hb.SwapTotal != 4194300*1024 || hb.SwapUsed != uint64(4194300-tc.free)*1024 || hb.UptimeSeconds != 3600.5 {
				t.Errorf("swap %d of %d, uptime %v", hb.SwapUsed, hb.SwapTotal, hb.UptimeSeconds)
			}
			if diff := cmp.Diff(schema.ComponentHealth{OK: tc.ok, Detail: tc.detail}, hb.Components["swap"]); diff != "" {
				t.Errorf("swap component (-want +got):\n%s", diff)
			}
		})
	}
}
