package upgradetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"genesis.dev/fleet/agent/caddy"
	"genesis.dev/fleet/agent/converge"
	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/internal/pgserver"
	"genesis.dev/fleet/internal/pgserver/pgtest"
)

// pwStack is a droplet's stack as the secret rotation sees it: its own
// Postgres cluster that checks the role n8n's password (SCRAM over TCP,
// like the stack's postgres service for n8n's container), a compose file
// whose n8n takes the password from the project's .env, the n8n emulator
// run through the docker CLI emulator, and a converger.
type pwStack struct {
	t       *testing.T
	srv     *pgserver.Server
	dir     string // the compose project: compose.yaml and .env
	state   string // the agent's state directory
	rt      *converge.Compose
	client  *n8n.Client
	conv    *converge.Converger
	db      *converge.DBPassword
	initial string // the .env's first password
}

// sqlArgv is psql on the stack's database as the cluster's superuser,
// reading SQL on stdin, stopping at the first error.
func (s *pwStack) sqlArgv() []string {
	return []string{filepath.Join(pgtest.ClientBin(s.t), "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", s.srv.URL("n8n")}
}

func newPWStack(t *testing.T) *pwStack {
	t.Helper()
	ctx := t.Context()
	srv, err := pgserver.Start(ctx, pgserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	// The role n8n logs in with its password over TCP (the cluster's
	// superuser stays trusted: it is the SQL command's, like n8n on the
	// container's socket).
	hba := filepath.Join(srv.Dir(), "data", "pg_hba.conf")
	old, err := os.ReadFile(hba)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hba, append([]byte("host all n8n 127.0.0.1/32 scram-sha-256\n"), old...), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &pwStack{t: t, srv: srv, dir: t.TempDir(), initial: "0ld" + strconv.FormatInt(time.Now().UnixNano(), 16)}
	admin, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{`SELECT pg_reload_conf()`, `CREATE ROLE n8n LOGIN PASSWORD '` + s.initial + `'`, `CREATE DATABASE n8n OWNER n8n`} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	admin.Close(ctx)

	port := freePort(t)
	compose := fmt.Sprintf(`name: genesis
services:
  n8n:
    image: docker.n8n.io/n8nio/n8n:${N8N_VERSION:-1.123.81}
    environment:
      N8N_PORT: %d
      N8N_LISTEN_ADDRESS: 127.0.0.1
      N8N_HOST: ${N8N_HOST:?set N8N_HOST in .env}
      DB_TYPE: postgresdb
      DB_POSTGRESDB_HOST: 127.0.0.1
      DB_POSTGRESDB_PORT: %d
      DB_POSTGRESDB_DATABASE: n8n
      DB_POSTGRESDB_USER: n8n
      DB_POSTGRESDB_PASSWORD: ${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}
`, port, srv.Port())
	file := filepath.Join(s.dir, "compose.yaml")
	if err := os.WriteFile(file, []byte(compose), 0o600); err != nil {
		t.Fatal(err)
	}
	// As cloud-init writes it.
	if err := os.WriteFile(filepath.Join(s.dir, ".env"), []byte("POSTGRES_PASSWORD="+s.initial+"\nN8N_HOST=203.0.113.7.sslip.io\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.state = filepath.Join(s.dir, "agent")
	if err := os.MkdirAll(s.state, 0o700); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	engine := []string{"DOCKERSIM_TEST_AS=docker", "DOCKERSIM_STATE=" + filepath.Join(s.dir, "engine"), "DOCKERSIM_N8N_BIN=" + exe}
	if s.client, err = n8n.New("http://127.0.0.1:"+strconv.Itoa(port), n8n.Options{PollInterval: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	s.rt = &converge.Compose{File: file, Project: "genesis", Dir: s.state, Docker: exe, Ready: s.client.WaitReady, ReadyTimeout: 5 * time.Second,
		Exec: func(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
			cmd := exec.CommandContext(ctx, name, args...)
			cmd.Env = append(append(os.Environ(), engine...), env...)
			return cmd.CombinedOutput()
		}}
	t.Cleanup(func() { _ = s.rt.Stop(context.Background()) })
	s.db = &converge.DBPassword{Dir: s.state, EnvFile: filepath.Join(s.dir, ".env"), SQL: s.sqlArgv(), Recreate: s.rt.Recreate}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("null"))
		}
	}))
	t.Cleanup(ts.Close)
	s.conv, err = converge.New(converge.Config{Dir: s.state, N8N: s.client, Caddy: caddy.NewClient(strings.TrimPrefix(ts.URL, "http://"), caddy.ClientOptions{}),
		Ask: caddy.NewAsk(nil), CaddyConfig: caddy.Config{AskURL: "http://127.0.0.1:9180/ask"}, Runtime: s.rt, DBPassword: s.db, ReadyTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.rt.SwitchTo(ctx, "1.123.81"); err != nil {
		t.Fatal(err)
	}
	if err := s.rt.Commit(ctx, "1.123.81"); err != nil {
		t.Fatal(err)
	}
	return s
}

// login tries the role n8n's password over TCP: nil when Postgres takes it.
func (s *pwStack) login(password string) error {
	u, err := url.Parse(s.srv.URL("n8n"))
	if err != nil {
		s.t.Fatal(err)
	}
	u.User = url.UserPassword("n8n", password)
	conn, err := pgx.Connect(s.t.Context(), u.String())
	if err != nil {
		return err
	}
	return conn.Close(s.t.Context())
}

// refused: Postgres refused password (28P01 invalid_password).
func (s *pwStack) refused(password string) bool {
	var pe *pgconn.PgError
	return errors.As(s.login(password), &pe) && pe.Code == "28P01"
}

// envPassword is the .env's POSTGRES_PASSWORD; it checks the other line is
// kept and the file stays 0600.
func (s *pwStack) envPassword() string {
	s.t.Helper()
	path := filepath.Join(s.dir, ".env")
	data, err := os.ReadFile(path)
	if err != nil {
		s.t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		s.t.Errorf(".env mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	if !strings.Contains(string(data), "\nN8N_HOST=203.0.113.7.sslip.io\n") && !strings.HasPrefix(string(data), "N8N_HOST=203.0.113.7.sslip.io\n") {
		s.t.Errorf(".env lost N8N_HOST:\n%s", data)
	}
	pw, ok := strings.CutPrefix(strings.SplitN(string(data), "\n", 2)[0], "POSTGRES_PASSWORD=")
	if !ok {
		s.t.Fatalf(".env's first line is not POSTGRES_PASSWORD:\n%s", data)
	}
	return pw
}

// record is the rotation's record in the state directory.
func (s *pwStack) record() map[string]any {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.state, "db-password.json"))
	if err != nil {
		s.t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		s.t.Fatal(err)
	}
	return m
}

// TestRotateDatabasePassword: the role's password moves to a new one that
// Postgres takes while refusing the old one, the .env gives it to n8n
// (its other lines kept), and n8n, recreated from it, is ready on it with
// its data; the same generation again does nothing.
func TestRotateDatabasePassword(t *testing.T) {
	s := newPWStack(t)
	ctx := t.Context()
	if err := s.login(s.initial); err != nil {
		t.Fatalf("the initial password does not work: %v", err)
	}
	if !s.refused("wrong-" + s.initial) {
		t.Fatal("the cluster takes any password: the test checks nothing")
	}
	if err := s.conv.Apply(ctx, manifest(1, "1.123.81"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.db.Rotate(ctx, 1); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	pw := s.envPassword()
	if pw == s.initial || len(pw) != 48 {
		t.Fatalf(".env password %d chars, changed %v; want a new 48-char one", len(pw), pw != s.initial)
	}
	if !s.refused(s.initial) {
		t.Error("Postgres still takes the old password")
	}
	if err := s.login(pw); err != nil {
		t.Errorf("Postgres refuses the new password: %v", err)
	}
	if err := s.client.Ready(ctx); err != nil {
		t.Errorf("n8n not ready on the new password: %v", err)
	}
	// The container was recreated with it and kept n8n's data (its
	// database): the workflows are there.
	if err := s.conv.Apply(ctx, manifest(2, "1.123.81"), nil); err != nil {
		t.Errorf("apply on the new password: %v", err)
	}
	if r := s.record(); r["rotated"] != 1.0 || r["next"] != nil || r["old"] != nil {
		t.Errorf("record %v, want rotated 1 and no passwords", r)
	}
	if s.db.Rotated() != 1 {
		t.Errorf("Rotated() = %d", s.db.Rotated())
	}
	if err := s.db.Rotate(ctx, 1); err != nil || s.envPassword() != pw {
		t.Errorf("generation 1 again: %v, password changed %v", err, s.envPassword() != pw)
	}
}

// TestRotateDatabasePasswordFailsBack: a new password n8n cannot use (the
// SQL command reaches another database, so the role keeps the old one)
// leaves n8n unready; the old password is put back (role, .env, n8n) and
// the error says so. The next attempt, with a working command, succeeds.
func TestRotateDatabasePasswordFailsBack(t *testing.T) {
	s := newPWStack(t)
	ctx := t.Context()
	good := s.db.SQL
	// psql -c runs its own statement and ignores stdin: the role keeps
	// its password, which n8n's new container does not have.
	s.db.SQL = append(append([]string(nil), good...), "-c", "SELECT 1")
	err := s.db.Rotate(ctx, 1)
	if err == nil || !strings.Contains(err.Error(), "the old password is back in use") || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("rotate with a password n8n cannot use: %v", err)
	}
	if strings.Contains(err.Error(), "SCRAM-SHA-256$4096") {
		t.Errorf("the error holds a verifier: %v", err)
	}
	if pw := s.envPassword(); pw != s.initial {
		t.Errorf(".env holds a new password after the failure")
	}
	if err := s.login(s.initial); err != nil {
		t.Errorf("the old password does not work after the failure: %v", err)
	}
	if err := s.client.Ready(ctx); err != nil {
		t.Errorf("n8n is not ready on the old password: %v", err)
	}
	if r := s.record(); r["next"] != nil || r["rotated"] != nil {
		t.Errorf("record after a failure %v, want nothing under way", r)
	}
	s.db.SQL = good
	if err := s.db.Rotate(ctx, 1); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if pw := s.envPassword(); pw == s.initial || !s.refused(s.initial) || s.login(pw) != nil {
		t.Error("after the retry the new password is not the only one that works")
	}
}

// TestRotateDatabasePasswordResumes: a rotation stopped after the role and
// the .env have the new password but before n8n was recreated (the agent
// stopped) keeps next and old saved; the next run tries the saved next
// first and finishes with it.
func TestRotateDatabasePasswordResumes(t *testing.T) {
	s := newPWStack(t)
	stopped, stop := context.WithCancel(t.Context())
	s.db.Recreate = func(context.Context) error { stop(); return stopped.Err() }
	if err := s.db.Rotate(stopped, 1); err == nil {
		t.Fatal("a stopped rotation succeeded")
	}
	rec := s.record()
	next, _ := rec["next"].(string)
	if next == "" || rec["old"] != s.initial {
		t.Fatalf("record after the stop %v, want next and old kept", rec)
	}
	if pw := s.envPassword(); pw != next || !s.refused(s.initial) {
		t.Fatalf("before the resume: .env has next %v, old refused %v", pw == next, s.refused(s.initial))
	}
	// The agent starts again: a new DBPassword on the same files.
	again := &converge.DBPassword{Dir: s.state, EnvFile: s.db.EnvFile, SQL: s.sqlArgv(), Recreate: s.rt.Recreate}
	if err := again.Rotate(t.Context(), 1); err != nil {
		t.Fatalf("resume: %v", err)
	}
	if pw := s.envPassword(); pw != next {
		t.Error("the resume made another password instead of the saved next one")
	}
	if err := s.login(next); err != nil || !s.refused(s.initial) {
		t.Errorf("after the resume: next works %v, old refused %v", err, s.refused(s.initial))
	}
	if err := s.client.Ready(t.Context()); err != nil {
		t.Errorf("n8n not ready after the resume: %v", err)
	}
}

// TestRotateSecretsThroughN8N: the converger's whole rotation on a real
// stack: afterwards n8n refuses the old API key and the old owner password
// and takes the new ones, Postgres refuses the old database password and
// n8n runs on the new one, and the agent's records hold only the new
// secrets.
func TestRotateSecretsThroughN8N(t *testing.T) {
	s := newPWStack(t)
	ctx := t.Context()
	if err := s.conv.Apply(ctx, manifest(1, "1.123.81"), nil); err != nil {
		t.Fatal(err)
	}
	before := s.access()
	if before.APIKey == "" || before.Password == "" {
		t.Fatalf("no owner or key after the first apply: %+v", before.Email)
	}
	if err := s.conv.RotateSecrets(ctx, 1); err != nil {
		t.Fatalf("rotate: %v", err)
	}
	after := s.access()
	if after.APIKey == before.APIKey || after.Password == before.Password || after.Rotated != 1 || after.NextPassword != "" {
		t.Fatalf("records after the rotation: key changed %v, password changed %v, rotated %d, next kept %v",
			after.APIKey != before.APIKey, after.Password != before.Password, after.Rotated, after.NextPassword != "")
	}
	if err := s.client.WithAPIKey(before.APIKey).CheckKey(ctx); n8n.StatusOf(err) != http.StatusUnauthorized {
		t.Errorf("old API key: %v, want 401", err)
	}
	if err := s.client.WithAPIKey(after.APIKey).CheckKey(ctx); err != nil {
		t.Errorf("new API key: %v", err)
	}
	if _, err := s.client.Login(ctx, before.Email, before.Password); err == nil {
		t.Error("n8n takes the old owner password")
	}
	if _, err := s.client.Login(ctx, after.Email, after.Password); err != nil {
		t.Errorf("new owner password: %v", err)
	}
	pw := s.envPassword()
	if pw == s.initial || !s.refused(s.initial) || s.login(pw) != nil {
		t.Error("the database password did not move: old refused, new taken")
	}
	// The converger works on with the new secrets, and the same
	// generation again changes nothing.
	if err := s.conv.Apply(ctx, manifest(2, "1.123.81"), nil); err != nil {
		t.Errorf("apply after the rotation: %v", err)
	}
	if err := s.conv.RotateSecrets(ctx, 1); err != nil || s.access().APIKey != after.APIKey || s.envPassword() != pw {
		t.Errorf("generation 1 again: %v (secrets changed: %v)", err, s.access().APIKey != after.APIKey || s.envPassword() != pw)
	}
}

// n8nRecord is the converger's n8n.json.
type n8nRecord struct {
	Email        string `json:"email"`
	Password     string `json:"password"`
	APIKey       string `json:"api_key"`
	NextPassword string `json:"next_password"`
	Rotated      int64  `json:"rotated"`
}

func (s *pwStack) access() n8nRecord {
	s.t.Helper()
	data, err := os.ReadFile(filepath.Join(s.state, "n8n.json"))
	if err != nil {
		s.t.Fatal(err)
	}
	var r n8nRecord
	if err := json.Unmarshal(data, &r); err != nil {
		s.t.Fatal(err)
	}
	return r
}
