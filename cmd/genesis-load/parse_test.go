package main

import (
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const wrkOutput = `Running 5s test @ http://127.0.0.1:40123/v1/manifest
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.52ms  31.20ms   88.12%
    Req/Sec    15.88k     1.20k   18.02k    71.00%
  Latency Distribution
     50%  580.00us
     75%    2.40ms
     90%    3.90ms
     99%    7.25ms
  158012 requests in 5.00s, 20.35MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  31596.71
Transfer/sec:      4.07MB
`

func TestParseWrk(t *testing.T) {
	got, err := parseWrk([]byte(wrkOutput))
	if err != nil {
		t.Fatal(err)
	}
	want := httpResult{rps: 31596.71, p50: 580 * time.Microsecond, p99: 7250 * time.Microsecond, requests: 158012, bad: 7}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(httpResult{})); diff != "" {
		t.Errorf("parseWrk (-want +got):\n%s", diff)
	}
	for _, tc := range []struct{ name, out, want string }{
		{"no summary", "Running 5s test @ x\n", "no Requests/sec line"},
		{"bad rate", "Requests/sec:  lots\n", `Requests/sec "lots" is not a number`},
		{"bad latency", "     99%    7.25parsecs\nRequests/sec: 1\n", "latency 99%"},
		{"bad socket errors", "  Socket errors: connect zero\nRequests/sec: 1\n", "socket errors"},
	} {
		if _, err := parseWrk([]byte(tc.out)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseWrk(f *testing.F) {
	f.Add([]byte(wrkOutput))
	f.Add([]byte("Requests/sec: 1e400\n  99% 1e300m\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseWrk(b)
		if err == nil && r.rps < 0 {
			t.Fatalf("negative rate %v accepted", r.rps)
		}
	})
}

const metricsPage = `# HELP genesis_heartbeats_total Heartbeats by result.
# TYPE genesis_heartbeats_total counter
genesis_heartbeats_total{result="queued"} 120
genesis_heartbeats_total{result="written"} 100
genesis_manifest_longpolls_waiting 7
genesis_weird{path="a b}c"} 1.5e3 1700000000000
`

func TestParseMetrics(t *testing.T) {
	got, err := parseMetrics([]byte(metricsPage))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{`genesis_heartbeats_total{result="queued"}`: 120, `genesis_heartbeats_total{result="written"}`: 100,
		"genesis_manifest_longpolls_waiting": 7, `genesis_weird{path="a b}c"}`: 1500}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseMetrics (-want +got):\n%s", diff)
	}
	if hc := heartbeatsOf(got); hc.queued != 120 || hc.written != 100 {
		t.Errorf("heartbeatsOf = %+v", hc)
	}
	for _, tc := range []struct{ page, want string }{
		{"a{b=\"c\" 1\n", "line 1: unexpected end of label value"},
		{"# x\nlonely\n", "line 2: expected float as value"},
		{"a 1 2 3\n", "line 1: spurious string after timestamp"},
		{"a one\n", `line 1: expected float as value, got "one"`},
	} {
		if _, err := parseMetrics([]byte(tc.page)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.page, err, tc.want)
		}
	}
}

func FuzzParseMetrics(f *testing.F) {
	f.Add([]byte(metricsPage))
	f.Add([]byte("a{} NaN\nb{x=\"}\"} +Inf\n"))
	f.Fuzz(func(t *testing.T, b []byte) { parseMetrics(b) })
}

const benchOutput = `goos: linux
goarch: amd64
pkg: genesis.dev/fleet/reconciler/agentapi
BenchmarkManifest304/http-2         	   30000	     40000 ns/op	    6000 B/op	      70 allocs/op
BenchmarkManifest304/http-2         	   30000	     38000 ns/op	    6000 B/op	      70 allocs/op
BenchmarkManifest304/http-2         	   30000	     39000 ns/op	    6000 B/op	      70 allocs/op
BenchmarkBare304/http-2             	   30000	     35000 ns/op	    5000 B/op	      60 allocs/op
BenchmarkHeartbeatIngest-2          	   90000	     73000 ns/op	     13700 heartbeats/s
BenchmarkHeartbeatRawUpsert-2       	   90000	     44600 ns/op	     22400 heartbeats/s
--- FAIL: BenchmarkBroken
BenchmarkCommitToApplied-2          	       1	         0 ns/op	      1401 max-ms	       689.0 p50-ms	      1401 p99-ms	         1.080 render-s
pkg: genesis.dev/fleet/reconciler/cloud
BenchmarkProvision1000/boot=0s-2    	       1	120000000 ns/op	         0 429s	         1.000 rate_ratio
pkg: genesis.dev/fleet/reconciler/plan
BenchmarkComputeConverged/tenants=100000-2     10	 207000000 ns/op	       207.0 ms/plan
BenchmarkComputeIncremental-2                  10	   3200000 ns/op	         3.200 ms/plan
pkg: genesis.dev/fleet/tenants
BenchmarkColdLoad/tenants=15000-2   	       1	820000000 ns/op	        54.67 µs/tenant
BenchmarkRawYAMLDecode/tenants=15000-2         1	530000000 ns/op	        35.33 µs/tenant
BenchmarkIncrementalOneTenant/unique=whole-set-2         	      20	 950247912 ns/op	         1.000 parses/op
BenchmarkIncrementalOneTenant/unique=incremental-2       	      20	 608349492 ns/op	         1.000 parses/op
BenchmarkSnapshotHeap/tenants=100000-2                  	       1	21034567890 ns/op	      2247 B/tenant	       880.0 file-B/tenant
BenchmarkSnapshotHeap/edit=every-file/tenants=100000-2 	       1	61034567890 ns/op	       600.0 added-B/tenant	      2400 unshared-B/tenant
pkg: genesis.dev/fleet/reconciler/service
BenchmarkParkedConnMemory/http1-2         	       1	 667768698 ns/op	         2.000 goroutines/conn	     14336 heap-B/conn	      6144 stack-B/conn
BenchmarkParkedConnMemory/tls-http1-2     	       1	1727872891 ns/op	         2.000 goroutines/conn	     21504 heap-B/conn	     12288 stack-B/conn
BenchmarkParkedConnMemory/tls-h2-2        	       1	1736023000 ns/op	         3.000 goroutines/conn	     20480 heap-B/conn	     24576 stack-B/conn
PASS
`

func TestGoBenchReport(t *testing.T) {
	b, err := parseBench(strings.NewReader(benchOutput))
	if err != nil {
		t.Fatal(err)
	}
	if got := b["Manifest304/http"]["ns/op"]; got != 39000 {
		t.Errorf("median of three runs = %v, want 39000", got)
	}
	rep := goBenchReport(b)
	type row struct {
		Measure, Verdict string
		Ratio            float64
	}
	var got []row
	for _, f := range rep.Figures {
		got = append(got, row{f.Measure, f.Verdict, float64(int(f.Ratio*1000)) / 1000})
	}
	want := []row{
		{"manifest 304 over loopback (Go client, in-process server)", "met", 0.897},
		{"heartbeat ingest, handler → Postgres (in process)", "met", 0.611},
		{"cold load of 15,000 tenants (git, decode, validate, index)", "", 1.547},
		{"incremental plan at 100,000 tenants (plan.Compute, one tenant changed)", "met", 0.015},
		{"a replica's decoded fleet at 100,000 tenants: live heap per tenant", "", 2.553},
		{"a commit editing every tenant file at 100,000 (a rollout label each): heap the new Snapshot adds while the previous one is still held, per tenant", "", 0.25},
		{"a parked agent connection in a replica's server over TLS and HTTP/2 (as droplets connect): live heap + goroutine stacks", "", 2.2},
		{"sync after a one-tenant commit at 100,000 tenants (git, one parse, cross-tenant rules, snapshot)", "", 0.64},
		{"one-tenant commit at 100,000 tenants: sync + plan", "not met", 0.641},
		{"provisioning 1,000 droplets, boot 0s: achieved ÷ rate-limit bound", "met", 1},
		{"sweep → 1,000 long-polling agents verified, p99 (in process)", "met", 1.297},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("figures (-want +got):\n%s", diff)
	}
	if _, err := parseBench(strings.NewReader("BenchmarkX-2 10 5 ns/op 7\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("unpaired value: err = %v, want one naming line 1", err)
	}
}

func FuzzParseBench(f *testing.F) {
	f.Add([]byte(benchOutput))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := parseBench(strings.NewReader(string(b))); err == nil {
			goBenchReport(m)
		}
	})
}

func TestUpdateMarkdown(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.md")
	hand := "# Benchmark results\n\nHand-written history stays.\n\n## Older figures\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
	if err := os.WriteFile(path, []byte(hand), 0o644); err != nil {
		t.Fatal(err)
	}
	m := machine{CPU: "Test CPU | 9000", Cores: 2, Memory: "1.0 GiB"}
	day1 := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	hb := &report{Scenario: "heartbeat", Command: "genesis-load heartbeat --agents 5", Figures: []figure{
		{Measure: "heartbeat ingest, end to end", Value: 12000, Unit: "/s", Baseline: "raw", BaselineValue: 20000, Ratio: 0.6, Goal: "≥ 10,000/s", Verdict: "met", Note: "first"},
		{Measure: "heartbeat request latency p99", Value: 3.5, Unit: "ms"},
	}}
	if err := updateMarkdown(path, hb, m, day1); err != nil {
		t.Fatal(err)
	}
	lp := &report{Scenario: "longpoll", Command: "genesis-load longpoll", Figures: []figure{{Measure: "long-poll fan-out p99", Value: 700, Unit: "ms"}}}
	if err := updateMarkdown(path, lp, m, day1); err != nil {
		t.Fatal(err)
	}
	// A second heartbeat run replaces its rows, also dropping a measure it
	// no longer reports, and keeps longpoll's.
	hb.Figures[0].Value, hb.Figures[0].Verdict, hb.Figures[0].Note = 9000, "not met", "second | run"
	hb.Figures = hb.Figures[:1]
	if err := updateMarkdown(path, hb, m, day1.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "# Benchmark results\n\n" + mdBegin + `
## Latest ` + "`make bench`" + ` run

Machine: Test CPU \| 9000, 2 cores, 1.0 GiB memory. Last updated 2026-11-26 10:00 UTC. Every figure is compared with a baseline measured in the same run (ratio = value ÷ baseline).

| scenario | measure | value | baseline (same run) | ratio | goal | verdict | date |
|---|---|---|---|---|---|---|---|
| heartbeat | heartbeat ingest, end to end | 9000 /s | raw: 20,000 /s | 0.60× | ≥ 10,000/s | **not met** | 2026-11-26 10:00 UTC |
| longpoll | long-poll fan-out p99 | 700 ms |  |  |  |  | 2026-11-25 10:00 UTC |

Notes:

- **heartbeat — heartbeat ingest, end to end**: ` + "`genesis-load heartbeat --agents 5`" + `; second | run
- **longpoll — long-poll fan-out p99**: ` + "`genesis-load longpoll`" + `
` + mdEnd + "\n\nHand-written history stays.\n\n## Older figures\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("results.md (-want +got):\n%s", diff)
	}
}

// FuzzResultsFile: any results.md is read without panicking, and the rows
// it yields are written back and read again unchanged.
func FuzzResultsFile(f *testing.F) {
	f.Add("# Benchmark results\n\n" + mdBegin + "\n| heartbeat | m | 1 /s | b | 1.00× | g | **met** | d |\n\n- **heartbeat — m**: note\n" + mdEnd + "\nrest\n")
	f.Add("| a \\| b | c |\n- **x**: y")
	f.Fuzz(func(t *testing.T, doc string) {
		_, section, _ := splitSection(doc)
		for _, r := range parseRows(section) {
			cells := splitCells("| " + strings.Join([]string{mdEscape(r.scenario), mdEscape(r.measure), mdEscape(r.value), mdEscape(r.baseline),
				mdEscape(r.ratio), mdEscape(r.goal), mdEscape(r.verdict), mdEscape(r.date)}, " | ") + " |")
			if len(cells) != 8 || cells[0] != strings.TrimSpace(r.scenario) && !strings.Contains(r.scenario, "\n") {
				t.Fatalf("row %+v did not survive a round trip: %q", r, cells)
			}
		}
	})
}

// TestParseMetricsHistogram: a histogram as client_golang serves it reads
// back as the cumulative buckets histogramDelta expects.
func TestParseMetricsHistogram(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "genesis_manifest_delivery_seconds", Help: "h", Buckets: []float64{0.005, 0.1, 1}})
	reg.MustRegister(h)
	page := func() map[string]float64 {
		rec := httptest.NewRecorder()
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		m, err := parseMetrics(rec.Body.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	h.Observe(0.5)
	before := page()
	for _, v := range []float64{0.001, 0.05, 0.05, 2} {
		h.Observe(v)
	}
	after := page()
	if got := after[`genesis_manifest_delivery_seconds_bucket{le="+Inf"}`]; got != 5 {
		t.Errorf("+Inf bucket = %v, want 5 (page %v)", got, after)
	}
	want := []bucket{{0.005, 1}, {0.1, 3}, {1, 3}, {math.Inf(1), 4}}
	if diff := cmp.Diff(want, histogramDelta(before, after, "genesis_manifest_delivery_seconds"), cmp.AllowUnexported(bucket{})); diff != "" {
		t.Errorf("histogramDelta (-want +got):\n%s", diff)
	}
}
