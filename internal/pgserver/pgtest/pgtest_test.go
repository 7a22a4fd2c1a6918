package pgtest

import (
	"context"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { Main(m) }

// TestNew checks that each call gives a distinct, empty, usable database and
// that the database is gone once its test ends.
func TestNew(t *testing.T) {
	var names []string
	for _, sub := range []string{"first", "second"} {
		t.Run(sub, func(t *testing.T) {
			ctx := t.Context()
			conn, err := pgx.Connect(ctx, New(t))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var name string
			var tables int
			err = conn.QueryRow(ctx, `SELECT current_database(),
				(SELECT count(*) FROM pg_tables WHERE schemaname = 'public')`).Scan(&name, &tables)
			if err != nil {
				t.Fatal(err)
			}
			if tables != 0 {
				t.Errorf("new database has %d tables, want 0", tables)
			}
			if _, err := conn.Exec(ctx, `CREATE TABLE t (v int)`); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		})
	}
	if len(names) != 2 || names[0] == names[1] {
		t.Fatalf("databases = %q, want two distinct names", names)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var left int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_database WHERE datname = ANY($1)`, names).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 0 {
		t.Errorf("%d test databases remain after their tests ended", left)
	}
}

func TestDBName(t *testing.T) {
	valid := regexp.MustCompile(`^t_[a-z0-9_]+_[0-9a-f]{12}$`)
	tests := []struct {
		test string
		want string // prefix before the random suffix
	}{
		{"TestX", "t_testx"},
		{"TestSchema/bad_state#01", "t_testschema_bad_state_01"},
		{"TestVeryLongNameThatGoesOnAndOnAndOnForeverAndEver/sub", "t_testverylongnamethatgoesonandonandonfo"},
	}
	for _, tt := range tests {
		t.Run(tt.test, func(t *testing.T) {
			got := dbName(tt.test)
			if !valid.MatchString(got) || len(got) > 63 {
				t.Fatalf("dbName(%q) = %q: not a valid short identifier", tt.test, got)
			}
			if diff := cmp.Diff(got[:len(got)-13], tt.want); diff != "" {
				t.Errorf("dbName(%q) prefix (-got +want):\n%s", tt.test, diff)
			}
		})
	}
}

func TestWithDatabase(t *testing.T) {
	tests := []struct {
		base, want string
	}{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "postgres://postgres@127.0.0.1:5432/t_x?sslmode=disable"},
		{"postgresql://u:p@db.example/app", "postgresql://u:p@db.example/t_x"},
		{"host=127.0.0.1 port=5432 dbname=app", "host=127.0.0.1 port=5432 dbname=app dbname=t_x"},
	}
	for _, tt := range tests {
		t.Run(tt.base, func(t *testing.T) {
			got := withDatabase(tt.base, "t_x")
			if diff := cmp.Diff(got, tt.want); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
			cfg, err := pgx.ParseConfig(got)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Database != "t_x" {
				t.Errorf("pgx reads database %q from %q, want t_x", cfg.Database, got)
			}
		})
	}
}
