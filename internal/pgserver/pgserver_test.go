package pgserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

func TestStartStop(t *testing.T) {
	ctx := t.Context()
	start := time.Now()
	s, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster started in %v (%s)", time.Since(start), s.bin)
	defer s.Stop()

	dir := s.Dir()
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Fatalf("no cluster in %s: %v", dir, err)
	}

	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, name := range []string{"listen_addresses", "fsync", "synchronous_commit", "full_page_writes", "max_connections", "server_encoding"} {
		var v string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
			t.Fatal(err)
		}
		got[name] = v
	}
	conn.Close(ctx)
	want := map[string]string{
		"listen_addresses":   "127.0.0.1",
		"fsync":              "off",
		"synchronous_commit": "off",
		"full_page_writes":   "off",
		"max_connections":    "200",
		"server_encoding":    "UTF8",
	}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("settings (-got +want):\n%s", diff)
	}

	if err := s.CreateDatabase(ctx, "Mixed Case"); err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, s.URL("Mixed Case"))
	if err != nil {
		t.Fatalf("connect to the new database: %v", err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if db != "Mixed Case" {
		t.Errorf("current_database() = %q, want %q", db, "Mixed Case")
	}

	// Restart: a session is cut, the port and the data stay.
	held, err := pgx.Connect(ctx, s.URL("Mixed Case"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.Exec(ctx, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	port := s.Port()
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := held.Ping(ctx); err == nil {
		t.Error("a session from before Restart still answers")
	}
	held.Close(ctx)
	conn, err = pgx.Connect(ctx, s.URL("Mixed Case"))
	if err != nil {
		t.Fatalf("connect after Restart: %v", err)
	}
	var x int
	if err := conn.QueryRow(ctx, "SELECT x FROM kept").Scan(&x); err != nil || x != 7 || s.Port() != port {
		t.Errorf("after Restart: x %d (err %v), port %d → %d; want 7 on the same port", x, err, port, s.Port())
	}
	conn.Close(ctx)
	if err := s.CreateDatabase(ctx, "Mixed Case"); err == nil {
		t.Error("creating a database twice succeeded")
	}

	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Stop (stat: %v)", dir, err)
	}
	if conn, err := pgx.Connect(ctx, s.URL("postgres")); err == nil {
		conn.Close(ctx)
		t.Error("server still accepts connections after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestRunDev runs the `make db` cluster twice on one directory: the URL is
// printed, the server stops when ctx is done, and the data survives.
func TestRunDev(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	if os.Geteuid() == 0 {
		// t.TempDir's folders are closed to the postgres user.
		for d := filepath.Dir(dir); d != os.TempDir(); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	session := func(t *testing.T, f func(ctx context.Context, conn *pgx.Conn)) {
		t.Helper()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		r, w := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			errc <- RunDev(ctx, w, dir)
			w.Close()
		}()
		line, err := bufio.NewReader(r).ReadString('\n')
		if err != nil {
			t.Fatalf("read RunDev output: %v (RunDev: %v)", err, <-errc)
		}
		go io.Copy(io.Discard, r)
		u, ok := strings.CutPrefix(strings.TrimSpace(line), "DATABASE_URL=")
		if !ok {
			t.Fatalf("RunDev printed %q, want DATABASE_URL=...", line)
		}
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		f(ctx, conn)
		conn.Close(ctx)
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("RunDev: %v", err)
		}
		if conn, err := pgx.Connect(context.Background(), u); err == nil {
			conn.Close(context.Background())
			t.Error("server still accepts connections after RunDev returned")
		}
	}
	session(t, func(ctx context.Context, conn *pgx.Conn) {
		if _, err := conn.Exec(ctx, `CREATE TABLE kept (v text); INSERT INTO kept VALUES ('hello')`); err != nil {
			t.Fatal(err)
		}
	})
	session(t, func(ctx context.Context, conn *pgx.Conn) {
		var v string
		if err := conn.QueryRow(ctx, `SELECT v FROM kept`).Scan(&v); err != nil {
			t.Fatalf("data from the first run: %v", err)
		}
		if v != "hello" {
			t.Errorf("kept value = %q, want hello", v)
		}
	})
	if _, err := os.Stat(filepath.Join(dir, "data", "PG_VERSION")); err != nil {
		t.Errorf("the data directory was not kept: %v", err)
	}
}

// TestReapStale checks that a temporary cluster directory whose owner has
// exited is removed, and one whose owner lives is kept.
func TestReapStale(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := cmd.Process.Pid
	mk := func(owner string) string {
		dir, err := os.MkdirTemp("", tempPrefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		if err := os.WriteFile(filepath.Join(dir, "owner"), []byte(owner), 0o644); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	dead := mk(ownerID(deadPID))
	live := mk(ownerID(os.Getpid()))
	foreign := mk(strconv.Itoa(deadPID) + " pid:[1]") // another pid namespace

	reapStale(t.Context(), &Server{uid: -1, gid: -1})

	got := map[string]bool{}
	for name, dir := range map[string]string{"dead": dead, "live": live, "foreign": foreign} {
		_, err := os.Stat(dir)
		got[name] = err == nil
	}
	want := map[string]bool{"dead": false, "live": true, "foreign": true}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("kept after reaping (-got +want):\n%s", diff)
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"15", "15", 0},
		{"9.6", "15", -1},
		{"16", "15", 1},
		{"10", "9.6", 1},
		{"15.2", "15", 1},
	}
	for _, tt := range tests {
		t.Run(tt.a+"_vs_"+tt.b, func(t *testing.T) {
			if got := compareVersions(tt.a, tt.b); got != tt.want {
				t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
			}
		})
	}
}
