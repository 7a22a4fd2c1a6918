// Package loglimit bounds log lines that outside callers can cause (refused
// enrollments, throttled clients), so a flood of requests cannot flood the
// logs: per key, the first Burst lines of each Window are written, the rest
// only counted, and the first line after a window with uncounted lines is
// replaced by one summary saying how many were left out. Metrics keep
// counting every event; only the log is limited.
package loglimit

import (
	"sync"
	"time"
)

// Limiter decides which lines to write. The zero value is not usable; make
// one with New.
type Limiter struct {
	window time.Duration
	burst  int

	mu sync.Mutex
	by map[string]*count
}

type count struct {
	start              time.Time
	logged, suppressed int
}

// New makes a Limiter writing burst lines per key per window.
func New(window time.Duration, burst int) *Limiter {
	return &Limiter{window: window, burst: max(burst, 1), by: map[string]*count{}}
}

// Window is the limiter's window.
func (l *Limiter) Window() time.Duration { return l.window }

// Allow counts one line of key at now. It reports whether to write it and,
// when the window before held lines that were not written, how many (write
// a summary instead of the line then).
func (l *Limiter) Allow(key string, now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, ok := l.by[key]
	if !ok || now.Sub(c.start) >= l.window || now.Before(c.start) {
		prev := 0
		if ok {
			prev = c.suppressed
		}
		if len(l.by) >= maxKeys {
			clear(l.by)
		}
		l.by[key] = &count{start: now, logged: 1}
		return prev == 0, prev
	}
	if c.logged < l.burst {
		c.logged++
		return true, 0
	}
	c.suppressed++
	return false, 0
}

// maxKeys bounds the keys remembered; past it they are forgotten at once
// (callers use a few fixed keys).
const maxKeys = 1024
