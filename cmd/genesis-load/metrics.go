package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// maxMetricsBody bounds a scraped /metrics page.
const maxMetricsBody = 8 << 20

// scrape reads the reconciler's /metrics (Prometheus text format) into
// series → value, keyed as the page spells them: name{label="v",...}.
func (f *fleet) scrape(ctx context.Context) (map[string]float64, error) {
	return f.scrapeURL(ctx, f.url)
}

// scrapeURL is scrape of the replica at base (scale runs several).
func (f *fleet) scrapeURL(ctx context.Context, base string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := f.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBody+1))
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	if len(body) > maxMetricsBody {
		return nil, fmt.Errorf("scrape metrics: body over %d bytes", maxMetricsBody)
	}
	return parseMetrics(body)
}

// parseMetrics reads the samples of a Prometheus text exposition (outside
// input: fuzzed) with Prometheus's own parser (expfmt). A sample is keyed
// by its series as the text format spells it, labels in the page's order
// and a histogram's le or a summary's quantile last:
// name{label="v",...}. NaN samples are left out. Errors name the line.
func parseMetrics(body []byte) (map[string]float64, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	out := map[string]float64{}
	add := func(name string, labels []*dto.LabelPair, extra string, v float64) {
		if math.IsNaN(v) {
			return
		}
		var b strings.Builder
		b.WriteString(name)
		if len(labels) > 0 || extra != "" {
			b.WriteByte('{')
			for i, l := range labels {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(l.GetName() + `="` + labelEscaper.Replace(l.GetValue()) + `"`)
			}
			if extra != "" {
				if len(labels) > 0 {
					b.WriteByte(',')
				}
				b.WriteString(extra)
			}
			b.WriteByte('}')
		}
		out[b.String()] = v
	}
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			ls := m.GetLabel()
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				add(name, ls, "", m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, ls, "", m.GetGauge().GetValue())
			case dto.MetricType_SUMMARY:
				for _, q := range m.GetSummary().GetQuantile() {
					add(name, ls, `quantile="`+formatFloat(q.GetQuantile())+`"`, q.GetValue())
				}
				add(name+"_sum", ls, "", m.GetSummary().GetSampleSum())
				add(name+"_count", ls, "", float64(m.GetSummary().GetSampleCount()))
			case dto.MetricType_HISTOGRAM:
				for _, bk := range m.GetHistogram().GetBucket() {
					add(name+"_bucket", ls, `le="`+formatFloat(bk.GetUpperBound())+`"`, float64(bk.GetCumulativeCount()))
				}
				add(name+"_sum", ls, "", m.GetHistogram().GetSampleSum())
				add(name+"_count", ls, "", float64(m.GetHistogram().GetSampleCount()))
			default:
				add(name, ls, "", m.GetUntyped().GetValue())
			}
		}
	}
	return out, nil
}

// labelEscaper escapes a label value as the text format does.
var labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)

// formatFloat prints a bucket bound or quantile as the text format does.
func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// heartbeatCounts are genesis_heartbeats_total by result.
type heartbeatCounts struct {
	queued, written, dropped, replay, queueFull, badRequest, unauthorized, forbidden int64
}

func heartbeatsOf(m map[string]float64) heartbeatCounts {
	get := func(result string) int64 {
		return int64(m[`genesis_heartbeats_total{result="`+result+`"}`])
	}
	return heartbeatCounts{queued: get("queued"), written: get("written"), dropped: get("dropped"), replay: get("replay"),
		queueFull: get("queue_full"), badRequest: get("bad_request"), unauthorized: get("unauthorized"), forbidden: get("forbidden")}
}

func (a heartbeatCounts) minus(b heartbeatCounts) heartbeatCounts {
	return heartbeatCounts{a.queued - b.queued, a.written - b.written, a.dropped - b.dropped, a.replay - b.replay,
		a.queueFull - b.queueFull, a.badRequest - b.badRequest, a.unauthorized - b.unauthorized, a.forbidden - b.forbidden}
}

// bucket is a cumulative histogram bucket: observations ≤ le.
type bucket struct {
	le    float64
	count float64
}

// histogramDelta is histogram name's cumulative buckets observed between
// two scrapes, by le (+Inf last).
func histogramDelta(before, after map[string]float64, name string) []bucket {
	prefix := name + `_bucket{le="`
	var out []bucket
	for series, v := range after {
		rest, ok := strings.CutPrefix(series, prefix)
		if !ok {
			continue
		}
		le, err := strconv.ParseFloat(strings.TrimSuffix(rest, `"}`), 64)
		if err != nil {
			continue
		}
		out = append(out, bucket{le: le, count: v - before[series]})
	}
	slices.SortFunc(out, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	return out
}

// quantileBound is the upper bound of the bucket that holds quantile q of
// the observations (+Inf when it is the last; 0 with none).
func quantileBound(bs []bucket, q float64) float64 {
	if len(bs) == 0 || bs[len(bs)-1].count == 0 {
		return 0
	}
	want := q * bs[len(bs)-1].count
	for _, b := range bs {
		if b.count >= want {
			return b.le
		}
	}
	return math.Inf(1)
}

// countUpTo is how many observations were ≤ le (le must be a bucket bound).
func countUpTo(bs []bucket, le float64) float64 {
	for _, b := range bs {
		if b.le == le {
			return b.count
		}
	}
	return 0
}

// boundString prints a histogram bucket bound.
func boundString(le float64) string {
	if math.IsInf(le, 1) {
		return "+Inf"
	}
	return (time.Duration(le * float64(time.Second))).String()
}

// quantileTotal is how many observations a histogram delta holds.
func quantileTotal(bs []bucket) float64 {
	if len(bs) == 0 {
		return 0
	}
	return bs[len(bs)-1].count
}
