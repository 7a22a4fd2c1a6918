package dockersim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/agent/converge"
	"genesis.dev/fleet/fakes/n8nemu"
)

// BrokenMessage is what a broken version's webhooks answer (500).
const BrokenMessage = "Workflow could not be started!"

// store is where a container keeps n8n's state: its database.
type store interface {
	// migrate records version as the schema's newest and returns the
	// version that migrated it before (empty for a new database).
	migrate(ctx context.Context, version string) (prev string, err error)
	load(ctx context.Context) ([]byte, error)
	save(ctx context.Context, state []byte) error
	close()
}

// RunContainer is the n8n container's process (see the package doc):
// it serves the emulator at the image's version until ctx ends, its
// record is gone, or its database refuses it.
func RunContainer(ctx context.Context, getenv func(string) string, stderr io.Writer) error {
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("component", "n8n-container")
	image := getenv("DOCKERSIM_IMAGE")
	i := strings.LastIndex(image, ":")
	if i < 0 {
		return fmt.Errorf("image %q has no tag", image)
	}
	version := image[i+1:]
	addr := net.JoinHostPort(first(getenv("N8N_LISTEN_ADDRESS"), "0.0.0.0"), first(getenv("N8N_PORT"), "5678"))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	emu := n8nemu.New(uint64(time.Now().UnixNano()))
	emu.SetVersion(version)
	emu.SetMode(n8nemu.StartingUp)
	st, err := openStore(ctx, getenv)
	if err != nil {
		return err
	}
	defer st.close()
	srv := &http.Server{Handler: persisting(emu, st, log), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	log.Info("n8n starting", "version", version, "addr", ln.Addr().String())

	prev, err := st.migrate(ctx, version)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if prev != "" && converge.VersionLess(version, prev) {
		return fmt.Errorf("the database was migrated by n8n %s; n8n %s cannot run on it", prev, version)
	}
	state, err := st.load(ctx)
	if err != nil {
		return err
	}
	if len(state) > 0 {
		if err := emu.Import(state); err != nil {
			return err
		}
	}
	if strings.Contains(preRelease(version), "broken") {
		emu.FailWebhooks(BrokenMessage)
	}
	if !strings.Contains(preRelease(version), "hang") {
		emu.SetMode(n8nemu.Ready)
		log.Info("n8n ready", "version", version, "migrated_from", prev)
	}
	record := getenv("DOCKERSIM_RECORD")
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if record != "" && !ownRecord(record) {
			log.Info("container record gone; exiting")
			return nil
		}
	}
}

// ownRecord reports whether the record at path names this process.
func ownRecord(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var r record
	return json.Unmarshal(data, &r) == nil && r.PID == os.Getpid()
}

func preRelease(v string) string {
	_, pre, _ := strings.Cut(v, "-")
	return pre
}

// persisting saves the emulator's state after every request that may
// have written (n8n commits before it answers).
func persisting(emu *n8nemu.Server, st store, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		emu.ServeHTTP(w, r)
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			return
		}
		if err := st.save(r.Context(), emu.Export()); err != nil {
			log.Error("save state", "err", err)
		}
	})
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func openStore(ctx context.Context, getenv func(string) string) (store, error) {
	if getenv("DB_TYPE") == "postgresdb" {
		u := url.URL{Scheme: "postgres", Host: net.JoinHostPort(first(getenv("DB_POSTGRESDB_HOST"), "localhost"), first(getenv("DB_POSTGRESDB_PORT"), "5432")),
			Path: "/" + first(getenv("DB_POSTGRESDB_DATABASE"), "n8n"), RawQuery: "sslmode=disable"}
		u.User = url.UserPassword(first(getenv("DB_POSTGRESDB_USER"), "postgres"), getenv("DB_POSTGRESDB_PASSWORD"))
		conn, err := pgx.Connect(ctx, u.String())
		if err != nil {
			return nil, fmt.Errorf("database: %w", err)
		}
		return &pgStore{conn: conn}, nil
	}
	dir := getenv("N8N_USER_FOLDER")
	if dir == "" {
		return nil, errors.New("neither DB_TYPE=postgresdb nor N8N_USER_FOLDER is set")
	}
	return &fileStore{path: filepath.Join(dir, "emu-database.json")}, nil
}

type pgStore struct{ conn *pgx.Conn }

const pgSchema = `CREATE TABLE IF NOT EXISTS emu_migrations (id serial PRIMARY KEY, version text NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS emu_state (id int PRIMARY KEY, data jsonb NOT NULL)`

func (p *pgStore) migrate(ctx context.Context, version string) (string, error) {
	if _, err := p.conn.Exec(ctx, pgSchema); err != nil {
		return "", err
	}
	var prev string
	err := p.conn.QueryRow(ctx, `SELECT version FROM emu_migrations ORDER BY id DESC LIMIT 1`).Scan(&prev)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", err
	}
	if prev != version && (prev == "" || !converge.VersionLess(version, prev)) {
		if _, err := p.conn.Exec(ctx, `INSERT INTO emu_migrations (version) VALUES ($1)`, version); err != nil {
			return "", err
		}
	}
	return prev, nil
}

func (p *pgStore) load(ctx context.Context) ([]byte, error) {
	var data []byte
	err := p.conn.QueryRow(ctx, `SELECT data::text FROM emu_state WHERE id = 1`).Scan(&data)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	return data, err
}

func (p *pgStore) save(ctx context.Context, state []byte) error {
	_, err := p.conn.Exec(ctx, `INSERT INTO emu_state (id, data) VALUES (1, $1::jsonb) ON CONFLICT (id) DO UPDATE SET data = excluded.data`, string(state))
	return err
}

func (p *pgStore) close() { p.conn.Close(context.Background()) }

// fileStore is the database as one JSON file (no Postgres).
type fileStore struct{ path string }

type fileDB struct {
	Migrations []string        `json:"migrations"`
	State      json.RawMessage `json:"state,omitempty"`
}

func (f *fileStore) read() (fileDB, error) {
	var db fileDB
	data, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return db, nil
	}
	if err != nil {
		return db, err
	}
	return db, json.Unmarshal(data, &db)
}

func (f *fileStore) write(db fileDB) error {
	data, err := json.Marshal(db)
	if err != nil {
		return err
	}
	tmp := f.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, f.path)
}

func (f *fileStore) migrate(_ context.Context, version string) (string, error) {
	db, err := f.read()
	if err != nil {
		return "", err
	}
	prev := ""
	if n := len(db.Migrations); n > 0 {
		prev = db.Migrations[n-1]
	}
	if prev != version && (prev == "" || !converge.VersionLess(version, prev)) {
		db.Migrations = append(db.Migrations, version)
		return prev, f.write(db)
	}
	return prev, nil
}

func (f *fileStore) load(context.Context) ([]byte, error) {
	db, err := f.read()
	return db.State, err
}

func (f *fileStore) save(_ context.Context, state []byte) error {
	db, err := f.read()
	if err != nil {
		return err
	}
	db.State = state
	return f.write(db)
}

func (f *fileStore) close() {}
