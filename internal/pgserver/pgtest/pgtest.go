// Package pgtest gives every test its own empty PostgreSQL database on a
// real server.
//
// A test binary calls Main from TestMain. When DATABASE_URL is set, that
// server is used (its user must be allowed to create databases); otherwise
// Main starts one throwaway cluster with package pgserver for the whole
// binary and stops it after the tests. Each call to New creates a fresh
// database named after the test, returns its URL, and drops it (forcibly
// closing leftover connections) when the test ends, so tests may run in
// parallel without seeing each other's rows.
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		url := pgtest.New(t)
//		...
//	}
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/internal/pgserver"
)

// adminURL is the server on which New creates databases. It is the one
// piece of process-wide state in the harness, and it exists for tests only:
// TestMain (Main) is the only code that runs before every test of a binary
// and has no other way to hand the server to them. Main writes it before
// m.Run; tests only read it.
var adminURL string

// Main runs the tests of m against a Postgres server and exits with their
// status. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(Run(m))
}

// Run is Main without the exit: it returns the tests' exit code, so a
// TestMain can clean up its own fixtures before exiting.
func Run(m *testing.M) int {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		adminURL = u
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	srv, err := pgserver.Start(ctx, pgserver.Options{})
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: start postgres: %v\n", err)
		return 1
	}
	adminURL = srv.URL("postgres")

	// Stop the cluster on an interrupt too; other abrupt exits (a -timeout
	// panic) leave it to pgserver's reaping of stale clusters.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-sig:
			srv.Stop()
			os.Exit(1)
		case <-done:
		}
	}()

	code := m.Run()
	signal.Stop(sig)
	if err := srv.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// New creates an empty database for t and returns its connection URL. The
// database is dropped when t ends.
func New(t testing.TB) string {
	t.Helper()
	if adminURL == "" {
		t.Fatal("pgtest: no server; call pgtest.Main(m) from TestMain")
	}
	name := dbName(t.Name())
	if err := adminExec(t.Context(), "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := adminExec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return withDatabase(adminURL, name)
}

// adminExec runs one statement on the admin connection.
func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// dbName makes a database name from a test name: lowercase letters, digits
// and underscores, at most 63 bytes, with a random suffix.
func dbName(test string) string {
	var b strings.Builder
	b.WriteString("t_")
	for _, r := range strings.ToLower(test) {
		if b.Len() >= 40 {
			break
		}
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	var suffix [6]byte
	rand.Read(suffix[:])
	return b.String() + "_" + hex.EncodeToString(suffix[:])
}

// withDatabase returns the connection string base with its database
// replaced by name, for both URL and keyword/value forms.
func withDatabase(base, name string) string {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return base + " dbname=" + name // keyword/value: the last setting wins
	}
	u.Path, u.RawPath = "/"+name, ""
	return u.String()
}
