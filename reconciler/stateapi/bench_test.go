package stateapi

import (
	"strconv"
	"strings"
	"testing"
)

// BenchmarkPatchHostile measures the work a PATCH costs before its tenant is
// looked up (decode, field names, field list) for hostile 1 MiB bodies and
// reports it as a multiple of a normal patch's (metric x-normal).
func BenchmarkPatchHostile(b *testing.B) {
	prelookup := func(body []byte) {
		if p, err := object(body, "a JSON merge patch object"); err == nil {
			_ = quoteList(p.Fields(), maxListed)
		}
	}
	normal := []byte(`{"spec":{"state":"hibernated","n8n":{"version":"1.124.0"}}}`)
	var base float64 // ns per normal patch, from the first sub-benchmark
	const levels, size = 1000, DefaultMaxBody
	for _, tt := range []struct{ name, body string }{
		{"normal", string(normal)},
		{"deep", strings.Repeat(`{"a":`, levels) + `"` + strings.Repeat("x", size-levels*6-16) + `"` + strings.Repeat("}", levels)},
		{"wide", wide(size)},
	} {
		b.Run(tt.name, func(b *testing.B) {
			body := []byte(tt.body)
			for b.Loop() {
				prelookup(body)
			}
			ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			if tt.name == "normal" {
				base = ns
			}
			b.ReportMetric(ns/base, "x-normal")
		})
	}
}

// wide is a patch of about size bytes of distinct keys.
func wide(size int) string {
	var b strings.Builder
	b.WriteString(`{"spec":{"k0":1`)
	for i := 1; b.Len() < size-32; i++ {
		b.WriteString(`,"k` + strconv.Itoa(i) + `":1`)
	}
	b.WriteString("}}")
	return b.String()
}
