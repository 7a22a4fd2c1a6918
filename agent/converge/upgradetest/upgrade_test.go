package upgradetest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/agent"
	"genesis.dev/fleet/agent/backup"
	"genesis.dev/fleet/agent/caddy"
	"genesis.dev/fleet/agent/converge"
	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/fakes/dockersim"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/schema"
)

// TestMain: the test binary is also the docker CLI (DOCKERSIM_TEST_AS) and
// the n8n container (n8n-container), like genesis-demo.
func TestMain(m *testing.M) {
	if code, ok := dockersim.AsChild(); ok {
		os.Exit(code)
	}
	pgtest.Main(m)
}

// droplet is one droplet's n8n stack: its database, the compose runtime
// over the emulator, local backups, rejections and a converger.
type droplet struct {
	t       *testing.T
	db      string
	dir     string
	rt      *converge.Compose
	backups *backup.Local
	rej     *agent.Rejections
	conv    *converge.Converger
	client  *n8n.Client

	mu  sync.Mutex
	ups []string // N8N_VERSION of every docker compose up
}

func newDroplet(t *testing.T) *droplet { return newDropletAt(t, "1.123.81") }

// newDropletAt is a droplet whose n8n booted at boot ("": a new droplet,
// n8n not started: the agent starts it at its first manifest's version).
func newDropletAt(t *testing.T, boot string) *droplet {
	t.Helper()
	d := &droplet{t: t, db: pgtest.New(t), dir: t.TempDir()}
	u, err := url.Parse(d.db)
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	data := filepath.Join(d.dir, "n8n-data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "config"), []byte(`{"encryptionKey":"k"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	compose := fmt.Sprintf(`name: genesis
services:
  n8n:
    image: docker.n8n.io/n8nio/n8n:${N8N_VERSION:-1.123.81}
    environment:
      N8N_PORT: %d
      N8N_LISTEN_ADDRESS: 127.0.0.1
      DB_TYPE: postgresdb
      DB_POSTGRESDB_HOST: %s
      DB_POSTGRESDB_PORT: %s
      DB_POSTGRESDB_DATABASE: %s
      DB_POSTGRESDB_USER: %s
`, port, u.Hostname(), u.Port(), strings.TrimPrefix(u.Path, "/"), u.User.Username())
	file := filepath.Join(d.dir, "compose.yaml")
	if err := os.WriteFile(file, []byte(compose), 0o600); err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(d.dir, "agent")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	engine := []string{"DOCKERSIM_TEST_AS=docker", "DOCKERSIM_STATE=" + filepath.Join(d.dir, "engine"), "DOCKERSIM_N8N_BIN=" + exe}
	d.client, err = n8n.New("http://127.0.0.1:"+strconv.Itoa(port), n8n.Options{PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	d.rt = &converge.Compose{File: file, Project: "genesis", Dir: state, Docker: exe, Ready: d.client.WaitReady, ReadyTimeout: 15 * time.Second,
		Exec: func(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
			if slices.Contains(args, "up") {
				d.mu.Lock()
				d.ups = append(d.ups, strings.TrimPrefix(env[0], "N8N_VERSION="))
				d.mu.Unlock()
			}
			cmd := exec.CommandContext(ctx, name, args...)
			cmd.Env = append(append(os.Environ(), engine...), env...)
			return cmd.CombinedOutput()
		}}
	t.Cleanup(func() { _ = d.rt.Stop(context.Background()) })
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	d.backups = &backup.Local{Dir: filepath.Join(state, "upgrade-backups"), Identity: id, Workspace: "ws-acme",
		Source: backup.Source{Dump: pgtest.DumpArgv(t, d.db), DataDir: data},
		Target: backup.Target{Restore: pgtest.RestoreArgv(t, d.db), DataDir: data}}
	if d.rej, err = agent.OpenRejections(state); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte("null"))
		}
	}))
	t.Cleanup(ts.Close)
	d.conv, err = converge.New(converge.Config{Dir: state, N8N: d.client, Caddy: caddy.NewClient(strings.TrimPrefix(ts.URL, "http://"), caddy.ClientOptions{}),
		Ask: caddy.NewAsk(nil), CaddyConfig: caddy.Config{AskURL: "http://127.0.0.1:9180/ask"}, Runtime: d.rt,
		Backups: d.backups, Rejections: d.rej, ReadyTimeout: 15 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if boot == "" {
		return d
	}
	ctx := context.Background()
	if err := d.rt.SwitchTo(ctx, boot); err != nil {
		t.Fatal(err)
	}
	if err := d.rt.Commit(ctx, boot); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestFirstStartAtManifestVersion: on a new droplet n8n first starts at
// the first manifest's version, even one older than the compose file's
// default (a tenant pinning an older release), with nothing to back up.
func TestFirstStartAtManifestVersion(t *testing.T) {
	d := newDropletAt(t, "")
	if got := d.current(); got != "" {
		t.Fatalf("before the first manifest current = %q, want none", got)
	}
	if err := d.apply(manifest(1, "1.122.5")); err != nil {
		t.Fatalf("first apply: %v", err)
	}
	if d.current() != "1.122.5" || d.running() != "1.122.5" {
		t.Errorf("current %q, running %q; want 1.122.5", d.current(), d.running())
	}
	if m := d.migrations(); fmt.Sprint(m) != "[1.122.5]" {
		t.Errorf("migrations = %v, want only 1.122.5's", m)
	}
	if n := d.upCount(); n != 1 {
		t.Errorf("%d compose ups, want 1", n)
	}
	if _, ok, err := d.backups.Before(""); ok || err != nil {
		t.Errorf("a backup was taken of a database n8n never ran on: %v %v", ok, err)
	}
	if l := d.rej.List(); l != nil {
		t.Errorf("rejections: %+v", l)
	}
}

// hookWorkflow is a managed workflow with a webhook trigger.
func hookWorkflow(name, path string) schema.ManifestWorkflow {
	js, _ := json.Marshal(map[string]any{"name": name, "connections": map[string]any{}, "settings": map[string]any{"executionOrder": "v1"},
		"nodes": []map[string]any{{"id": "n0", "name": "Hook", "type": "n8n-nodes-base.webhook", "typeVersion": 2, "position": []int{0, 0},
			"webhookId": "hook-" + path, "parameters": map[string]any{"path": path, "httpMethod": "POST"}}}})
	sum := sha256.Sum256(js)
	return schema.ManifestWorkflow{Name: name, JSON: js, SHA256: hex.EncodeToString(sum[:])}
}

func manifest(version int64, n8nVersion string) *schema.Manifest {
	return &schema.Manifest{Type: schema.ManifestType, Workspace: "ws-acme", Droplet: "1", Version: version,
		N8N: schema.N8NPin{Version: n8nVersion}, Workflows: []schema.ManifestWorkflow{hookWorkflow("click-tracker", "click"), hookWorkflow("notify", "notify")}}
}

func (d *droplet) apply(m *schema.Manifest) error {
	return d.conv.Apply(context.Background(), m, nil)
}

func (d *droplet) current() string {
	v, err := d.rt.Current(context.Background())
	if err != nil {
		d.t.Fatal(err)
	}
	return v
}

// running is the version n8n itself reports (what heartbeats carry).
func (d *droplet) running() string {
	v, err := d.conv.N8NVersion(context.Background())
	if err != nil {
		d.t.Fatal(err)
	}
	return v
}

// migrations are the versions n8n's database was migrated by, in order.
func (d *droplet) migrations() []string {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, d.db)
	if err != nil {
		d.t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT version FROM emu_migrations ORDER BY id`)
	if err != nil {
		d.t.Fatal(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		d.t.Fatal(err)
	}
	return vs
}

func (d *droplet) upCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.ups)
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestUpgradeSequence walks one droplet through a good upgrade, a broken
// one (database restored, previous image back, rejected, not retried), a
// manifest asking another version (retried), a downgrade with a backup
// and one without.
func TestUpgradeSequence(t *testing.T) {
	d := newDroplet(t)
	if err := d.apply(manifest(1, "1.123.81")); err != nil {
		t.Fatalf("first apply: %v", err)
	}
	eq := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}

	t.Run("a good version is committed", func(t *testing.T) {
		if err := d.apply(manifest(2, "1.124.0")); err != nil {
			t.Fatal(err)
		}
		eq("current", d.current(), "1.124.0")
		eq("running", d.running(), "1.124.0")
		eq("migrations", d.migrations(), []string{"1.123.81", "1.124.0"})
		b, ok, err := d.backups.Before("1.123.81")
		if err != nil || !ok || b.To != "1.124.0" {
			t.Errorf("no backup recorded before the upgrade from 1.123.81: %+v %v %v", b, ok, err)
		}
		if _, err := os.Stat(filepath.Join(d.dir, "agent", "n8n-upgrade.json")); !os.IsNotExist(err) {
			t.Errorf("the switch record stays: %v", err)
		}
	})

	t.Run("a broken version is undone and rejected", func(t *testing.T) {
		err := d.apply(manifest(3, "1.125.0-broken"))
		if err == nil || !strings.Contains(err.Error(), "verify failed") || !strings.Contains(err.Error(), "restored the database") ||
			!strings.Contains(err.Error(), dockersim.BrokenMessage) {
			t.Fatalf("apply: %v", err)
		}
		eq("current", d.current(), "1.124.0")
		eq("running", d.running(), "1.124.0")
		// The broken version migrated the database; the restore undid it.
		eq("migrations", d.migrations(), []string{"1.123.81", "1.124.0"})
		x, ok := d.rej.Rejected(schema.RejectN8N, "1.125.0-broken")
		if !ok || x.Version != 3 || !strings.Contains(x.Reason, "verify failed") || x.At.IsZero() {
			t.Errorf("rejection %+v %v", x, ok)
		}
	})

	t.Run("a rejected version is not tried again", func(t *testing.T) {
		ups := d.upCount()
		err := d.apply(manifest(3, "1.125.0-broken"))
		var re *converge.RejectedError
		if !errors.As(err, &re) || !strings.Contains(err.Error(), "waiting for a manifest with another version") {
			t.Fatalf("apply: %v", err)
		}
		eq("docker compose up calls", d.upCount()-ups, 0)
		eq("running", d.running(), "1.124.0")
	})

	t.Run("another version is tried", func(t *testing.T) {
		if err := d.apply(manifest(4, "1.126.0")); err != nil {
			t.Fatal(err)
		}
		eq("current", d.current(), "1.126.0")
		eq("rejections", len(d.rej.List()), 0)
		eq("migrations", d.migrations(), []string{"1.123.81", "1.124.0", "1.126.0"})
	})

	t.Run("a downgrade restores the backup taken before the upgrade from it", func(t *testing.T) {
		if err := d.apply(manifest(5, "1.124.0")); err != nil {
			t.Fatal(err)
		}
		eq("current", d.current(), "1.124.0")
		eq("running", d.running(), "1.124.0")
		eq("migrations", d.migrations(), []string{"1.123.81", "1.124.0"})
	})

}

// TestDowngradeWithoutBackupRefused: a droplet that never ran the older
// version (so keeps no backup taken before an upgrade from it) refuses the
// downgrade without touching n8n: n8n cannot run an older version on a
// database a newer one migrated.
func TestDowngradeWithoutBackupRefused(t *testing.T) {
	d := newDropletAt(t, "1.124.0")
	eq := func(what string, got, want any) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	if err := d.apply(manifest(1, "1.124.0")); err != nil {
		t.Fatalf("first apply: %v", err)
	}
	if _, ok, err := d.backups.Before("1.123.81"); ok || err != nil {
		t.Fatalf("a backup before an upgrade from 1.123.81 exists: %v %v", ok, err)
	}
	ups := d.upCount()
	err := d.apply(manifest(2, "1.123.81"))
	if err == nil || !strings.Contains(err.Error(), "downgrade from 1.124.0 refused") {
		t.Fatalf("apply: %v", err)
	}
	eq("docker compose up calls", d.upCount()-ups, 0)
	eq("running", d.running(), "1.124.0")
	if _, ok := d.rej.Rejected(schema.RejectN8N, "1.123.81"); !ok {
		t.Error("not rejected")
	}
}
