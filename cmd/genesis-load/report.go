package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// figure is one measured value with its same-run baseline and goal.
type figure struct {
	// Measure names the figure; it is the row's key in bench/results.md.
	Measure string  `json:"measure"`
	Value   float64 `json:"value"`
	Unit    string  `json:"unit"`
	// Baseline describes what Value is compared with, measured in the same
	// run (BaselineValue, same unit), and Ratio is Value / BaselineValue.
	Baseline      string  `json:"baseline,omitempty"`
	BaselineValue float64 `json:"baseline_value,omitempty"`
	Ratio         float64 `json:"ratio,omitempty"`
	// Goal is the target in words; Verdict is "met", "not met" or "" (no
	// goal for this figure).
	Goal    string `json:"goal,omitempty"`
	Verdict string `json:"verdict,omitempty"`
	Note    string `json:"note,omitempty"`
}

// report is what a scenario prints.
type report struct {
	Scenario string `json:"scenario"`
	Agents   int    `json:"agents,omitempty"`
	// Command reproduces the run.
	Command string `json:"command"`
	// Counts are what was sent, answered and written; they must add up.
	Counts  map[string]int64 `json:"counts,omitempty"`
	Figures []figure         `json:"figures"`
	// Inconsistent lists counts that do not add up (the run fails).
	Inconsistent []string `json:"inconsistent,omitempty"`
}

func (r *report) add(f figure) {
	if f.BaselineValue != 0 && f.Ratio == 0 {
		f.Ratio = f.Value / f.BaselineValue
	}
	r.Figures = append(r.Figures, f)
}

// check records a failed consistency check.
func (r *report) check(ok bool, format string, args ...any) {
	if !ok {
		r.Inconsistent = append(r.Inconsistent, fmt.Sprintf(format, args...))
	}
}

// verdict says whether ok holds, as the results table spells it.
func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "not met"
}

func (r *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeTable(w io.Writer) {
	fmt.Fprintf(w, "scenario %s", r.Scenario)
	if r.Agents > 0 {
		fmt.Fprintf(w, ", %d agents", r.Agents)
	}
	fmt.Fprintf(w, "\n%s\n\n", r.Command)
	if len(r.Counts) > 0 {
		keys := make([]string, 0, len(r.Counts))
		for k := range r.Counts {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "  %-28s %d\n", k, r.Counts[k])
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "measure\tvalue\tbaseline (same run)\tratio\tgoal\tverdict")
	for _, f := range r.Figures {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", f.Measure, num(f.Value, f.Unit), baselineText(f), ratioText(f.Ratio), f.Goal, f.Verdict)
	}
	tw.Flush()
	for _, f := range r.Figures {
		if f.Note != "" {
			fmt.Fprintf(w, "\n%s: %s", f.Measure, f.Note)
		}
	}
	fmt.Fprintln(w)
	for _, s := range r.Inconsistent {
		fmt.Fprintf(w, "INCONSISTENT: %s\n", s)
	}
}

func baselineText(f figure) string {
	if f.Baseline == "" {
		return ""
	}
	if f.BaselineValue == 0 {
		return f.Baseline
	}
	return f.Baseline + ": " + num(f.BaselineValue, f.Unit)
}

func ratioText(r float64) string {
	if r == 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return ""
	}
	return strconv.FormatFloat(r, 'f', 2, 64) + "×"
}

// num prints v with a sensible precision and its unit.
func num(v float64, unit string) string {
	var s string
	switch a := math.Abs(v); {
	case a >= 10000:
		s = strconv.FormatFloat(math.Round(v), 'f', 0, 64)
		s = thousands(s)
	case a >= 100:
		s = strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 1:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	default:
		s = strconv.FormatFloat(v, 'g', 3, 64)
	}
	if unit == "" {
		return s
	}
	return s + " " + unit
}

// thousands puts commas in a run of digits.
func thousands(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// percentile is the q-quantile of sorted (nearest rank); 0 when empty.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// machine describes where a run happened, for bench/results.md.
type machine struct {
	CPU    string
	Cores  int
	Memory string
}

func machineInfo() machine {
	m := machine{CPU: "unknown CPU", Cores: runtime.NumCPU(), Memory: "unknown memory"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					m.Memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
				}
			}
		}
	}
	return m
}

// rssOf is process pid's resident set and its peak (VmRSS, VmHWM).
func rssOf(pid int) (rss, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return rss, peak
}

// cpuMark is the CPU time the reconciler (its process_cpu_seconds_total)
// and this process have used by a moment, to say what a run's CPUs did.
type cpuMark struct {
	at           time.Time
	server, self float64
}

func (f *fleet) cpuMark(ctx context.Context) cpuMark {
	c := cpuMark{at: time.Now()}
	if m, err := f.scrape(ctx); err == nil {
		c.server = m["process_cpu_seconds_total"]
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		c.self = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	return c
}

// cpuNote says how many cores the reconciler and the load generator kept
// busy between two marks, and the machine's load average.
func cpuNote(f *fleet, a, b cpuMark, byWrk bool) string {
	wall := b.at.Sub(a.at).Seconds()
	if wall <= 0 {
		return ""
	}
	load := ""
	if bs, err := os.ReadFile("/proc/loadavg"); err == nil {
		if fs := strings.Fields(string(bs)); len(fs) > 0 {
			load = ", 1-minute load average " + fs[0]
		}
	}
	if byWrk {
		return fmt.Sprintf("CPU over the run: reconciler %.2f cores of %d (Postgres, wrk and other users the rest%s)", (b.server-a.server)/wall, runtime.NumCPU(), load)
	}
	if f.serverOnly || !f.started {
		return fmt.Sprintf("CPU over the run: reconciler %.2f cores, load tool (agents) %.2f cores, of %d (Postgres and other users the rest%s)",
			(b.server-a.server)/wall, (b.self-a.self)/wall, runtime.NumCPU(), load)
	}
	return fmt.Sprintf("CPU over the run: reconciler and load tool together %.2f cores of %d%s", (b.self-a.self)/wall, runtime.NumCPU(), load)
}
