package service

import (
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"golang.org/x/net/netutil"

	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/reconciler/agentapi"
)

// The HTTP server's connection hygiene (deploy/README.md, "Connection
// budget"): every connection is bounded in time whatever its client does,
// and the number of connections is bounded below the open-file limit so a
// flood of them cannot starve git and Postgres of file descriptors.
const (
	// DefaultReadHeaderTimeout bounds a request's headers, and a new
	// connection that sends nothing.
	DefaultReadHeaderTimeout = 10 * time.Second
	// DefaultReadTimeout bounds a whole request, body included: a slowly
	// dripped body is cut off. Bodies are small (heartbeats, enrollments,
	// tenant changes).
	DefaultReadTimeout = 30 * time.Second
	// DefaultWriteTimeout bounds a response; it must exceed the longest
	// manifest long-poll (agentapi.MaxWait).
	DefaultWriteTimeout = agentapi.MaxWait + 30*time.Second
	// DefaultIdleTimeout closes keep-alive connections idle this long.
	DefaultIdleTimeout = 90 * time.Second
	// maxHeaderBytes bounds a request's headers.
	maxHeaderBytes = 64 << 10
	// fdReserve are the open files kept for everything but HTTP clients:
	// Postgres connections, git packs, the state repository's watcher, logs.
	fdReserve = 256
	// minConnections is the floor of the default connection limit.
	minConnections = 64
)

// ServerTimeouts are the --http-* flags.
type ServerTimeouts struct {
	ReadHeader, Read, Write, Idle time.Duration
	MaxConns                      int
}

// Check refuses timeouts that would cut the protocol's own long-poll.
func (s ServerTimeouts) Check() error {
	switch {
	case s.ReadHeader <= 0 || s.Read <= 0 || s.Write <= 0 || s.Idle <= 0:
		return cliexit.Usage("--http-*-timeout: every timeout must be positive")
	case s.Write <= agentapi.MaxWait:
		return cliexit.Usage("--http-write-timeout %s must exceed the longest manifest long-poll (%s)", s.Write, agentapi.MaxWait)
	case s.MaxConns < 0:
		return cliexit.Usage("--max-connections must not be negative")
	}
	return nil
}

// DefaultMaxConnections leaves fdReserve of the process's open-file limit
// for everything but HTTP clients.
func DefaultMaxConnections() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<30 {
		return 0 // unknown or unlimited: no limit
	}
	return max(int(rl.Cur)-fdReserve, minConnections)
}

// newServer is the reconciler's HTTP server for h with the timeouts t.
func newServer(h http.Handler, t ServerTimeouts) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// limitListener bounds ln to n open connections (0: unbounded): past it,
// new connections wait in the kernel's backlog instead of using a file.
func limitListener(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return netutil.LimitListener(ln, n)
}

// describe is the server's limits for the start log line.
func (s ServerTimeouts) describe() string {
	conns := "unbounded"
	if s.MaxConns > 0 {
		conns = fmt.Sprint(s.MaxConns)
	}
	return fmt.Sprintf("read_header=%s read=%s write=%s idle=%s max_connections=%s", s.ReadHeader, s.Read, s.Write, s.Idle, conns)
}
