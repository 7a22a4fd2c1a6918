package probe_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/agent/probe"
	"genesis.dev/fleet/fakes/dockersim"
	"genesis.dev/fleet/internal/pgserver/pgtest"
)

// TestMain: a Postgres server for the Postgres probe; the test binary is
// also the docker CLI emulator and its n8n containers.
func TestMain(m *testing.M) {
	if code, ok := dockersim.AsChild(); ok {
		os.Exit(code)
	}
	pgtest.Main(m)
}

// psql is the argv of the system's psql against url, reading SQL on stdin
// (what --postgres-probe is given on a droplet without compose).
func psql(t *testing.T, url string) []string {
	return []string{filepath.Join(pgtest.ClientBin(t), "psql"), "-X", "-tA", "-d", url}
}

// TestPostgresProbe: a real Postgres answers; a refused connection, a
// database that does not exist, a command that prints something else and
// one that hangs past the probe's deadline are failures whose detail says
// why and holds no connection string.
func TestPostgresProbe(t *testing.T) {
	url := pgtest.New(t)
	dead := "postgres://n8n:s3cret@127.0.0.1:1/n8n?sslmode=disable&connect_timeout=2"
	missing := strings.Replace(url, "/"+filepath.Base(strings.Split(url, "?")[0]), "/no_such_db", 1)
	for _, tc := range []struct {
		name    string
		argv    []string
		timeout time.Duration
		ok      bool
		detail  string
	}{
		{"answers", psql(t, url), 5 * time.Second, true, ""},
		{"connection refused", psql(t, dead), 5 * time.Second, false, "postgres query failed: exit status 2; stderr: psql: error: connection to server at \"127.0.0.1\", port 1 failed"},
		{"no such database", psql(t, missing), 5 * time.Second, false, `database "no_such_db" does not exist`},
		{"wrong answer", []string{"echo", "2"}, 5 * time.Second, false, `postgres answered "2" to SELECT 1, want "1"`},
		{"hangs", []string{"sleep", "30"}, 200 * time.Millisecond, false, "postgres did not answer SELECT 1 within"},
		{"no command", nil, time.Second, false, "postgres probe: no command"},
		{"not found", []string{"/nonexistent/psql"}, time.Second, false, "no such file or directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.timeout)
			defer cancel()
			start := time.Now()
			h := probe.Postgres{Argv: tc.argv}.Probe(ctx)
			if h.OK != tc.ok || !strings.Contains(h.Detail, tc.detail) || (tc.detail == "" && h.Detail != "") {
				t.Errorf("probe = %+v, want ok=%v and a detail with %q", h, tc.ok, tc.detail)
			}
			if strings.Contains(h.Detail, "s3cret") || strings.Contains(h.Detail, "postgres://") {
				t.Errorf("detail leaks the connection string: %q", h.Detail)
			}
			if tc.name == "hangs" && time.Since(start) > 10*time.Second {
				t.Errorf("the probe outlived its deadline: %s", time.Since(start))
			}
		})
	}
}
