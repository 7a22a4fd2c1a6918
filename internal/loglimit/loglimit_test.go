package loglimit

import (
	"testing"
	"time"
)

func TestAllow(t *testing.T) {
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	l := New(time.Minute, 3)
	logged := 0
	for range 10 {
		if ok, n := l.Allow("a", t0); ok {
			logged++
		} else if n != 0 {
			t.Fatalf("summary %d inside the window", n)
		}
	}
	if logged != 3 {
		t.Errorf("logged %d of 10, want 3", logged)
	}
	// Another key has its own budget.
	if ok, _ := l.Allow("b", t0); !ok {
		t.Error("key b not logged")
	}
	// The next window starts with the summary of the 7 left out.
	if ok, n := l.Allow("a", t0.Add(time.Minute)); ok || n != 7 {
		t.Errorf("after the window: %v, %d; want false, 7", ok, n)
	}
	if ok, _ := l.Allow("a", t0.Add(time.Minute+time.Second)); !ok {
		t.Error("second line of the new window not logged")
	}
	// A window without left-out lines ends silently.
	if ok, n := l.Allow("b", t0.Add(2*time.Minute)); !ok || n != 0 {
		t.Errorf("quiet window: %v, %d; want true, 0", ok, n)
	}
	// A clock going backwards starts a new window instead of stalling.
	if ok, _ := l.Allow("b", t0); !ok {
		t.Error("backwards clock: not logged")
	}
}
