package testkit

import (
	"net"
	"testing"
	"time"
)

// Poll is how WaitFor polls: every Every, for at most Within.
type Poll struct {
	Every  time.Duration
	Within time.Duration
}

// The polls the helpers use. The deadlines are generous bounds on real
// time (shared CI machines are slow); no test asserts how long anything
// took.
var (
	// Default suits processes and servers.
	Default = Poll{Every: 20 * time.Millisecond, Within: 90 * time.Second}
	// Fast suits goroutine hand-offs and latency figures.
	Fast = Poll{Every: 2 * time.Millisecond, Within: 90 * time.Second}
)

// Until polls cond until it holds, and fails tb, naming what, when Within
// passes first.
func (p Poll) Until(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(p.Within)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", p.Within, what)
		}
		time.Sleep(p.Every)
	}
}

// WaitFor polls cond with the Default poll until it holds.
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	Default.Until(tb, what, cond)
}

// WaitForFast polls cond with the Fast poll until it holds.
func WaitForFast(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	Fast.Until(tb, what, cond)
}

// FreeAddr returns a loopback address ("127.0.0.1:port") that was free a
// moment ago, for a server the test starts in another process.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	return freeTCPAddr(tb).String()
}

// FreePort returns a TCP port free on 127.0.0.1 a moment ago.
func FreePort(tb testing.TB) int {
	tb.Helper()
	return freeTCPAddr(tb).Port
}

func freeTCPAddr(tb testing.TB) *net.TCPAddr {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr)
}
