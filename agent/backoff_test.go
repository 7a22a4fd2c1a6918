package agent

import (
	"context"
	"testing"
	"time"
)

// TestBackoff: the nth wait lies in [d/2, d] with d = min·2ⁿ capped at
// max; it stays at the cap; Reset starts again from min.
func TestBackoff(t *testing.T) {
	b := NewBackoff(time.Second, 10*time.Second)
	for round := range 2 {
		for n, d := range []time.Duration{1, 2, 4, 8, 10, 10, 10} {
			d *= time.Second
			if got := b.Next(); got < d/2 || got > d {
				t.Errorf("round %d, wait %d: %s, want within [%s, %s]", round, n, got, d/2, d)
			}
		}
		b.Reset()
	}
	// The jitter spreads the waits: a fleet retrying together does not
	// come back together.
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[NewBackoff(time.Second, time.Minute).Next()] = true
	}
	if len(seen) < 2 {
		t.Errorf("20 first waits were all %v, want them spread over [0.5s, 1s]", seen)
	}
	// Wait gives up when its context ends, without waiting the full time.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if NewBackoff(time.Hour, time.Hour).Wait(ctx) {
		t.Error("Wait on an ended context reported the wait as passed")
	}
}
