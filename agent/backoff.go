package agent

import (
	"context"
	"math/rand/v2"
	"time"
)

// jitter spreads d by ±frac.
func jitter(d time.Duration, frac float64) time.Duration {
	return time.Duration(float64(d) * (1 - frac + 2*frac*rand.Float64()))
}

// sleep waits d or until ctx is done; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Backoff is the wait an agent keeps between failed requests: capped
// exponential, the nth wait drawn from [d/2, d] where d = min·2ⁿ, capped
// at max. Tools that must retry as a fleet of agents does use it too:
// genesis-load's agents, so that a reconnect storm meets the same
// spreading as on droplets.
type Backoff struct {
	min, max time.Duration
	n        int
}

// NewBackoff starts at min and doubles up to max (the agent's defaults:
// 1s and 1m).
func NewBackoff(min, max time.Duration) *Backoff {
	return &Backoff{min: min, max: max}
}

// Next is the wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	d := b.min
	for i := 0; i < b.n && d < b.max; i++ {
		d *= 2
	}
	d = min(d, b.max)
	if d < b.max {
		b.n++
	}
	return d/2 + rand.N(d/2+1)
}

// Wait waits Next or until ctx ends; it reports whether the wait passed.
func (b *Backoff) Wait(ctx context.Context) bool { return sleep(ctx, b.Next()) }

// Reset starts again from min, after a success.
func (b *Backoff) Reset() { b.n = 0 }
