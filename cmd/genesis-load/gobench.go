package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var procsSuffix = regexp.MustCompile(`-[0-9]+$`)

// parseBench reads the result lines ("BenchmarkName/sub-2  N  v1 unit1
// v2 unit2 ...", keyed by the name without "Benchmark" and the -GOMAXPROCS
// suffix) of `go test -bench` output (outside
// input: fuzzed); every other line is ignored. A result line that does not
// parse is an error naming its line number.
func parseBench(r io.Reader) (map[string]map[string]float64, error) {
	samples := map[string]map[string][]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue // "BenchmarkX ... --- FAIL" and the like are not results
		}
		if len(f)%2 != 0 {
			return nil, fmt.Errorf("bench line %d: values and units do not pair up", n)
		}
		name := procsSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")
		if samples[name] == nil {
			samples[name] = map[string][]float64{}
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("bench line %d: %q is not a number", n, f[i])
			}
			samples[name][f[i+1]] = append(samples[name][f[i+1]], v)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	out := map[string]map[string]float64{}
	for name, units := range samples {
		out[name] = map[string]float64{}
		for u, vs := range units {
			slices.Sort(vs)
			out[name][u] = vs[len(vs)/2] // median of -count runs
		}
	}
	return out, nil
}

func goBenchFile(path string, log *slog.Logger) (*report, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(os.Stdin, 64<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	b, err := parseBench(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	rep := goBenchReport(b)
	if len(rep.Figures) == 0 {
		log.Warn("no known benchmark pair in the input")
	}
	return rep, nil
}

// goBenchReport turns the repository's benchmark pairs into figures with
// their same-run baselines.
func goBenchReport(b map[string]map[string]float64) *report {
	rep := &report{Scenario: "go test -bench", Command: "see make bench"}
	get := func(name, unit string) (float64, bool) {
		v, ok := b[name][unit]
		return v, ok
	}
	if m, ok := get("Manifest304/http", "ns/op"); ok {
		if bare, ok := get("Bare304/http", "ns/op"); ok && m > 0 && bare > 0 {
			r := bare / m
			rep.add(figure{Measure: "manifest 304 over loopback (Go client, in-process server)", Value: 1e9 / m, Unit: "req/s",
				Baseline: "bare net/http 304", BaselineValue: 1e9 / bare, Ratio: r, Goal: "≥ 80% of bare", Verdict: verdict(r >= manifest304Goal),
				Note: "`go test -run '^$' -bench 'Manifest304/http|Bare304/http' -count 3 ./reconciler/agentapi/` (median of 3)"})
		}
	}
	if hb, ok := get("HeartbeatIngest", "heartbeats/s"); ok {
		if raw, ok := get("HeartbeatRawUpsert", "heartbeats/s"); ok && raw > 0 {
			rep.add(figure{Measure: "heartbeat ingest, handler → Postgres (in process)", Value: hb, Unit: "/s",
				Baseline: "the same rows through the batch statement alone", BaselineValue: raw,
				Goal: "≥ 10,000/s; stretch 16,667/s", Verdict: verdict(hb >= heartbeatGoal),
				Note: "`go test -run '^$' -bench 'HeartbeatIngest|HeartbeatRawUpsert' -benchtime 90000x ./reconciler/agentapi/`"})
		}
	}
	for _, n := range []string{"15000", "100000"} {
		if cold, ok := get("ColdLoad/tenants="+n, "ns/op"); ok {
			if raw, ok := get("RawYAMLDecode/tenants="+n, "ns/op"); ok && raw > 0 {
				rep.add(figure{Measure: "cold load of " + thousands(n) + " tenants (git, decode, validate, index)", Value: cold / 1e9, Unit: "s",
					Baseline: "raw yaml.v3 decode of the same files", BaselineValue: raw / 1e9,
					Note: "`go test -run '^$' -bench 'ColdLoad/tenants=" + n + "|RawYAMLDecode/tenants=" + n + "' -benchtime 1x ./tenants/`"})
			}
		}
	}
	if inc, ok := get("ComputeIncremental", "ms/plan"); ok {
		full, _ := get("ComputeConverged/tenants=100000", "ms/plan")
		rep.add(figure{Measure: "incremental plan at 100,000 tenants (plan.Compute, one tenant changed)", Value: inc, Unit: "ms",
			Baseline: "full plan of 100,000 converged tenants", BaselineValue: full,
			Goal: "≤ 50 ms", Verdict: verdict(inc <= 50),
			Note: "`go test -run '^$' -bench Compute -benchtime 10x ./reconciler/plan/`; the planner only: the git sync around it (tenants BenchmarkIncrementalOneTenant) is not included"})
	}
	if heap, ok := get("SnapshotHeap/tenants=100000", "B/tenant"); ok {
		file, _ := get("SnapshotHeap/tenants=100000", "file-B/tenant")
		rep.add(figure{Measure: "a replica's decoded fleet at 100,000 tenants: live heap per tenant", Value: heap, Unit: "B",
			Baseline: "the tenant's file (production-shaped: a sealed credential, a domain, a workflow)", BaselineValue: file,
			Note: fmt.Sprintf("`go test -run '^$' -bench SnapshotHeap -benchtime 1x ./tenants/`: a Source synced once, after a collection; %.0f MiB for the whole fleet, held by every replica", heap*100_000/(1<<20))})
	}
	if added, ok := get("SnapshotHeap/edit=every-file/tenants=100000", "added-B/tenant"); ok {
		unshared, _ := get("SnapshotHeap/edit=every-file/tenants=100000", "unshared-B/tenant")
		rep.add(figure{Measure: "a commit editing every tenant file at 100,000 (a rollout label each): heap the new Snapshot adds while the previous one is still held, per tenant", Value: added, Unit: "B",
			Baseline: "the same with every edited file decoded afresh (nothing shared with its previous version)", BaselineValue: unshared,
			Note: fmt.Sprintf("`go test -run '^$' -bench SnapshotHeap -benchtime 1x ./tenants/`: both Snapshots alive, after a collection; %.0f MiB above one decoded fleet at the peak of such a sync (%.0f MiB without sharing)", added*100_000/(1<<20), unshared*100_000/(1<<20))})
	}
	if heap, ok := get("ParkedConnMemory/tls-h2", "heap-B/conn"); ok {
		stack, _ := get("ParkedConnMemory/tls-h2", "stack-B/conn")
		plainHeap, _ := get("ParkedConnMemory/http1", "heap-B/conn")
		plainStack, _ := get("ParkedConnMemory/http1", "stack-B/conn")
		tlsHeap, _ := get("ParkedConnMemory/tls-http1", "heap-B/conn")
		tlsStack, _ := get("ParkedConnMemory/tls-http1", "stack-B/conn")
		h2, plain := (heap+stack)/1024, (plainHeap+plainStack)/1024
		rep.add(figure{Measure: "a parked agent connection in a replica's server over TLS and HTTP/2 (as droplets connect): live heap + goroutine stacks", Value: h2, Unit: "KiB",
			Baseline: "the same over plain HTTP/1.1 (as genesis-load scale parks its agents)", BaselineValue: plain,
			Note: fmt.Sprintf("`go test -run '^$' -bench ParkedConnMemory -benchtime 1x ./reconciler/service/`: 2,000 requests held, each on its own connection, in a server process of their own (newServer, the replica's timeouts, its TLS set-up from internal/certreload; a handler that only waits); TLS+HTTP/2 %.1f + %.1f KiB (3 goroutines), TLS+HTTP/1.1 %.1f + %.1f KiB, plain HTTP/1.1 %.1f + %.1f KiB (2 goroutines); 100,000 agents over TLS+HTTP/2: %.1f GiB in net/http and crypto/tls alone, whatever the number of replicas",
				heap/1024, stack/1024, tlsHeap/1024, tlsStack/1024, plainHeap/1024, plainStack/1024, h2*100_000/(1<<20))})
	}
	if inc, ok := get("IncrementalOneTenant/unique=incremental", "ns/op"); ok {
		whole, _ := get("IncrementalOneTenant/unique=whole-set", "ns/op")
		rep.add(figure{Measure: "sync after a one-tenant commit at 100,000 tenants (git, one parse, cross-tenant rules, snapshot)", Value: inc / 1e6, Unit: "ms",
			Baseline: "the same sync with the whole-set uniqueness check (before issue 23)", BaselineValue: whole / 1e6,
			Note: "`go test -run '^$' -bench IncrementalOneTenant ./tenants/` (make bench-scale: -benchtime 3x): the cross-tenant rules re-check only the changed tenant and those sharing an id or a domain with it"})
		if plan, ok := get("ComputeIncremental", "ms/plan"); ok {
			total := inc/1e6 + plan
			rep.add(figure{Measure: "one-tenant commit at 100,000 tenants: sync + plan", Value: total, Unit: "ms",
				Baseline: "the same with the whole-set uniqueness check", BaselineValue: whole/1e6 + plan,
				Goal: "≤ 50 ms", Verdict: verdict(total <= 50),
				Note: fmt.Sprintf("sync %.0f ms (tenants BenchmarkIncrementalOneTenant/unique=incremental) + plan %.1f ms (plan BenchmarkComputeIncremental), measured apart in the same run", inc/1e6, plan)})
		}
	}
	for _, boot := range []string{"0s", "1m0s"} {
		name := "Provision1000/boot=" + boot
		rr, ok := get(name, "rate_ratio")
		if !ok {
			continue
		}
		n429, _ := get(name, "429s")
		rep.add(figure{Measure: "provisioning 1,000 droplets, boot " + boot + ": achieved ÷ rate-limit bound", Value: rr, Unit: "",
			Baseline: "DigitalOcean's rate-limit bound (250/min per account)", BaselineValue: 1, Ratio: rr,
			Goal: "zero 429s at ≥ 90% of the bound", Verdict: verdict(rr >= 0.9 && n429 == 0),
			Note: fmt.Sprintf("%v 429s; `go test -run '^$' -bench 'Provision1000/boot=%s' -benchtime 1x ./reconciler/cloud/`", n429, boot)})
	}
	if x, ok := get("Rollout15000", "x-bound"); ok {
		sim, _ := get("Rollout15000", "sim-min")
		bound, _ := get("Rollout15000", "bound-min")
		step, _ := get("Rollout15000", "ms/step")
		rep.add(figure{Measure: "rollout of a fleet-wide change to 15,000 tenants (1% canary, 10%, rest; bake 5 min; 30 s per droplet; simulated time)", Value: sim, Unit: "min",
			Baseline: "the policy's lower bound (rollout.LowerBound)", BaselineValue: bound, Ratio: x,
			Goal: "≤ 1.2× the bound", Verdict: verdict(x <= 1.2),
			Note: fmt.Sprintf("%.0f ms of real time per step over the fleet; `go test -run '^$' -bench Rollout15000 -benchtime 1x ./reconciler/rollouts/`", step)})
		affected, _ := get("Rollout15000", "affected")
		budget, _ := get("Rollout15000", "canary-budget")
		pause, _ := get("Rollout15000", "sim-s-to-pause")
		rep.add(figure{Measure: "a version failing on every droplet: droplets that got it before the pause", Value: affected, Unit: "droplets",
			Baseline: "the canary's failure budget + 1 (a breach needs one more failure than the budget)", BaselineValue: budget + 1,
			Ratio: affected / (budget + 1), Goal: "≤ budget + 1", Verdict: verdict(affected <= budget+1),
			Note: fmt.Sprintf("paused %.0f s (simulated) after the change, droplets failing 30 s after their manifest; same benchmark", pause)})
	}
	if p99, ok := get("CommitToApplied", "p99-ms"); ok {
		render, _ := get("CommitToApplied", "render-s")
		p50, _ := get("CommitToApplied", "p50-ms")
		rep.add(figure{Measure: "sweep → 1,000 long-polling agents verified, p99 (in process)", Value: p99, Unit: "ms",
			Baseline: "the same sweep with nobody waiting", BaselineValue: render * 1000,
			Goal: "p99 ≤ 2 s", Verdict: verdict(p99 <= 2000),
			Note: fmt.Sprintf("p50 %.0f ms; `go test -run '^$' -bench CommitToApplied -benchtime 1x ./reconciler/agentapi/`", p50)})
	}
	return rep
}
