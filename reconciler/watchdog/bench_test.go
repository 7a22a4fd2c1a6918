package watchdog

import (
	"fmt"
	"sort"
	"testing"
	"time"
)

// benchFleet is n running tenants: most healthy, some silent or mid-ladder.
func benchFleet(n int) []Row {
	rows := make([]Row, n)
	for i := range rows {
		r := row(fmt.Sprintf("ws-%07d", (i*7919)%n), Healthy, time.Duration(i%20)*time.Minute)
		switch i % 20 {
		case 16, 17:
			r.Lifecycle = Critical
		case 18, 19:
			r.Lifecycle, r.Step, r.StepAt = Rebooting, StepReboot, t0.Add(-time.Duration(i%13)*time.Minute)
		}
		rows[i] = r
	}
	return rows
}

// BenchmarkEvaluate judges a fleet of 100,000 tenants. Report it as a ratio
// to BenchmarkEvaluateBaseline, which only copies and sorts the same rows
// (work Evaluate cannot avoid).
func BenchmarkEvaluate(b *testing.B) {
	rows := benchFleet(100_000)
	b.ReportAllocs()
	for b.Loop() {
		Evaluate(rows, policy, t0)
	}
}

func BenchmarkEvaluateBaseline(b *testing.B) {
	rows := benchFleet(100_000)
	b.ReportAllocs()
	for b.Loop() {
		c := append([]Row(nil), rows...)
		sort.Slice(c, func(i, j int) bool { return c[i].Workspace < c[j].Workspace })
	}
}
