package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// manifest304Goal: the 304 path keeps at least 80% of a bare handler's
// throughput (it serves pre-signed bytes from memory).
const manifest304Goal = 0.80

// bare304 is the baseline: a net/http handler that only writes a 304 with
// an ETag of the same length.
var bare304 = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header()["Etag"] = []string{`"0000000000000000000000000000000000000000000000000000000000000000"`}
	w.WriteHeader(http.StatusNotModified)
})

// wrkScript has wrk send each agent's conditional GET in turn; the file of
// "credential etag" lines is its argument.
const wrkScript = `local creds = {}
local i = 0
init = function(args)
  for line in io.lines(args[1]) do
    local c, e = line:match("^(%S+) (%S+)$")
    if c then creds[#creds + 1] = {c, e} end
  end
end
request = function()
  i = i % #creds + 1
  return wrk.format("GET", "/v1/manifest", {["Authorization"] = "Bearer " .. creds[i][1], ["If-None-Match"] = '"' .. creds[i][2] .. '"'})
end
`

// httpResult is one HTTP load measurement.
type httpResult struct {
	rps      float64
	p50, p99 time.Duration
	requests int64
	bad      int64 // responses other than 304, and socket errors
}

// http304Scenario compares conditional GETs of cached manifests through the
// real handler with a bare handler answering 304, both in this process and
// measured the same way (wrk, else the Go generator), alternating twice and
// keeping each side's best.
func http304Scenario(ctx context.Context, c config, f *fleet, log *slog.Logger) (*report, error) {
	dur := c.duration
	if dur == 0 {
		dur = 5 * time.Second
	}
	as, err := f.makeAgents(ctx, c.agents)
	if err != nil {
		return nil, err
	}
	if err := fetchAll(ctx, f, as, false); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "genesis-load-wrk-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var lines bytes.Buffer
	for _, a := range as {
		fmt.Fprintf(&lines, "%s %s\n", a.cred, a.etag)
	}
	credFile := filepath.Join(dir, "creds.txt")
	if err := os.WriteFile(credFile, lines.Bytes(), 0o600); err != nil {
		return nil, err
	}

	bareURL := strings.TrimRight(f.bareURL, "/") + "/v1/manifest"
	if f.bareURL == "" {
		// A running reconciler: the baseline runs in this process.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		bare := &http.Server{Handler: bare304, ReadHeaderTimeout: 10 * time.Second}
		go bare.Serve(ln)
		defer bare.Close()
		bareURL = "http://" + ln.Addr().String() + "/v1/manifest"
	}
	realURL := strings.TrimRight(f.url, "/") + "/v1/manifest"

	tool := "go"
	var measure func(url string) (httpResult, error)
	if path, err := exec.LookPath(c.wrk); c.wrk != "off" && err == nil {
		tool = "wrk"
		script := filepath.Join(dir, "manifest304.lua")
		if err := os.WriteFile(script, []byte(wrkScript), 0o600); err != nil {
			return nil, err
		}
		measure = func(url string) (httpResult, error) {
			return runWrk(ctx, path, script, credFile, url, c.connections, dur)
		}
	} else {
		log.Warn("wrk not found; using the Go load generator (it shares the CPUs with the server and saturates first)", "wrk", c.wrk)
		measure = func(url string) (httpResult, error) { return goLoad(ctx, f.http, url, as, c.connections, dur) }
	}
	const rounds = 3
	var runs [2][]httpResult
	var bad [2]int64
	for round := range rounds {
		for side, url := range []string{bareURL, realURL} {
			r, err := measure(url)
			if err != nil {
				return nil, err
			}
			log.Info("http measurement", "round", round, "target", []string{"bare", "manifest"}[side], "tool", tool, "rps", int(r.rps))
			bad[side] += r.bad
			runs[side] = append(runs[side], r)
		}
	}
	// Each side's median round by throughput.
	var best [2]httpResult
	var spread [2]string
	for side := range runs {
		slices.SortFunc(runs[side], func(a, b httpResult) int { return cmp.Compare(a.rps, b.rps) })
		best[side] = runs[side][rounds/2]
		spread[side] = fmt.Sprintf("%.0f–%.0f", runs[side][0].rps, runs[side][rounds-1].rps)
	}
	rep := &report{Scenario: "http304", Agents: c.agents,
		Command: fmt.Sprintf("genesis-load http304 --agents %d --connections %d --duration %s (load from %s)", c.agents, c.connections, dur, tool),
		Counts: map[string]int64{"manifest requests (median round)": best[1].requests, "bare requests (median round)": best[0].requests,
			"manifest answers other than 304 (all rounds)": bad[1], "bare answers other than 304 (all rounds)": bad[0]}}
	rep.check(bad[1] == 0, "%d manifest answers were not 304 (or failed)", bad[1])
	rep.check(bad[0] == 0, "%d bare answers were not 304 (or failed)", bad[0])
	ratio := best[1].rps / best[0].rps
	rep.add(figure{Measure: "manifest 304 throughput (" + tool + ")", Value: best[1].rps, Unit: "req/s",
		Baseline: "bare net/http handler answering 304", BaselineValue: best[0].rps,
		Goal: "≥ 80% of bare", Verdict: verdict(ratio >= manifest304Goal),
		Note: fmt.Sprintf("%d agents' credentials and ETags in turn over %d connections, %s per measurement, median of %d alternating rounds (manifest %s req/s, bare %s req/s), both servers in the reconciler's process; p50 %.2f ms vs %.2f ms bare, p99 %.2f ms vs %.2f ms bare; server and load generator share the CPUs",
			c.agents, c.connections, dur, rounds, spread[1], spread[0], ms(best[1].p50), ms(best[0].p50), ms(best[1].p99), ms(best[0].p99))})
	rep.add(figure{Measure: "manifest 304 latency p99 (" + tool + ")", Value: ms(best[1].p99), Unit: "ms", Baseline: "bare", BaselineValue: ms(best[0].p99)})
	return rep, nil
}

// runWrk runs wrk against url and reads its report.
func runWrk(ctx context.Context, wrk, script, credFile, url string, conns int, dur time.Duration) (httpResult, error) {
	threads := 2
	cmd := exec.CommandContext(ctx, wrk, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(max(conns, threads)), "-d", fmt.Sprintf("%ds", max(1, int(dur.Seconds()))),
		"--latency", "-s", script, url, "--", credFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return httpResult{}, fmt.Errorf("wrk: %w: %s", err, bytes.TrimSpace(out))
	}
	return parseWrk(out)
}

// parseWrk reads wrk's text report (outside input: fuzzed): Requests/sec,
// the 50% and 99% lines of --latency, the request count, and the
// non-2xx/3xx and socket error counts. wrk counts a 304 as 3xx, so any
// other answer (401, 5xx) shows as non-2xx/3xx.
func parseWrk(out []byte) (httpResult, error) {
	var r httpResult
	var haveRPS bool
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 2 && f[0] == "Requests/sec:":
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil || v < 0 {
				return r, fmt.Errorf("wrk: Requests/sec %q is not a number", f[1])
			}
			r.rps, haveRPS = v, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "99%"):
			d, err := wrkDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("wrk: latency %s: %w", f[0], err)
			}
			if f[0] == "50%" {
				r.p50 = d
			} else {
				r.p99 = d
			}
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: request count %q is not a number", f[0])
			}
			r.requests = n
		case len(f) == 5 && f[0] == "Non-2xx" && f[3] == "responses:":
			n, err := strconv.ParseInt(f[4], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: non-2xx count %q is not a number", f[4])
			}
			r.bad += n
		case len(f) > 2 && f[0] == "Socket" && f[1] == "errors:":
			for _, part := range strings.Split(strings.Join(f[2:], " "), ",") {
				kv := strings.Fields(part)
				if len(kv) != 2 {
					return r, fmt.Errorf("wrk: socket errors %q", part)
				}
				n, err := strconv.ParseInt(kv[1], 10, 64)
				if err != nil {
					return r, fmt.Errorf("wrk: socket errors %q", part)
				}
				r.bad += n
			}
		}
	}
	if !haveRPS {
		return r, errors.New("wrk: no Requests/sec line in its output")
	}
	return r, nil
}

// wrkDuration reads wrk's latency values: 580.00us, 1.23ms, 2.00s, 1.00m.
func wrkDuration(s string) (time.Duration, error) {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second}, {"m", time.Minute}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1e9 {
				return 0, fmt.Errorf("%q is not a duration", s)
			}
			return time.Duration(f * float64(u.unit)), nil
		}
	}
	return 0, fmt.Errorf("%q has no unit", s)
}

// goLoad is the fallback when wrk is missing: conns workers, each on its own
// keep-alive connection, send the agents' conditional GETs in turn for dur.
func goLoad(ctx context.Context, _ *http.Client, url string, as []*simAgent, conns int, dur time.Duration) (httpResult, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	var mu sync.Mutex
	var all []time.Duration
	var r httpResult
	end := time.Now().Add(dur)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			var bad int64
			for k := w; time.Now().Before(end) && ctx.Err() == nil; k++ {
				a := as[k%len(as)]
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				req.Header.Set("Authorization", "Bearer "+a.cred)
				req.Header.Set("If-None-Match", strconv.Quote(a.etag))
				t0 := time.Now()
				resp, err := hc.Do(req)
				if err != nil {
					bad++
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(t0))
				if resp.StatusCode != http.StatusNotModified {
					bad++
				}
			}
			mu.Lock()
			all = append(all, lat...)
			r.bad += bad
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(all)
	r.requests = int64(len(all))
	r.rps = float64(len(all)) / elapsed.Seconds()
	r.p50, r.p99 = percentile(all, 0.5), percentile(all, 0.99)
	return r, ctx.Err()
}
