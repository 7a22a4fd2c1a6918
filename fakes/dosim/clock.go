package dosim

import (
	"sync"
	"time"
)

// clock is the simulator's notion of time: a base clock (the wall clock
// unless Config.Now replaces it) shifted by an offset that Advance grows, and
// optionally frozen at one instant. Every timestamp the simulator writes and
// every lifecycle deadline it checks comes from here.
type clock struct {
	base func() time.Time

	mu     sync.Mutex
	offset time.Duration
	frozen bool
	at     time.Time // the frozen instant, when frozen
}

func newClock(base func() time.Time) *clock {
	if base == nil {
		base = time.Now
	}
	return &clock{base: base}
}

// Now returns the simulated time, truncated to microseconds so that values
// survive a JSON round trip of the state file unchanged.
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nowLocked()
}

func (c *clock) nowLocked() time.Time {
	if c.frozen {
		return c.at
	}
	return c.base().Add(c.offset).UTC().Truncate(time.Microsecond)
}

// Advance moves simulated time forward by d (frozen or not).
func (c *clock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if d < 0 {
		d = 0
	}
	if c.frozen {
		c.at = c.at.Add(d)
	}
	c.offset += d
	return c.nowLocked()
}

// Set moves simulated time to t; moving backwards is refused by clamping, so
// deadlines already passed stay passed.
func (c *clock) Set(t time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.nowLocked()
	if t.Before(now) {
		return now
	}
	d := t.Sub(now)
	if c.frozen {
		c.at = c.at.Add(d)
	}
	c.offset += d
	return c.nowLocked()
}

// Freeze stops simulated time at its current value (true) or lets it run
// again from where it stands (false).
func (c *clock) Freeze(on bool) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on == c.frozen {
		return c.nowLocked()
	}
	if on {
		c.at = c.nowLocked()
		c.frozen = true
		return c.at
	}
	// Resume from the frozen instant.
	c.offset = c.at.Sub(c.base())
	c.frozen = false
	return c.nowLocked()
}

func (c *clock) state() (time.Time, bool, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nowLocked(), c.frozen, c.offset
}

func (c *clock) setOffset(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = d
}
