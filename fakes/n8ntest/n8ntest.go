// Package n8ntest gives tests an n8n to talk to: a real n8n 1.123.x when
// GENESIS_N8N_BIN names its binary (make e2e-n8n installs one from npm and
// sets it), else the in-process emulator (package n8nemu). Tests written
// against Start run unchanged against either, so without the variable they
// still run (against the emulator) and never skip.
//
// Design: one function, Start, returns the base URL of a fresh instance and
// the emulator behind it (nil for a real n8n). A test body uses only the
// HTTP APIs; assertions that need the emulator's insides (stored credential
// data, per-route call counts, start-up modes) are guarded by emu != nil.
// Owner and state inspection that works against both goes through n8n's own
// REST API (Credentials).
//
// A real n8n gets its own temporary N8N_USER_FOLDER (a fresh SQLite
// database), a free port on 127.0.0.1, diagnostics, version notifications,
// templates, personalization and task runners off, a fixed encryption key
// and N8N_EXPRESSION_ENGINE=legacy (node 20). Start waits for
// /healthz/readiness (up to StartTimeout) and the test's cleanup stops the
// whole process group.
//
// StartWith (real n8n only) takes a user folder and a Postgres database
// and returns an Instance the test can Stop, so that a test can stop n8n,
// restore or copy its data and start another n8n on the result, as a
// restore on a new droplet or a wake from a snapshot does. Each start
// costs a cold start (about 10 s) and about 600 MB of memory, so real-n8n
// tests don't run in parallel.
package n8ntest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"genesis.dev/fleet/fakes/n8nemu"
	"genesis.dev/fleet/internal/procgroup"
	"genesis.dev/fleet/internal/testkit"
)

// EnvBin names the environment variable holding the path of a real n8n
// binary (node_modules/.bin/n8n of an npm install).
const EnvBin = "GENESIS_N8N_BIN"

// StartTimeout bounds how long Start waits for a real n8n to be ready.
const StartTimeout = 120 * time.Second

// EncryptionKey is the fixed N8N_ENCRYPTION_KEY real instances get.
const EncryptionKey = "genesis-e2e-n8n-encryption-key-0001"

// Real reports whether tests run against a real n8n (GENESIS_N8N_BIN set).
func Real() bool { return os.Getenv(EnvBin) != "" }

// Start returns the base URL of a fresh n8n for t and, when it is the
// emulator, the emulator (nil for a real n8n). The instance lives until t
// ends.
func Start(t testing.TB) (url string, emu *n8nemu.Server) {
	t.Helper()
	bin := os.Getenv(EnvBin)
	if bin == "" {
		emu = n8nemu.Start(t)
		return emu.URL, emu
	}
	return startReal(t, bin), nil
}

// PG is a Postgres database for a real n8n (DB_TYPE=postgresdb and n8n's
// DB_POSTGRESDB_* variables). The user must own the database or be a
// superuser: n8n creates its tables there on first start.
type PG struct {
	Host     string
	Port     int
	DB       string
	User     string
	Password string
}

// Options configure StartWith.
type Options struct {
	// UserFolder is N8N_USER_FOLDER (n8n keeps its config, encryption key
	// and binary data in its .n8n subdirectory). Empty means a new
	// temporary directory. The log is written beside it, never into it,
	// so a backup of the folder does not read a file n8n is appending to.
	UserFolder string
	// Postgres is n8n's database; nil means SQLite in the user folder.
	Postgres *PG
	// Env is more of n8n's environment (KEY=value), after the defaults.
	Env []string
}

// Instance is a real n8n started by StartWith.
type Instance struct {
	URL        string
	UserFolder string

	stop func()
}

// Stop stops n8n (SIGTERM to its process group, SIGKILL after 15 s) and
// waits for it to exit. Safe to call more than once; t's cleanup calls it
// too.
func (i *Instance) Stop() { i.stop() }

// StartWith starts a real n8n with opts and returns once it serves its
// REST routes. It needs GENESIS_N8N_BIN (see Real): the emulator has no
// database to point at. Unlike Start it lets a test stop n8n and start
// another on the same user folder and database, as a restore or a wake
// does; every instance gets the same EncryptionKey, so credentials stay
// readable across them.
func StartWith(t testing.TB, opts Options) *Instance {
	t.Helper()
	bin := os.Getenv(EnvBin)
	if bin == "" {
		t.Fatalf("n8ntest: StartWith needs a real n8n (%s)", EnvBin)
	}
	return startWith(t, bin, opts)
}

// startMu serialises real starts: two cold starts at once double the time
// of each and the memory peak.
var startMu sync.Mutex

func startReal(t testing.TB, bin string) string {
	t.Helper()
	return startWith(t, bin, Options{}).URL
}

func startWith(t testing.TB, bin string, opts Options) *Instance {
	t.Helper()
	startMu.Lock()
	defer startMu.Unlock()
	port := testkit.FreePort(t)
	logDir := t.TempDir()
	dir := opts.UserFolder
	if dir == "" {
		dir = logDir
	}
	logPath := filepath.Join(logDir, "n8n.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	db := []string{"DB_TYPE=sqlite"}
	if pg := opts.Postgres; pg != nil {
		db = []string{
			"DB_TYPE=postgresdb",
			"DB_POSTGRESDB_HOST=" + pg.Host,
			"DB_POSTGRESDB_PORT=" + strconv.Itoa(pg.Port),
			"DB_POSTGRESDB_DATABASE=" + pg.DB,
			"DB_POSTGRESDB_USER=" + pg.User,
			"DB_POSTGRESDB_PASSWORD=" + pg.Password,
		}
	}
	cmd := exec.Command(bin, "start")
	cmd.Env = append(os.Environ(),
		"N8N_USER_FOLDER="+dir,
		"N8N_PORT="+strconv.Itoa(port),
		"N8N_LISTEN_ADDRESS=127.0.0.1",
		"N8N_HOST=127.0.0.1",
		"N8N_PROTOCOL=http",
		"N8N_DIAGNOSTICS_ENABLED=false",
		"N8N_VERSION_NOTIFICATIONS_ENABLED=false",
		"N8N_TEMPLATES_ENABLED=false",
		"N8N_PERSONALIZATION_ENABLED=false",
		"N8N_SECURE_COOKIE=false",
		"N8N_RUNNERS_ENABLED=false",
		"N8N_ENCRYPTION_KEY="+EncryptionKey,
		"N8N_EXPRESSION_ENGINE=legacy",
		"N8N_LOG_LEVEL=warn",
	)
	cmd.Env = append(cmd.Env, db...)
	cmd.Env = append(cmd.Env, opts.Env...)
	cmd.Dir = logDir
	cmd.Stdout, cmd.Stderr = logf, logf
	begin := time.Now()
	if err := procgroup.Start(cmd); err != nil {
		logf.Close()
		t.Fatalf("n8ntest: start %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() {
		// Closed after the send: waitReady may take the value, and Stop
		// must still see the exit.
		exited <- cmd.Wait()
		close(exited)
		logf.Close()
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			if procgroup.Stop(cmd, exited, 15*time.Second) {
				t.Logf("n8ntest: n8n (pid %d) ignored SIGTERM; killed it", cmd.Process.Pid)
			}
		})
	}
	t.Cleanup(stop)

	url := "http://127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	if err := waitReady(ctx, url, exited); err != nil {
		t.Fatalf("n8ntest: n8n at %s not ready after %s: %v\n--- n8n log (tail) ---\n%s",
			url, time.Since(begin).Round(time.Millisecond), err, tail(logPath, 4000))
	}
	t.Logf("n8ntest: real n8n ready at %s in %s", url, time.Since(begin).Round(time.Millisecond))
	return &Instance{URL: url, UserFolder: dir, stop: stop}
}

// waitReady waits for /healthz/readiness and then for the REST routes:
// n8n 1.123 answers readiness 200 once its database is migrated, a few
// seconds before it mounts its routes (until then every route is Express's
// 404 "Cannot GET /rest/settings").
func waitReady(ctx context.Context, url string, exited <-chan error) error {
	hc := &http.Client{Timeout: 5 * time.Second}
	last := errors.New("no probe yet")
	for {
		ok, err := probe(ctx, hc, url+"/healthz/readiness")
		if ok {
			ok, err = probe(ctx, hc, url+"/rest/settings")
		}
		if ok {
			return nil
		}
		last = err
		select {
		case err := <-exited:
			return fmt.Errorf("n8n exited: %v", err)
		case <-ctx.Done():
			return fmt.Errorf("%w (last probe: %v)", ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// probe reports whether GET url answers 200 application/json.
func probe(ctx context.Context, hc *http.Client, url string) (bool, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := hc.Do(req)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || !strings.HasPrefix(ct, "application/json") {
		return false, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, ct)
	}
	return true, nil
}

func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}

// StoredCredential is a credential as n8n's REST API lists it to its owner
// (never with its data).
type StoredCredential struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// Credentials logs in to the n8n at url as its owner and lists every
// credential it holds through GET /rest/credentials (the public API of 1.x
// can't list credentials). Works against the emulator and a real n8n.
func Credentials(ctx context.Context, url, email, password string) ([]StoredCredential, error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	browser := "n8ntest-browser"
	body, _ := json.Marshal(map[string]string{"emailOrLdapLoginId": email, "password": password})
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/rest/login", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("browser-id", browser)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("login: status %d", resp.StatusCode)
	}
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == "n8n-auth" {
			cookie = c.Name + "=" + c.Value
		}
	}
	if cookie == "" {
		return nil, errors.New("login: no n8n-auth cookie")
	}
	req, _ = http.NewRequestWithContext(ctx, http.MethodGet, url+"/rest/credentials", nil)
	req.Header.Set("Cookie", cookie)
	req.Header.Set("browser-id", browser)
	resp, err = hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("list credentials: status %d: %s", resp.StatusCode, strings.TrimSpace(string(data)))
	}
	var out struct {
		Data []StoredCredential `json:"data"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("list credentials: %w", err)
	}
	return out.Data, nil
}
