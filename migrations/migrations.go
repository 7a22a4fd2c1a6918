// Package migrations holds the Postgres schema of the control plane as
// numbered SQL files embedded in the binary, and applies them at start.
//
// Files are named NNNN_description.sql and applied in version order, each in
// its own transaction together with its row in schema_migrations (version,
// name, applied_at, checksum), so a file is either fully applied and
// recorded or not at all. Every such transaction first takes a transaction
// advisory lock on [LockKey] and then re-reads schema_migrations, so any
// number of processes may call [Apply] at once: they serialize, and each
// file runs exactly once. Files must therefore not contain statements that
// cannot run in a transaction (CREATE INDEX CONCURRENTLY, VACUUM).
//
// An applied file is history: if its sha256 changes, [Apply] refuses to run
// ([ErrChecksum]) rather than leave the database and the code disagreeing.
// New files get the next number; they are refused when a higher version is
// already applied. Versions applied by a newer binary (higher than any file
// known here) are tolerated, so an old replica can still start during a
// rolling deploy.
package migrations

import (
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
)

//go:embed *.sql
var embedded embed.FS

// LockKey is the pg_advisory_xact_lock key that serializes migrations
// ("genesis" followed by 0x01). Other advisory locks in this database must
// use different keys.
const LockKey int64 = 0x67656e6573697301

// ErrChecksum reports that an already-applied migration file was changed.
var ErrChecksum = errors.New("applied migration changed")

// DB is what Apply needs: *pgxpool.Pool, *pgx.Conn and pgx.Tx all have it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Apply applies the embedded migrations that db has not applied yet and
// returns the names of the files it applied, in order (empty when the schema
// was already current).
func Apply(ctx context.Context, db DB) (applied []string, err error) {
	return apply(ctx, db, embedded)
}

// file is one migration read from the file system.
type file struct {
	version  int64
	name     string // file name, e.g. "0001_initial.sql"
	sql      string
	checksum string // hex sha256 of the file's bytes
}

var fileName = regexp.MustCompile(`^([0-9]{4,})_[a-z0-9_]+\.sql$`)

// load reads every *.sql file at the root of fsys, sorted by version.
func load(fsys fs.FS) ([]file, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var files []file
	for _, e := range entries {
		if e.IsDir() || path.Ext(e.Name()) != ".sql" {
			continue
		}
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("migration %s: name must look like 0001_description.sql", e.Name())
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: version must be a positive number", e.Name())
		}
		b, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(b)
		files = append(files, file{version: v, name: e.Name(), sql: string(b), checksum: hex.EncodeToString(sum[:])})
	}
	slices.SortStableFunc(files, func(a, b file) int { return cmp.Compare(a.version, b.version) })
	for i := 1; i < len(files); i++ {
		if files[i].version == files[i-1].version {
			return nil, fmt.Errorf("migrations %s and %s have the same version", files[i-1].name, files[i].name)
		}
	}
	return files, nil
}

// record is one row of schema_migrations.
type record struct {
	name     string
	checksum string
}

const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    bigint PRIMARY KEY CHECK (version > 0),
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	checksum   text NOT NULL
)`

// apply is Apply with the migrations read from fsys.
func apply(ctx context.Context, db DB, fsys fs.FS) ([]string, error) {
	files, err := load(fsys)
	if err != nil {
		return nil, err
	}
	applied := []string{}
	for {
		name, err := applyNext(ctx, db, files)
		if err != nil {
			return applied, err
		}
		if name == "" {
			return applied, nil
		}
		applied = append(applied, name)
	}
}

// applyNext applies the first pending migration in one transaction, under
// the advisory lock, and returns its name, or "" when none is pending. It
// checks every applied file first, so a changed file stops everything.
func applyNext(ctx context.Context, db DB, files []file) (name string, err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return "", fmt.Errorf("begin migration: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	// Each statement must see what the previous lock holder committed.
	if _, err := tx.Exec(ctx, `SET TRANSACTION ISOLATION LEVEL READ COMMITTED`); err != nil {
		return "", fmt.Errorf("set isolation: %w", err)
	}
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, LockKey); err != nil {
		return "", fmt.Errorf("take migration lock: %w", err)
	}
	if _, err := tx.Exec(ctx, createTable); err != nil {
		return "", fmt.Errorf("create schema_migrations: %w", err)
	}
	done, err := readApplied(ctx, tx)
	if err != nil {
		return "", err
	}
	next, err := pending(files, done)
	if err != nil {
		return "", err
	}
	if next == nil {
		return "", tx.Commit(ctx)
	}
	if _, err := tx.Exec(ctx, next.sql); err != nil {
		return "", fmt.Errorf("apply migration %s: %w", next.name, err)
	}
	if _, err := tx.Exec(ctx,
		`INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`,
		next.version, next.name, next.checksum); err != nil {
		return "", fmt.Errorf("record migration %s: %w", next.name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return "", fmt.Errorf("commit migration %s: %w", next.name, err)
	}
	return next.name, nil
}

func readApplied(ctx context.Context, tx pgx.Tx) (map[int64]record, error) {
	rows, err := tx.Query(ctx, `SELECT version, name, checksum FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	done := map[int64]record{}
	var (
		v int64
		r record
	)
	_, err = pgx.ForEachRow(rows, []any{&v, &r.name, &r.checksum}, func() error {
		done[v] = r
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return done, nil
}

// pending checks the applied migrations against files and returns the first
// file still to apply, or nil.
func pending(files []file, done map[int64]record) (*file, error) {
	var highest int64 // highest applied version that we know as a file
	known := map[int64]bool{}
	for _, f := range files {
		known[f.version] = true
		r, ok := done[f.version]
		if !ok {
			continue
		}
		highest = f.version
		if r.name != f.name {
			return nil, fmt.Errorf("%w: version %d was applied as %s but the file is now %s",
				ErrChecksum, f.version, r.name, f.name)
		}
		if r.checksum != f.checksum {
			return nil, fmt.Errorf("%w: %s was edited after it was applied (sha256 %s, applied %s); add a new migration instead",
				ErrChecksum, f.name, f.checksum, r.checksum)
		}
	}
	maxFile := int64(0)
	if len(files) > 0 {
		maxFile = files[len(files)-1].version
	}
	for v, r := range done {
		if !known[v] && v < maxFile {
			return nil, fmt.Errorf("migration %s (version %d) is applied but its file is missing", r.name, v)
		}
	}
	for i := range files {
		f := &files[i]
		if _, ok := done[f.version]; ok {
			continue
		}
		if f.version < highest {
			return nil, fmt.Errorf("migration %s is pending but a higher version (%d) is already applied; renumber it", f.name, highest)
		}
		return f, nil
	}
	return nil, nil
}
