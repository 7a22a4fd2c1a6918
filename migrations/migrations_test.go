package migrations

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/internal/pgserver/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// connect opens a connection to a fresh database for t.
func connect(t *testing.T) (*pgx.Conn, string) {
	t.Helper()
	url := pgtest.New(t)
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn, url
}

// embeddedNames lists the embedded migration files.
func embeddedNames(t *testing.T) []string {
	t.Helper()
	names, err := fs.Glob(embedded, "*.sql")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// withEmbedded returns a MapFS holding the embedded migrations plus extra.
func withEmbedded(t *testing.T, extra fstest.MapFS) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{}
	for _, name := range embeddedNames(t) {
		b, err := fs.ReadFile(embedded, name)
		if err != nil {
			t.Fatal(err)
		}
		fsys[name] = &fstest.MapFile{Data: b}
	}
	for name, f := range extra {
		fsys[name] = f
	}
	return fsys
}

func sqlFile(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

type migrationRow struct {
	Version  int64
	Name     string
	Checksum string
}

func appliedRows(t *testing.T, conn *pgx.Conn) []migrationRow {
	t.Helper()
	rows, err := conn.Query(t.Context(), `SELECT version, name, checksum FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[migrationRow])
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestApplyEmptyDatabase(t *testing.T) {
	conn, _ := connect(t)
	got, err := Apply(t.Context(), conn)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, embeddedNames(t)); diff != "" {
		t.Errorf("applied (-got +want):\n%s", diff)
	}

	var want []migrationRow
	for _, name := range embeddedNames(t) {
		b, _ := fs.ReadFile(embedded, name)
		sum := sha256.Sum256(b)
		var v int64
		fmt.Sscanf(name, "%d_", &v)
		want = append(want, migrationRow{Version: v, Name: name, Checksum: hex.EncodeToString(sum[:])})
	}
	if diff := cmp.Diff(appliedRows(t, conn), want); diff != "" {
		t.Errorf("schema_migrations (-got +want):\n%s", diff)
	}

	rows, err := conn.Query(t.Context(), `SELECT table_name::text FROM information_schema.tables
		WHERE table_schema = 'public' ORDER BY table_name`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	wantTables := []string{"account_figures", "agents", "audit_log", "availability_days", "availability_replicas", "availability_shards", "backup_restores", "backups", "do_accounts", "enrollment_tokens", "fleet_status", "leader_lease", "manifests", "notifications", "observation", "operations", "reconciler_state", "rollout_inputs", "rollout_members", "rollouts", "schema_migrations", "secret_rotations", "tenant_domains", "tenant_retries"}
	if diff := cmp.Diff(tables, wantTables); diff != "" {
		t.Errorf("tables (-got +want):\n%s", diff)
	}
}

func TestApplyTwiceIsNoOp(t *testing.T) {
	conn, _ := connect(t)
	if _, err := Apply(t.Context(), conn); err != nil {
		t.Fatal(err)
	}
	before := appliedRows(t, conn)
	got, err := Apply(t.Context(), conn)
	if err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	if len(got) != 0 {
		t.Errorf("second Apply applied %q, want nothing", got)
	}
	if diff := cmp.Diff(appliedRows(t, conn), before); diff != "" {
		t.Errorf("schema_migrations changed (-got +want):\n%s", diff)
	}
}

// TestApplyConcurrent runs several Apply calls at once, each on its own
// connection as separate processes would. The extra files are not
// idempotent, so running one twice would fail.
func TestApplyConcurrent(t *testing.T) {
	_, url := connect(t)
	fsys := withEmbedded(t, fstest.MapFS{
		"9001_extra_a.sql": sqlFile(`CREATE TABLE extra_a (id int PRIMARY KEY); INSERT INTO extra_a VALUES (1);`),
		"9002_extra_b.sql": sqlFile(`CREATE TABLE extra_b (id int PRIMARY KEY); INSERT INTO extra_b SELECT id FROM extra_a;`),
		"9003_extra_c.sql": sqlFile(`ALTER TABLE extra_b ADD COLUMN note text NOT NULL DEFAULT 'x';`),
	})
	const workers = 4
	results := make([][]string, workers)
	g, ctx := errgroup.WithContext(t.Context())
	for i := range workers {
		g.Go(func() error {
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				return err
			}
			defer conn.Close(context.Background())
			results[i], err = apply(ctx, conn, fsys)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	var all []string
	for _, r := range results {
		all = append(all, r...)
	}
	slices.Sort(all)
	want := append(embeddedNames(t), "9001_extra_a.sql", "9002_extra_b.sql", "9003_extra_c.sql")
	if diff := cmp.Diff(all, want); diff != "" {
		t.Errorf("files applied across all workers (-got +want):\n%s", diff)
	}
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if got := len(appliedRows(t, conn)); got != len(want) {
		t.Errorf("schema_migrations has %d rows, want %d", got, len(want))
	}
}

func TestApplyRefusesChangedFile(t *testing.T) {
	tests := []struct {
		name    string
		changed fstest.MapFS
		want    string // in the error
	}{
		{
			name: "edited",
			changed: fstest.MapFS{
				"0001_first.sql":  sqlFile(`CREATE TABLE first (id int, extra text);`),
				"0002_second.sql": sqlFile(`CREATE TABLE second (id int);`),
			},
			want: "0001_first.sql was edited after it was applied",
		},
		{
			name: "renamed",
			changed: fstest.MapFS{
				"0001_renamed.sql": sqlFile(`CREATE TABLE first (id int);`),
				"0002_second.sql":  sqlFile(`CREATE TABLE second (id int);`),
			},
			want: "version 1 was applied as 0001_first.sql but the file is now 0001_renamed.sql",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, _ := connect(t)
			orig := fstest.MapFS{"0001_first.sql": sqlFile(`CREATE TABLE first (id int);`)}
			if _, err := apply(t.Context(), conn, orig); err != nil {
				t.Fatal(err)
			}
			got, err := apply(t.Context(), conn, tt.changed)
			if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("apply changed files: err = %v, want ErrChecksum mentioning %q", err, tt.want)
			}
			if len(got) != 0 {
				t.Errorf("applied %q despite the changed file", got)
			}
			if n := len(appliedRows(t, conn)); n != 1 {
				t.Errorf("schema_migrations has %d rows, want 1", n)
			}
		})
	}
}

func TestApplyRefusesInconsistentHistory(t *testing.T) {
	first := sqlFile(`CREATE TABLE first (id int);`)
	third := sqlFile(`CREATE TABLE third (id int);`)
	tests := []struct {
		name  string
		later fstest.MapFS
		want  string
	}{
		{
			name:  "pending below applied",
			later: fstest.MapFS{"0001_first.sql": first, "0002_second.sql": sqlFile(`SELECT 1;`), "0003_third.sql": third},
			want:  "migration 0002_second.sql is pending but a higher version (3) is already applied",
		},
		{
			name:  "applied file missing",
			later: fstest.MapFS{"0003_third.sql": third},
			want:  "migration 0001_first.sql (version 1) is applied but its file is missing",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, _ := connect(t)
			if _, err := apply(t.Context(), conn, fstest.MapFS{"0001_first.sql": first, "0003_third.sql": third}); err != nil {
				t.Fatal(err)
			}
			_, err := apply(t.Context(), conn, tt.later)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

// TestApplyToleratesNewerSchema: an older binary starts against a database
// that a newer binary migrated further.
func TestApplyToleratesNewerSchema(t *testing.T) {
	conn, _ := connect(t)
	first := sqlFile(`CREATE TABLE first (id int);`)
	newer := fstest.MapFS{"0001_first.sql": first, "0002_second.sql": sqlFile(`CREATE TABLE second (id int);`)}
	if _, err := apply(t.Context(), conn, newer); err != nil {
		t.Fatal(err)
	}
	got, err := apply(t.Context(), conn, fstest.MapFS{"0001_first.sql": first})
	if err != nil || len(got) != 0 {
		t.Fatalf("older files: applied %q, err %v; want nothing, no error", got, err)
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	conn, _ := connect(t)
	ctx := t.Context()
	first := sqlFile(`CREATE TABLE first (id int);`)
	broken := fstest.MapFS{
		"0001_first.sql":  first,
		"0002_second.sql": sqlFile(`CREATE TABLE second (id int); INSERT INTO second VALUES (1); SELECT 1/0;`),
	}
	got, err := apply(ctx, conn, broken)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "22012" || !strings.Contains(err.Error(), "0002_second.sql") {
		t.Fatalf("err = %v, want division_by_zero from 0002_second.sql", err)
	}
	if diff := cmp.Diff(got, []string{"0001_first.sql"}); diff != "" {
		t.Errorf("applied before the failure (-got +want):\n%s", diff)
	}
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('second') IS NOT NULL`).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("table from the failed migration exists")
	}
	fixed := fstest.MapFS{"0001_first.sql": first, "0002_second.sql": sqlFile(`CREATE TABLE second (id int);`)}
	got, err = apply(ctx, conn, fixed)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(got, []string{"0002_second.sql"}); diff != "" {
		t.Errorf("applied after the fix (-got +want):\n%s", diff)
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	tests := []struct {
		name string
		fsys fstest.MapFS
		want string
	}{
		{"no number", fstest.MapFS{"initial.sql": sqlFile("")}, "migration initial.sql: name must look like 0001_description.sql"},
		{"short number", fstest.MapFS{"1_initial.sql": sqlFile("")}, "migration 1_initial.sql: name must look like 0001_description.sql"},
		{"upper case", fstest.MapFS{"0001_Initial.sql": sqlFile("")}, "migration 0001_Initial.sql: name must look like 0001_description.sql"},
		{"zero", fstest.MapFS{"0000_initial.sql": sqlFile("")}, "migration 0000_initial.sql: version must be a positive number"},
		{"same version", fstest.MapFS{"0001_a.sql": sqlFile(""), "00001_b.sql": sqlFile("")}, "migrations 00001_b.sql and 0001_a.sql have the same version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(tt.fsys)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("load error (-got +want):\n%s", diff)
			}
		})
	}
}

func TestLoadIgnoresOtherFiles(t *testing.T) {
	files, err := load(fstest.MapFS{
		"0002_b.sql":   sqlFile("B"),
		"0010_c.sql":   sqlFile("C"),
		"0001_a.sql":   sqlFile("A"),
		"README.md":    sqlFile("not sql"),
		"sub/0003.sql": sqlFile("in a folder"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, fmt.Sprintf("%d %s %s", f.version, f.name, f.sql))
	}
	want := []string{"1 0001_a.sql A", "2 0002_b.sql B", "10 0010_c.sql C"}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("loaded (-got +want):\n%s", diff)
	}
}
