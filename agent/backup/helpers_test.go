package backup

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/internal/pgserver/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func pgBin(tb testing.TB) string { return pgtest.ClientBin(tb) }

func dumpArgv(tb testing.TB, url string) []string { return pgtest.DumpArgv(tb, url) }

func restoreArgv(tb testing.TB, url string) []string { return pgtest.RestoreArgv(tb, url) }

// n8nSchema is a cut of n8n's tables: workflows with JSON columns and
// executions.
const n8nSchema = `
CREATE TABLE workflow_entity (
	id varchar(36) PRIMARY KEY,
	name varchar(128) NOT NULL,
	active boolean NOT NULL,
	nodes json NOT NULL,
	connections json NOT NULL,
	settings json,
	"createdAt" timestamptz(3) NOT NULL DEFAULT now(),
	"updatedAt" timestamptz(3) NOT NULL DEFAULT now()
);
CREATE TABLE execution_entity (
	id serial PRIMARY KEY,
	"workflowId" varchar(36) NOT NULL REFERENCES workflow_entity(id) ON DELETE CASCADE,
	finished boolean NOT NULL,
	mode varchar NOT NULL,
	status varchar NOT NULL,
	data jsonb NOT NULL,
	"startedAt" timestamptz(3),
	"stoppedAt" timestamptz(3)
);
CREATE INDEX idx_execution_workflow ON execution_entity ("workflowId", id);
`

// seed creates the n8n-like tables in the database at url with three
// workflows (JSON with unicode, escapes and nesting) and executions rows.
func seed(tb testing.TB, url string, executions int) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, n8nSchema); err != nil {
		tb.Fatal(err)
	}
	workflows := []struct{ id, name, nodes string }{
		{"wf-1", "Lead intake", `[{"name":"Webhook","type":"n8n-nodes-base.webhook","parameters":{"path":"lead","httpMethod":"POST"},"position":[250,300]}]`},
		{"wf-2", "Récapitulatif « hebdo » 📬", `[{"name":"Cron","type":"n8n-nodes-base.cron","parameters":{"rule":{"interval":[{"field":"weeks"}]}}},{"name":"Code","parameters":{"jsCode":"return items.map(i => ({json: {\"a\\nb\": i.json.x ?? null}}));"}}]`},
		{"wf-3", "Empty", `[]`},
	}
	for _, w := range workflows {
		if _, err := conn.Exec(ctx, `INSERT INTO workflow_entity (id, name, active, nodes, connections, settings, "createdAt", "updatedAt")
			VALUES ($1, $2, $3, $4::json, '{"Webhook":{"main":[[{"node":"Code","type":"main","index":0}]]}}', '{"executionOrder": "v1",  "saveManualExecutions" :true}', '2025-01-02T03:04:05.678Z', '2025-06-07T08:09:10.111Z')`,
			w.id, w.name, w.id != "wf-3", w.nodes); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := conn.Exec(ctx, `INSERT INTO execution_entity ("workflowId", finished, mode, status, data, "startedAt", "stoppedAt")
		SELECT 'wf-' || (1 + g % 2), g % 7 <> 0, 'trigger', CASE WHEN g % 7 = 0 THEN 'error' ELSE 'success' END,
			jsonb_build_object('resultData', jsonb_build_object('runData', jsonb_build_object('Webhook', jsonb_build_array(jsonb_build_object('n', g, 'body', repeat('x', g % 300))))), 'version', 1),
			timestamptz '2025-03-01 00:00:00Z' + g * interval '1 minute', timestamptz '2025-03-01 00:00:00Z' + g * interval '1 minute' + interval '850 milliseconds'
		FROM generate_series(1, $1::int) g`, executions); err != nil {
		tb.Fatal(err)
	}
}

// dbState is what the tests compare of a database: row counts, the
// workflows' JSON as stored (json keeps its text) and a digest of every
// execution row.
func dbState(tb testing.TB, url string) string {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('workflow_entity') IS NOT NULL`).Scan(&exists); err != nil {
		tb.Fatal(err)
	}
	if !exists {
		return "(no tables)"
	}
	var b strings.Builder
	rows, err := conn.Query(ctx, `SELECT id, name, active, nodes::text, connections::text, settings::text, "createdAt"::text, "updatedAt"::text FROM workflow_entity ORDER BY id`)
	if err != nil {
		tb.Fatal(err)
	}
	for rows.Next() {
		var id, name, nodes, conns, settings, created, updated string
		var active bool
		if err := rows.Scan(&id, &name, &active, &nodes, &conns, &settings, &created, &updated); err != nil {
			tb.Fatal(err)
		}
		fmt.Fprintf(&b, "workflow %s %q active=%v nodes=%s connections=%s settings=%s %s %s\n", id, name, active, nodes, conns, settings, created, updated)
	}
	if err := rows.Err(); err != nil {
		tb.Fatal(err)
	}
	var n int
	var digest string
	if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(md5(string_agg(e::text, E'\n' ORDER BY id)), '') FROM execution_entity e`).Scan(&n, &digest); err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(&b, "executions %d %s\n", n, digest)
	var seq int64
	if err := conn.QueryRow(ctx, `SELECT last_value FROM execution_entity_id_seq`).Scan(&seq); err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(&b, "execution id sequence %d\n", seq)
	return b.String()
}

// dirState lists a tree: every entry's relative path, type, permissions
// and content or link target.
func dirState(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			t, _ := os.Readlink(p)
			out[rel] = "-> " + t
		case fi.IsDir():
			out[rel] = fmt.Sprintf("dir %v", fi.Mode().Perm())
		default:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			out[rel] = fmt.Sprintf("file %v %s %d bytes sha256 %x", fi.Mode().Perm(), fi.ModTime().UTC().Format(time.RFC3339Nano), len(b), sum[:8])
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// n8nDataDir makes a data directory like n8n's: config with an encryption
// key, a nested binary-data file, an empty dir, a relative symlink.
func n8nDataDir(tb testing.TB, root, key string) string {
	tb.Helper()
	dir := filepath.Join(root, "n8n")
	mtime := time.Date(2025, 4, 5, 6, 7, 8, 9000, time.UTC)
	// A binary file of random bytes spreads the data across several of
	// age's 64 KiB chunks.
	random := make([]byte, 300<<10)
	rand.Read(random)
	for p, content := range map[string]string{
		"config":                          `{"encryptionKey": "` + key + `"}`,
		"binaryData/wf-1/exec-7/data.bin": "\x00\x01binary\xff",
		"binaryData/wf-1/exec-8/big.bin":  string(random),
		"nodes/package.json":              `{"name":"installed-nodes","private":true}`,
	} {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chtimes(full, mtime, mtime); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o750); err != nil {
		tb.Fatal(err)
	}
	if err := os.Symlink("../config", filepath.Join(dir, "nodes", "config-link")); err != nil {
		tb.Fatal(err)
	}
	return dir
}

func newIdentity(tb testing.TB) *age.X25519Identity {
	tb.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// tempEntries lists what is left in dir (temporary files and staging
// directories must not be).
func tempEntries(tb testing.TB, dir string) []string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
