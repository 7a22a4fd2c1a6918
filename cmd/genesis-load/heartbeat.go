package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	fleetagent "genesis.dev/fleet/agent"
	"genesis.dev/fleet/reconciler/store"
)

// Heartbeat goals (issue 10): 600,000 agents at one heartbeat a minute, and
// on toward 1,000,000.
const (
	heartbeatGoal    = 10_000.0
	heartbeatStretch = 1_000_000.0 / 60
)

// heartbeatScenario enrolls c.agents agents, has each heartbeat every
// 60s/c.speedup for c.duration, waits until the reconciler has written
// every queued heartbeat, and compares the end-to-end rate with a raw
// batched upsert of the same rows.
func heartbeatScenario(ctx context.Context, c config, f *fleet, log *slog.Logger) (*report, error) {
	dur := c.duration
	if dur == 0 {
		dur = 20 * time.Second
	}
	as, err := f.makeAgents(ctx, c.agents)
	if err != nil {
		return nil, err
	}
	interval := time.Duration(float64(time.Minute) / c.speedup)
	offered := float64(c.agents) / interval.Seconds()
	before, err := f.scrape(ctx)
	if err != nil {
		return nil, err
	}
	log.Info("heartbeats starting", "agents", c.agents, "interval", interval.String(), "offered_per_s", int(offered), "duration", dur.String())

	var sent, accepted, rejected, netErrs, late atomic.Int64
	lat := make([][]time.Duration, len(as))
	lastOK := make([]int64, len(as)) // each agent's highest accepted seq
	sem := make(chan struct{}, c.connections)
	cl := f.client()
	cpu0 := f.cpuMark(ctx)
	runCtx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for k, a := range as {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Phases spread evenly over one interval, as a fleet's agents
			// started at different times are.
			next := start.Add(time.Duration(int64(interval) * int64(k) / int64(len(as))))
			timer := time.NewTimer(0)
			defer timer.Stop()
			for {
				timer.Reset(time.Until(next))
				select {
				case <-runCtx.Done():
					return
				case <-timer.C:
				}
				select {
				case <-runCtx.Done():
					return
				case sem <- struct{}{}:
				}
				hb := a.heartbeat(time.Now())
				t0 := time.Now()
				_, err := cl.Heartbeat(ctx, a.cred, hb)
				lat[k] = append(lat[k], time.Since(t0))
				<-sem
				sent.Add(1)
				var se *fleetagent.StatusError
				switch {
				case err == nil:
					accepted.Add(1)
					lastOK[k] = hb.Seq
				case errors.As(err, &se):
					rejected.Add(1)
				default:
					netErrs.Add(1)
				}
				next = next.Add(interval)
				if now := time.Now(); now.Sub(next) > interval {
					late.Add(1) // the generator fell a whole interval behind
					next = now
				}
			}
		}()
	}
	wg.Wait()
	sendEnd := time.Now()

	// End to end: until the batcher has written everything queued.
	got, drained, err := drainHeartbeats(ctx, f, before)
	if err != nil {
		return nil, err
	}
	cpu1 := f.cpuMark(ctx)
	elapsed := drained.Sub(start)
	rate := float64(got.written) / elapsed.Seconds()

	rep := &report{Scenario: "heartbeat", Agents: c.agents,
		Command: fmt.Sprintf("genesis-load heartbeat --agents %d --speedup %g --duration %s --connections %d --credentials %d --server %s",
			c.agents, c.speedup, dur, c.connections, c.credentials, c.server),
		Counts: map[string]int64{"sent": sent.Load(), "accepted (202)": accepted.Load(), "rejected (4xx/5xx)": rejected.Load(),
			"network errors": netErrs.Load(), "generator fell behind": late.Load(), "server queued": got.queued, "server replays": got.replay,
			"server queue full (503)": got.queueFull, "server written": got.written, "server dropped": got.dropped}}
	rep.check(sent.Load() == accepted.Load()+rejected.Load()+netErrs.Load(), "sent %d != accepted %d + rejected %d + errors %d",
		sent.Load(), accepted.Load(), rejected.Load(), netErrs.Load())
	rep.check(got.written+got.dropped == got.queued, "server wrote %d + dropped %d of %d queued", got.written, got.dropped, got.queued)
	rep.check(got.dropped == 0, "%d heartbeats dropped by the batcher", got.dropped)
	if f.started {
		// Nobody else talks to the in-process reconciler.
		rep.check(accepted.Load() == got.queued+got.replay, "accepted %d != queued %d + replays %d", accepted.Load(), got.queued, got.replay)
	}
	var wantSeq int64
	for _, s := range lastOK {
		wantSeq += s
	}
	var dbSeq int64
	if err := f.st.Pool().QueryRow(ctx, `SELECT coalesce(sum(last_heartbeat_seq), 0)::bigint FROM agents WHERE workspace LIKE 'load-%'`).Scan(&dbSeq); err != nil {
		return nil, err
	}
	rep.Counts["sum of recorded seqs"] = dbSeq
	rep.check(dbSeq == wantSeq, "Postgres records a sum of last heartbeat seqs %d, the agents' accepted seqs sum to %d", dbSeq, wantSeq)

	all := slices.Concat(lat...)
	slices.Sort(all)

	raw, rawRows, err := rawUpsert(ctx, f, as, got.written)
	if err != nil {
		return nil, err
	}
	rep.add(figure{Measure: "heartbeat ingest, end to end", Value: rate, Unit: "/s",
		Baseline: fmt.Sprintf("raw batched INSERT … ON CONFLICT of the same rows through pgx (%d rows)", rawRows), BaselineValue: raw,
		Goal: "≥ 10,000/s (600k agents at 60 s); stretch 16,667/s (1M)", Verdict: offeredVerdict(rate, offered),
		Note: fmt.Sprintf("%d agents offered %.0f/s for %s; %d written in %.2fs (last send to last write %.0f ms); an agent fell a whole interval behind %d times; %s%s",
			c.agents, offered, dur, got.written, elapsed.Seconds(), ms(drained.Sub(sendEnd)), late.Load(), cpuNote(f, cpu0, cpu1, false), stretchNote(rate))})
	rep.add(figure{Measure: "heartbeat request latency p50", Value: ms(percentile(all, 0.50)), Unit: "ms"})
	rep.add(figure{Measure: "heartbeat request latency p99", Value: ms(percentile(all, 0.99)), Unit: "ms"})

	// The HTTP ceiling, with wrk: the Go agents above share the CPUs and
	// saturate first.
	path, err := exec.LookPath(c.wrk)
	if c.wrk == "off" || err != nil {
		log.Warn("wrk not found: no heartbeat ceiling measured", "wrk", c.wrk)
		return rep, nil
	}
	cpu2 := f.cpuMark(ctx)
	wrate, wlag, wres, wgot, err := wrkHeartbeats(ctx, f, path, as, c.connections, dur)
	if err != nil {
		return nil, err
	}
	cpu3 := f.cpuMark(ctx)
	rep.Counts["wrk: sent"] = wres.requests
	rep.Counts["wrk: answers other than 2xx/3xx"] = wres.bad
	rep.Counts["wrk: server queued"] = wgot.queued
	rep.Counts["wrk: server written"] = wgot.written
	rep.Counts["wrk: server queue full (503)"] = wgot.queueFull
	rep.Counts["wrk: server replays"] = wgot.replay
	rep.check(wgot.written+wgot.dropped == wgot.queued, "wrk: server wrote %d + dropped %d of %d queued", wgot.written, wgot.dropped, wgot.queued)
	rep.check(wgot.dropped == 0, "wrk: %d heartbeats dropped by the batcher", wgot.dropped)
	if f.started {
		rep.check(wres.requests-wres.bad <= wgot.queued+wgot.replay, "wrk: %d answered 202 but the server queued %d and ignored %d replays",
			wres.requests-wres.bad, wgot.queued, wgot.replay)
	}
	rep.add(figure{Measure: "heartbeat ingest, end to end (wrk)", Value: wrate, Unit: "/s",
		Baseline: "raw batched INSERT … ON CONFLICT (as above)", BaselineValue: raw,
		Goal: "≥ 10,000/s (600k agents at 60 s); stretch 16,667/s (1M)", Verdict: verdict(wrate >= heartbeatGoal),
		Note: fmt.Sprintf("wrk posts the same agents' heartbeats (each its growing seq) over at most %d connections for %s; %d written (first request → last write; wrk's end → last write %.0f ms); %d answers other than 202 (503: queue full); %d overtaken heartbeats ignored as replays; request p50 %.2f ms, p99 %.2f ms; %s%s",
			c.connections, dur, wgot.written, ms(wlag), wres.bad, wgot.replay, ms(wres.p50), ms(wres.p99), cpuNote(f, cpu2, cpu3, f.serverOnly), stretchNote(wrate))})
	return rep, nil
}

// offeredVerdict judges the ingest rate; a run that never offered the
// goal's rate shows nothing either way.
func offeredVerdict(rate, offered float64) string {
	if rate < heartbeatGoal && offered < heartbeatGoal {
		return "not shown (offered below the goal)"
	}
	return verdict(rate >= heartbeatGoal)
}

func stretchNote(rate float64) string {
	if rate >= heartbeatStretch {
		return "; the 1M-agent stretch (16,667/s) is met too"
	}
	return ""
}

// rawBatch is the reconciler's batch size (agentapi.DefaultBatchSize).
const rawBatch = 1000

// rawUpsert is the baseline: it writes rows heartbeats of agents as (at
// most 200,000, at least one per agent) straight into fleet_status
// (store.RawHeartbeatUpsert: without HTTP, decoding, authentication, the
// replay check or the agents table) in batches of 1,000, each batch keeping
// the newest row of a workspace as the reconciler's batcher does, and
// returns rows/s.
func rawUpsert(ctx context.Context, f *fleet, as []*simAgent, rows int64) (float64, int, error) {
	n := int(min(max(rows, int64(len(as))), 200_000))
	type row struct {
		w, v    string
		d       int64
		at      time.Time
		body    string
		applied int64
	}
	all := make([]row, n)
	for k := range all {
		a := as[k%len(as)]
		hb := a.heartbeat(time.Now())
		body, err := json.Marshal(hb)
		if err != nil {
			return 0, 0, err
		}
		all[k] = row{w: a.ws, v: hb.AgentVersion, d: int64(dropletBase + a.i), at: hb.SentAt, body: string(body), applied: hb.AppliedVersion}
	}
	start := time.Now()
	for lo := 0; lo < n; lo += rawBatch {
		batch := all[lo:min(lo+rawBatch, n)]
		seen := make(map[string]int, len(batch))
		var ws, vs, bodies []string
		var ds, applied []int64
		var ats []time.Time
		var oks []bool
		for _, r := range batch {
			if i, ok := seen[r.w]; ok {
				ats[i], bodies[i], applied[i] = r.at, r.body, r.applied // newer row of the same workspace
				continue
			}
			seen[r.w] = len(ws)
			ws, vs, ds, ats, bodies, applied, oks = append(ws, r.w), append(vs, r.v), append(ds, r.d), append(ats, r.at), append(bodies, r.body), append(applied, r.applied), append(oks, true)
		}
		r := store.RawHeartbeats{Workspaces: ws, Droplets: ds, At: ats, Bodies: bodies, Applied: applied, AgentVersions: vs, OK: oks}
		if err := f.st.RawHeartbeatUpsert(ctx, r); err != nil {
			return 0, 0, fmt.Errorf("raw upsert: %w", err)
		}
	}
	return float64(n) / time.Since(start).Seconds(), n, nil
}

// wrkHeartbeatScript has wrk POST heartbeats: thread t of n sends for the
// agents whose line number is t modulo n, in turn, each with its own
// growing seq (so none is a replay). Its argument is a file of
// "credential workspace droplet next-seq applied" lines.
const wrkHeartbeatScript = `local nthreads = 0
local threads = {}
setup = function(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  threads[#threads + 1] = thread
end
init = function(args)
  agents = {}
  local n = 0
  for line in io.lines(args[1]) do
    local c, w, d, s, a = line:match("^(%S+) (%S+) (%S+) (%d+) (%d+)$")
    if c then
      if n % tonumber(args[2]) == tid then
        agents[#agents + 1] = {cred = c, ws = w, droplet = d, seq = tonumber(s), applied = a}
      end
      n = n + 1
    end
  end
  i = 0
end
request = function()
  i = i % #agents + 1
  local a = agents[i]
  local body = string.format('{"workspace":"%s","droplet":"%s","seq":%d,"sent_at":"2026-01-01T00:00:00Z","applied_version":%s,' ..
    '"components":{"n8n":{"ok":true},"caddy":{"ok":true},"postgres":{"ok":true}},"memory_used_bytes":536870912,' ..
    '"memory_total_bytes":1073741824,"disk_used_bytes":8589934592,"disk_total_bytes":34359738368,"uptime_seconds":3600,"agent_version":"wrk"}',
    a.ws, a.droplet, a.seq, a.applied)
  a.seq = a.seq + 1
  return wrk.format("POST", "/v1/heartbeat", {["Authorization"] = "Bearer " .. a.cred, ["Content-Type"] = "application/json"}, body)
end
`

// wrkHeartbeats is the heartbeat HTTP ceiling: wrk posts the agents'
// heartbeats as fast as the reconciler takes them for dur, then the run
// waits until everything queued is written. It returns the written rate
// and wrk's result.
func wrkHeartbeats(ctx context.Context, f *fleet, wrk string, as []*simAgent, conns int, dur time.Duration) (float64, time.Duration, httpResult, heartbeatCounts, error) {
	dir, err := os.MkdirTemp("", "genesis-load-wrk-")
	if err != nil {
		return 0, 0, httpResult{}, heartbeatCounts{}, err
	}
	defer os.RemoveAll(dir)
	var lines bytes.Buffer
	for _, a := range as {
		fmt.Fprintf(&lines, "%s %s %s %d %d\n", a.cred, a.ws, a.droplet, a.seq+1, a.applied)
	}
	agentsFile, script := filepath.Join(dir, "agents.txt"), filepath.Join(dir, "heartbeat.lua")
	if err := os.WriteFile(agentsFile, lines.Bytes(), 0o600); err != nil {
		return 0, 0, httpResult{}, heartbeatCounts{}, err
	}
	if err := os.WriteFile(script, []byte(wrkHeartbeatScript), 0o600); err != nil {
		return 0, 0, httpResult{}, heartbeatCounts{}, err
	}
	before, err := f.scrape(ctx)
	if err != nil {
		return 0, 0, httpResult{}, heartbeatCounts{}, err
	}
	const threads = 2
	// An agent's next heartbeat may overtake its previous one on another
	// connection (the server then ignores it as a replay, and the rate
	// counts only what it writes): keep several agents per connection.
	conns = max(threads, min(conns, len(as)/4))
	start := time.Now()
	cmd := exec.CommandContext(ctx, wrk, "-t", strconv.Itoa(threads), "-c", strconv.Itoa(max(conns, threads)), "-d", fmt.Sprintf("%ds", max(1, int(dur.Seconds()))),
		"--latency", "-s", script, strings.TrimRight(f.url, "/")+"/v1/heartbeat", "--", agentsFile, strconv.Itoa(threads))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, httpResult{}, heartbeatCounts{}, fmt.Errorf("wrk: %w: %s", err, bytes.TrimSpace(out))
	}
	res, err := parseWrk(out)
	if err != nil {
		return 0, 0, httpResult{}, heartbeatCounts{}, err
	}
	wrkEnd := time.Now()
	got, drained, err := drainHeartbeats(ctx, f, before)
	if err != nil {
		return 0, 0, httpResult{}, heartbeatCounts{}, err
	}
	return float64(got.written) / drained.Sub(start).Seconds(), drained.Sub(wrkEnd), res, got, nil
}

// drainHeartbeats waits (at most 2 minutes) until the reconciler has
// written or dropped every heartbeat queued since before, and returns the
// counts since before and when that was seen.
func drainHeartbeats(ctx context.Context, f *fleet, before map[string]float64) (heartbeatCounts, time.Time, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		m, err := f.scrape(ctx)
		if err != nil {
			return heartbeatCounts{}, time.Time{}, err
		}
		got := heartbeatsOf(m).minus(heartbeatsOf(before))
		if got.written+got.dropped >= got.queued || time.Now().After(deadline) {
			return got, time.Now(), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
}
