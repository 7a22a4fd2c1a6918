package main

import (
	"bufio"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// lifecycleOrder is the order the progress line lists states in (seed 2.3);
// states it does not know come after, by name.
func lifecycleOrder() []string {
	return append([]string{string(lifecycle.NotCreated)}, append(lifecycle.Strings(lifecycle.All()), string(lifecycle.Orphaned))...)
}

// progressLine summarizes the fleet in one line: tenants per lifecycle
// state, how many droplets run the newest manifest issued to them, and the
// heartbeats of the last minute (beats, and agents heard from).
func progressLine(f fleetDoc, beats int, now time.Time) string {
	counts := map[string]int{}
	issued, applied, heard := 0, 0, 0
	for _, t := range f.Tenants {
		counts[t.Lifecycle]++
		if t.ManifestIssued > 0 {
			issued++
			if t.ManifestApplied >= t.ManifestIssued {
				applied++
			}
		}
		if !t.LastHeartbeat.IsZero() && now.Sub(t.LastHeartbeat) <= time.Minute {
			heard++
		}
	}
	var states []string
	for _, s := range lifecycleOrder() {
		if counts[s] > 0 {
			states = append(states, fmt.Sprintf("%d %s", counts[s], s))
			delete(counts, s)
		}
	}
	var rest []string
	for s := range counts {
		rest = append(rest, s)
	}
	slices.Sort(rest)
	for _, s := range rest {
		name := s
		if name == "" {
			name = "unknown"
		}
		states = append(states, fmt.Sprintf("%d %s", counts[s], name))
	}
	if len(states) == 0 {
		states = []string{"no tenants yet"}
	}
	return fmt.Sprintf("fleet: %s | manifests applied %d/%d | heartbeats last minute: %d from %d agents",
		strings.Join(states, ", "), applied, issued, beats, heard)
}

// beatWindow turns samples of the reconciler's heartbeat counter into the
// number of heartbeats of the last minute.
type beatWindow struct {
	samples []beatSample // oldest first
}

type beatSample struct {
	at time.Time
	n  float64
}

// add records the counter's value at a time and returns the heartbeats
// counted over the last minute (over the samples so far, when they span
// less). A counter that went down (a restarted reconciler) starts over.
func (w *beatWindow) add(at time.Time, n float64) int {
	if len(w.samples) > 0 && n < w.samples[len(w.samples)-1].n {
		w.samples = nil
	}
	w.samples = append(w.samples, beatSample{at, n})
	// Keep the newest sample at or before a minute ago as the baseline.
	cut := 0
	for i, s := range w.samples {
		if !s.at.After(at.Add(-time.Minute)) {
			cut = i
		}
	}
	w.samples = w.samples[cut:]
	return int(math.Round(n - w.samples[0].n))
}

// counterValue reads the sum of a counter's series whose labels include
// label (e.g. result="written") from a Prometheus text exposition. Lines
// it cannot read are skipped; found is false when no series matched.
func counterValue(exposition, name, label string) (v float64, found bool) {
	sc := bufio.NewScanner(strings.NewReader(exposition))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		var labels string
		if rest[0] == '{' {
			end := strings.IndexByte(rest, '}')
			if end < 0 {
				continue
			}
			labels, rest = rest[1:end], rest[end+1:]
		}
		if label != "" && !slices.Contains(strings.Split(labels, ","), label) {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			continue
		}
		x, err := strconv.ParseFloat(fields[0], 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			continue
		}
		v += x
		found = true
	}
	return v, found
}
