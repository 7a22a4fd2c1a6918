package dosim

import (
	"math"
	"sort"
	"time"
)

// window is one token's sliding-window record: the times of the requests it
// made in the last hour, oldest first.
type window struct {
	times []time.Time
}

// rateResult is what a request learns from the limiter.
type rateResult struct {
	allowed    bool
	limit      int       // RateLimit-Limit
	remaining  int       // RateLimit-Remaining
	reset      time.Time // RateLimit-Reset
	retryAfter time.Duration
}

// take records a request at now if both windows have room.
func (w *window) take(now time.Time, perMinute, perHour int) rateResult {
	hourAgo := now.Add(-time.Hour)
	i := sort.Search(len(w.times), func(i int) bool { return w.times[i].After(hourAgo) })
	if i > 0 {
		w.times = append(w.times[:0], w.times[i:]...)
	}
	minAgo := now.Add(-time.Minute)
	firstInMinute := sort.Search(len(w.times), func(i int) bool { return w.times[i].After(minAgo) })
	inMinute := len(w.times) - firstInMinute

	limit := perHour
	if limit < 0 {
		limit = math.MaxInt32
	}
	res := rateResult{limit: limit}
	switch {
	case perHour >= 0 && len(w.times) >= perHour:
		// The request that frees a slot is the one perHour places back.
		res.retryAfter = w.times[len(w.times)-perHour].Add(time.Hour).Sub(now)
	case perMinute >= 0 && inMinute >= perMinute:
		res.retryAfter = w.times[len(w.times)-perMinute].Add(time.Minute).Sub(now)
	default:
		res.allowed = true
		w.times = append(w.times, now)
	}
	res.remaining = max(limit-len(w.times), 0)
	if len(w.times) > 0 {
		res.reset = w.times[0].Add(time.Hour)
	} else {
		res.reset = now
	}
	if res.retryAfter < 0 {
		res.retryAfter = 0
	}
	return res
}

// peek reports the window's headers without recording a request.
func (w *window) peek(now time.Time, perHour int) rateResult {
	limit := perHour
	if limit < 0 {
		limit = math.MaxInt32
	}
	res := rateResult{allowed: true, limit: limit, reset: now}
	if w == nil {
		res.remaining = limit
		return res
	}
	hourAgo := now.Add(-time.Hour)
	i := sort.Search(len(w.times), func(i int) bool { return w.times[i].After(hourAgo) })
	n := len(w.times) - i
	res.remaining = max(limit-n, 0)
	if n > 0 {
		res.reset = w.times[i].Add(time.Hour)
	}
	return res
}
