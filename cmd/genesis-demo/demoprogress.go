package main

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"genesis.dev/fleet/api"
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
func progressLine(f api.Fleet, beats int, now time.Time) string {
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
// label (e.g. result="written") from a Prometheus text exposition, each
// sample line read by Prometheus's own parser (expfmt). Lines it cannot
// read are skipped, so one bad line does not hide the rest; found is false
// when no series matched.
func counterValue(exposition, name, label string) (v float64, found bool) {
	for line := range strings.Lines(exposition) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		families, err := p.TextToMetricFamilies(strings.NewReader(strings.TrimSuffix(line, "\n") + "\n"))
		if err != nil {
			continue
		}
		for _, m := range families[name].GetMetric() {
			if label != "" && !slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName()+"="+strconv.Quote(l.GetValue()) == label
			}) {
				continue
			}
			x := m.GetUntyped().GetValue()
			if math.IsNaN(x) || math.IsInf(x, 0) {
				continue
			}
			v += x
			found = true
		}
	}
	return v, found
}
