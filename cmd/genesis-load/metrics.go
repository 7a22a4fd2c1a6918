package main

import (
	"bufio"
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
)

// maxMetricsBody bounds a scraped /metrics page.
const maxMetricsBody = 8 << 20

// scrape reads the reconciler's /metrics (Prometheus text format) into
// series → value, keyed as the page spells them: name{label="v",...}.
func (f *fleet) scrape(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(f.url, "/")+"/metrics", nil)
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
// input: fuzzed). Comments and blank lines are skipped; a sample line is
// "series value [timestamp]". Errors name the line.
func parseMetrics(body []byte) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		series, rest := line, ""
		if i := strings.IndexByte(line, '{'); i >= 0 {
			j := strings.LastIndexByte(line, '}')
			if j < i {
				return nil, fmt.Errorf("metrics line %d: unterminated label set", n)
			}
			series, rest = line[:j+1], line[j+1:]
		} else if k := strings.IndexAny(line, " \t"); k >= 0 {
			series, rest = line[:k], line[k:]
		} else {
			return nil, fmt.Errorf("metrics line %d: no value", n)
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 || len(fields) > 2 {
			return nil, fmt.Errorf("metrics line %d: want a value and an optional timestamp", n)
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: value %q is not a number", n, fields[0])
		}
		if math.IsNaN(v) {
			continue
		}
		out[series] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
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
