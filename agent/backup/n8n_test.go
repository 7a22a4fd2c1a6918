package backup

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/fakes/n8ntest"
	"genesis.dev/fleet/internal/pgserver"
)

const (
	n8nOwnerEmail    = "owner@genesis.invalid"
	n8nOwnerPassword = "Sup3r-secret-pass"
	// n8nToken is the secret of the header credential the webhook
	// workflow sends to the echo server: seeing it there after a restore
	// shows the credential still decrypts.
	n8nToken = "tok-3f9a-kept-through-restore"
	// n8nWebhookCalls is how many executions n8n itself runs and saves;
	// n8nExecutions is the total after the rest are copied by SQL.
	n8nWebhookCalls = 20
	n8nExecutions   = 10_000
)

// TestN8NBackupRestore: a real n8n on a real Postgres keeps its workflows,
// credentials, API key, owner and executions (a) through a backup, the
// destruction of its droplet and a restore on a new one, and (b) through a
// hibernation (clean stop, copy of the whole disk as a snapshot does) and a
// wake on the copy. "Droplets" are directories holding a Postgres cluster
// (pg/) and n8n's user folder (n8n/).
func TestN8NBackupRestore(t *testing.T) {
	if !n8ntest.Real() {
		t.Skip("requires a real n8n (GENESIS_N8N_BIN, which make e2e-n8n sets)")
	}
	ctx := t.Context()
	begin := time.Now()
	root := reachableTempDir(t)
	echo := newEcho(t)

	// Droplet A: Postgres, n8n, an owner, a credential, workflows and
	// executions.
	dropletA := filepath.Join(root, "droplet-a")
	pgA := startCluster(t, filepath.Join(dropletA, "pg"))
	if err := pgA.CreateDatabase(ctx, "n8n_a"); err != nil {
		t.Fatal(err)
	}
	folderA := filepath.Join(dropletA, "n8n")
	if err := os.MkdirAll(folderA, 0o755); err != nil {
		t.Fatal(err)
	}
	// The data dir is the user folder's .n8n, the droplet's n8n_data
	// volume (compose.yaml); n8n rebuilds the rest (.cache: 74 MB of UI
	// assets) at start.
	dataA := filepath.Join(folderA, ".n8n")
	n8nA := startN8N(t, pgA, "n8n_a", folderA)
	boot, err := n8n.New(n8nA.URL, n8n.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key, err := boot.Bootstrap(ctx, n8nOwnerEmail, n8nOwnerPassword)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	c := boot.WithAPIKey(key)
	cred, err := c.CreateCredential(ctx, n8n.NewCredential{
		Name: "Echo token", Type: "httpHeaderAuth",
		Data: json.RawMessage(`{"name":"X-Token","value":"` + n8nToken + `"}`),
	})
	if err != nil {
		t.Fatal(err)
	}
	var hookID string
	for _, spec := range n8nWorkflows(echo.srv.URL, cred) {
		wf, err := c.CreateWorkflow(ctx, spec)
		if err != nil {
			t.Fatalf("create %q: %v", spec.Name, err)
		}
		if spec.Name == "Lead intake" {
			hookID = wf.ID
		}
	}
	if _, err := c.ActivateWorkflow(ctx, hookID); err != nil {
		t.Fatal(err)
	}
	for i := range n8nWebhookCalls {
		callHook(t, n8nA.URL, i)
	}
	urlA := pgA.URL("n8n_a")
	waitExecutions(t, urlA, n8nWebhookCalls)
	if got := echo.hits(); got != n8nWebhookCalls {
		t.Fatalf("echo server saw %d calls with the token, want %d", got, n8nWebhookCalls)
	}
	padExecutions(t, urlA, n8nExecutions)
	before := observeN8N(t, n8nA.URL, c, urlA)
	t.Logf("droplet A: %d workflows, %d executions (%d run by n8n, the rest copied by SQL), database %s, data dir %s",
		len(before.Workflows), before.Executions.Count, n8nWebhookCalls, dbSize(t, urlA), duSize(t, dataA))
	if len(before.Workflows) != 3 || len(before.Credentials) != 1 || before.Executions.Count != n8nExecutions || before.LastExecution.IsZero() {
		t.Fatalf("droplet A before the backup: %d workflows, %d credentials, %d executions, last at %v; want 3, 1, %d, some time",
			len(before.Workflows), len(before.Credentials), before.Executions.Count, before.LastExecution, n8nExecutions)
	}

	// (a) Backup, upload, fetch.
	id := newIdentity(t)
	bind := Binding{Workspace: "acme", Droplet: "d-a", BackupID: "b-n8n-1", Created: time.Now().UTC().Truncate(time.Second), N8NVersion: "1.123.81"}
	work := t.TempDir()
	t0 := time.Now()
	archive, err := Take(ctx, Source{Dump: dumpArgv(t, urlA), DataDir: dataA}, bind, []age.Recipient{id.Recipient()}, work)
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	st := newStore(t)
	t0 = time.Now()
	if err := Upload(ctx, st.srv.Client(), st.url(bind.BackupID), archive); err != nil {
		t.Fatal(err)
	}
	uploaded := time.Since(t0)
	if err := archive.Remove(); err != nil {
		t.Fatal(err)
	}

	// Destroy droplet A: n8n, its database, its cluster, its disk.
	n8nA.Stop()
	dropDatabase(t, pgA, "n8n_a")
	if err := pgA.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(dropletA); err != nil {
		t.Fatal(err)
	}

	// Restore on droplet B: a new cluster, database n8n_b, folder n8n/.
	dropletB := filepath.Join(root, "droplet-b")
	pgB := startCluster(t, filepath.Join(dropletB, "pg"))
	if err := pgB.CreateDatabase(ctx, "n8n_b"); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	path, err := Fetch(ctx, st.srv.Client(), st.url(bind.BackupID), archive.Size, archive.SHA256, work)
	if err != nil {
		t.Fatal(err)
	}
	fetched := time.Since(t0)
	urlB := pgB.URL("n8n_b")
	folderB := filepath.Join(dropletB, "n8n")
	if err := os.MkdirAll(folderB, 0o755); err != nil {
		t.Fatal(err)
	}
	restoreArgs := []string{filepath.Join(pgBin(t), "pg_restore"), "--no-owner", "--single-transaction", "-d", urlB}
	t0 = time.Now()
	if _, err := Restore(ctx, path, []age.Identity{id}, Binding{Workspace: "acme", BackupID: bind.BackupID, Droplet: "d-b"},
		Target{Restore: restoreArgs, DataDir: filepath.Join(folderB, ".n8n"), StagingDir: folderB}); err != nil {
		t.Fatal(err)
	}
	restored := time.Since(t0)
	t.Logf("backup of %d executions: %d bytes encrypted; take %s, upload %s, fetch %s, restore %s",
		before.Executions.Count, archive.Size, took.Round(time.Millisecond), uploaded.Round(time.Millisecond),
		fetched.Round(time.Millisecond), restored.Round(time.Millisecond))

	n8nB := startN8N(t, pgB, "n8n_b", folderB)
	after := checkN8N(t, "after the restore", n8nB.URL, key, urlB, before)
	callHook(t, n8nB.URL, n8nWebhookCalls)
	waitExecutions(t, urlB, after.Executions.Count+1)
	if got := echo.hits(); got != n8nWebhookCalls+1 {
		t.Errorf("after the restore: echo server saw %d calls with the token, want %d", got, n8nWebhookCalls+1)
	}

	// (b) Hibernate droplet B: stop n8n and Postgres cleanly, snapshot the
	// disk, destroy the droplet; wake on a copy of the snapshot.
	beforeSleep := observeN8N(t, n8nB.URL, keyClient(t, n8nB.URL, key), urlB)
	n8nB.Stop()
	if err := pgB.Stop(); err != nil {
		t.Fatal(err)
	}
	snapshot := filepath.Join(root, "snapshot")
	t0 = time.Now()
	if err := copyDisk(dropletB, snapshot); err != nil {
		t.Fatal(err)
	}
	snapshotted := time.Since(t0)
	if err := os.RemoveAll(dropletB); err != nil {
		t.Fatal(err)
	}
	dropletC := filepath.Join(root, "droplet-c")
	t0 = time.Now()
	if err := copyDisk(snapshot, dropletC); err != nil {
		t.Fatal(err)
	}
	t.Logf("hibernate: disk of %s copied to the snapshot in %s, back to a new droplet in %s",
		duSize(t, snapshot), snapshotted.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	pgC := startCluster(t, filepath.Join(dropletC, "pg"))
	urlC := pgC.URL("n8n_b")
	n8nC := startN8N(t, pgC, "n8n_b", filepath.Join(dropletC, "n8n"))
	checkN8N(t, "after the wake", n8nC.URL, key, urlC, beforeSleep)
	callHook(t, n8nC.URL, n8nWebhookCalls+1)
	waitExecutions(t, urlC, beforeSleep.Executions.Count+1)
	if got := echo.hits(); got != n8nWebhookCalls+2 {
		t.Errorf("after the wake: echo server saw %d calls with the token, want %d", got, n8nWebhookCalls+2)
	}
	t.Logf("whole test %s", time.Since(begin).Round(time.Second))
}

// n8nView is what the test compares of an n8n: its workflows (from the
// public API), its credentials (from the owner's REST API, which needs a
// login) and a digest of its executions (from SQL).
type n8nView struct {
	Workflows     []workflowView
	Credentials   []n8ntest.StoredCredential
	Executions    executionsView
	LastExecution time.Time
}

type workflowView struct {
	ID, Name, VersionID string
	Active              bool
	Nodes, Connections  any
	Settings            any
	CreatedAt           time.Time
	UpdatedAt           time.Time
}

type executionsView struct {
	Count                int
	EntityMD5, DataMD5   string
	FirstID, LastID      int
	Successes, Webhooked int
}

func observeN8N(t *testing.T, url string, c *n8n.Client, dbURL string) n8nView {
	t.Helper()
	ctx := t.Context()
	wfs, err := c.ListWorkflows(ctx, n8n.WorkflowFilter{})
	if err != nil {
		t.Fatalf("list workflows: %v", err)
	}
	var v n8nView
	for _, wf := range wfs {
		w := workflowView{ID: wf.ID, Name: wf.Name, VersionID: wf.VersionID, Active: wf.Active, CreatedAt: wf.CreatedAt, UpdatedAt: wf.UpdatedAt}
		for _, f := range []struct {
			raw json.RawMessage
			dst *any
		}{{wf.Nodes, &w.Nodes}, {wf.Connections, &w.Connections}, {wf.Settings, &w.Settings}} {
			if err := json.Unmarshal(f.raw, f.dst); err != nil {
				t.Fatalf("workflow %s: %v", wf.ID, err)
			}
		}
		v.Workflows = append(v.Workflows, w)
	}
	if v.Credentials, err = n8ntest.Credentials(ctx, url, n8nOwnerEmail, n8nOwnerPassword); err != nil {
		t.Fatalf("owner login and credentials: %v", err)
	}
	if v.LastExecution, err = c.LastExecution(ctx); err != nil {
		t.Fatalf("last execution: %v", err)
	}
	conn := pgConnect(t, dbURL)
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, `SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0),
			count(*) FILTER (WHERE status = 'success'), count(*) FILTER (WHERE mode = 'webhook'),
			coalesce(md5(string_agg(e::text, E'\n' ORDER BY id)), '') FROM execution_entity e`).
		Scan(&v.Executions.Count, &v.Executions.FirstID, &v.Executions.LastID, &v.Executions.Successes, &v.Executions.Webhooked, &v.Executions.EntityMD5); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT coalesce(md5(string_agg(d::text, E'\n' ORDER BY "executionId")), '') FROM execution_data d`).
		Scan(&v.Executions.DataMD5); err != nil {
		t.Fatal(err)
	}
	return v
}

// checkN8N compares the n8n at url with want: through the API key made
// before the backup (so it survived), with the owner's password (login).
func checkN8N(t *testing.T, when, url, key, dbURL string, want n8nView) n8nView {
	t.Helper()
	got := observeN8N(t, url, keyClient(t, url, key), dbURL)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s (-before +after):\n%s", when, diff)
	}
	if _, err := keyClient(t, url, "").Bootstrap(t.Context(), n8nOwnerEmail, n8nOwnerPassword); err != nil {
		t.Errorf("%s: the owner cannot log in and make a key: %v", when, err)
	}
	return got
}

// keyClient is a client of the n8n at url with API key key.
func keyClient(t *testing.T, url, key string) *n8n.Client {
	t.Helper()
	c, err := n8n.New(url, n8n.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return c.WithAPIKey(key)
}

// n8nWorkflows are the workflows of droplet A: "Lead intake" (a webhook
// calling the echo server with the header credential, to be activated),
// a scheduled one with a Code node and a manual one, with names and code
// that exercise JSON escaping.
func n8nWorkflows(echoURL string, cred n8n.Credential) []n8n.WorkflowSpec {
	credJSON, _ := json.Marshal(map[string]any{"httpHeaderAuth": map[string]string{"id": cred.ID, "name": cred.Name}})
	return []n8n.WorkflowSpec{{
		Name: "Lead intake",
		Nodes: json.RawMessage(`[
			{"id":"a1","name":"Lead","type":"n8n-nodes-base.webhook","typeVersion":2,"position":[0,0],"webhookId":"5b0c1f9e-4a1d-4c55-9d0e-lead00000001",
			 "parameters":{"path":"lead","httpMethod":"POST","responseMode":"lastNode","options":{}}},
			{"id":"a2","name":"Report","type":"n8n-nodes-base.httpRequest","typeVersion":4.2,"position":[220,0],
			 "parameters":{"method":"POST","url":"` + echoURL + `/track","authentication":"genericCredentialType","genericAuthType":"httpHeaderAuth",
			   "sendBody":true,"specifyBody":"json","jsonBody":"={{ JSON.stringify({ n: $json.body.n, note: 'élan « 📬 »' }) }}","options":{}},
			 "credentials":` + string(credJSON) + `}]`),
		Connections: json.RawMessage(`{"Lead":{"main":[[{"node":"Report","type":"main","index":0}]]}}`),
		Settings:    json.RawMessage(`{"executionOrder":"v1","saveDataSuccessExecution":"all"}`),
	}, {
		Name: "Récapitulatif « hebdo » 📬",
		Nodes: json.RawMessage(`[
			{"id":"b1","name":"Weekly","type":"n8n-nodes-base.scheduleTrigger","typeVersion":1.2,"position":[0,0],
			 "parameters":{"rule":{"interval":[{"field":"weeks","triggerAtDay":[1],"triggerAtHour":7}]}}},
			{"id":"b2","name":"Code","type":"n8n-nodes-base.code","typeVersion":2,"position":[220,0],
			 "parameters":{"jsCode":"return items.map(i => ({json: {\"a\\nb\": i.json.x ?? null, t: '\\u00e9\\t\"'}}));"}}]`),
		Connections: json.RawMessage(`{"Weekly":{"main":[[{"node":"Code","type":"main","index":0}]]}}`),
		Settings:    json.RawMessage(`{"executionOrder":"v1","timezone":"Europe/Paris"}`),
	}, {
		Name: "By hand",
		Nodes: json.RawMessage(`[
			{"id":"c1","name":"Start","type":"n8n-nodes-base.manualTrigger","typeVersion":1,"position":[0,0],"parameters":{}},
			{"id":"c2","name":"Set","type":"n8n-nodes-base.set","typeVersion":3.4,"position":[220,0],
			 "parameters":{"assignments":{"assignments":[{"id":"s1","name":"greeting","value":"bonjour","type":"string"}]},"options":{}}}]`),
		Connections: json.RawMessage(`{"Start":{"main":[[{"node":"Set","type":"main","index":0}]]}}`),
	}}
}

// callHook POSTs to the Lead intake webhook and checks that the workflow
// ran to its end (the echo server's answer is the last node's output). A
// just-started n8n may register its webhooks a moment after it is ready,
// so a 404 is retried for a while.
func callHook(t *testing.T, baseURL string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, baseURL+"/webhook/lead", strings.NewReader(fmt.Sprintf(`{"n":%d}`, n)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound && time.Now().Before(deadline) {
			time.Sleep(250 * time.Millisecond)
			continue
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"tracked":`+fmt.Sprint(n)) {
			t.Fatalf("webhook call %d: %d %s", n, resp.StatusCode, body)
		}
		return
	}
}

// echo is the outside service the webhook workflow reports to; it counts
// the calls that carry the credential's token.
type echo struct {
	srv *httptest.Server
	mu  sync.Mutex
	ok  int
}

func newEcho(t *testing.T) *echo {
	e := &echo{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			N int `json:"n"`
		}
		if r.Header.Get("X-Token") != n8nToken || json.NewDecoder(r.Body).Decode(&in) != nil {
			http.Error(w, `{"error":"bad token or body"}`, http.StatusUnauthorized)
			return
		}
		e.mu.Lock()
		e.ok++
		e.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"tracked":%d}`, in.N)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *echo) hits() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ok
}

// startN8N starts a real n8n on database db of srv with user folder dir.
// Pruning is off (n8n would otherwise soft-delete executions past 10,000
// or 14 days, which is retention, not loss) and every execution is saved.
func startN8N(t *testing.T, srv *pgserver.Server, db, dir string) *n8ntest.Instance {
	t.Helper()
	return n8ntest.StartWith(t, n8ntest.Options{
		UserFolder: dir,
		Postgres:   &n8ntest.PG{Host: "127.0.0.1", Port: srv.Port(), DB: db, User: pgserver.Superuser},
		Env:        []string{"EXECUTIONS_DATA_SAVE_ON_SUCCESS=all", "EXECUTIONS_DATA_PRUNE=false"},
	})
}

// startCluster starts (or, when dir holds one, restarts) a Postgres
// cluster kept in dir: a clean stop leaves it whole, as on a droplet.
func startCluster(t *testing.T, dir string) *pgserver.Server {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil { // the postgres user must reach dir
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	srv, err := pgserver.Start(ctx, pgserver.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Stop() })
	return srv
}

// reachableTempDir is a temporary directory the postgres user can enter
// (t.TempDir's are 0700 and the server refuses to run as root).
func reachableTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "n8n-backup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// pgConnect connects to url; the caller closes the connection (a database
// with sessions cannot be dropped).
func pgConnect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

func dropDatabase(t *testing.T, srv *pgserver.Server, db string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), "DROP DATABASE "+pgx.Identifier{db}.Sanitize()); err != nil {
		t.Fatal(err)
	}
}

// waitExecutions waits until n8n has saved want executions (it saves
// them after it answers the webhook).
func waitExecutions(t *testing.T, dbURL string, want int) {
	t.Helper()
	conn := pgConnect(t, dbURL)
	defer conn.Close(context.Background())
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM execution_entity WHERE finished`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == want {
			return
		}
		if n > want || time.Now().After(deadline) {
			t.Fatalf("%d finished executions, want %d", n, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// padExecutions copies n8n's newest execution (entity and data rows) by
// SQL until there are total executions. Each copy's run data gets 1 KiB of
// random hex in its user-agent string, so that the copies, like real
// executions, don't compress to nothing in the dump.
func padExecutions(t *testing.T, dbURL string, total int) {
	t.Helper()
	ctx := t.Context()
	conn := pgConnect(t, dbURL)
	defer conn.Close(context.Background())
	cols := func(table, skip string) []string {
		var s []string
		if err := conn.QueryRow(ctx, `SELECT array_agg(quote_ident(column_name) ORDER BY ordinal_position)
			FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1 AND column_name <> $2`, table, skip).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	entity := strings.Join(cols("execution_entity", "id"), ", ")
	var data, dataSel []string
	for _, c := range cols("execution_data", "executionId") {
		data = append(data, c)
		if c == "data" {
			c = `replace(data, '"Go-http-client/1.1"', '"Go-http-client/1.1 ' ||
				(SELECT string_agg(md5(random()::text || ins.id || i), '') FROM generate_series(1, 32) i) || '"')`
		}
		dataSel = append(dataSel, c)
	}
	var have, src int
	if err := conn.QueryRow(ctx, `SELECT count(*), max(id) FROM execution_entity`).Scan(&have, &src); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	q := fmt.Sprintf(`WITH ins AS (
			INSERT INTO execution_entity (%[1]s) SELECT %[1]s FROM execution_entity CROSS JOIN generate_series(1, $1) WHERE id = $2 RETURNING id)
		INSERT INTO execution_data ("executionId", %[2]s) SELECT ins.id, %[3]s FROM ins CROSS JOIN execution_data WHERE "executionId" = $2`,
		entity, strings.Join(data, ", "), strings.Join(dataSel, ", "))
	tag, err := conn.Exec(ctx, q, total-have, src)
	if err != nil {
		t.Fatal(err)
	}
	if tag.RowsAffected() != int64(total-have) {
		t.Fatalf("copied %d execution data rows, want %d", tag.RowsAffected(), total-have)
	}
	var changed bool
	if err := conn.QueryRow(ctx, `SELECT data LIKE '%"Go-http-client/1.1 %' FROM execution_data ORDER BY "executionId" DESC LIMIT 1`).Scan(&changed); err != nil || !changed {
		t.Fatalf("the copies' run data did not get their random user agent (%v)", err)
	}
	t.Logf("copied execution %d %d times by SQL in %s", src, total-have, time.Since(t0).Round(time.Millisecond))
}

func dbSize(t *testing.T, dbURL string) string {
	t.Helper()
	var s string
	conn := pgConnect(t, dbURL)
	defer conn.Close(context.Background())
	if err := conn.QueryRow(t.Context(), `SELECT pg_size_pretty(pg_database_size(current_database()))`).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func duSize(t *testing.T, dir string) string {
	t.Helper()
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// copyDisk copies a droplet's directory as a snapshot does: directories,
// regular files and symlinks with their modes and owners (Postgres
// refuses a data directory it does not own). Sockets are left out.
func copyDisk(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(target, 0o700); err != nil {
				return err
			}
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, target); err != nil {
				return err
			}
		case d.Type().IsRegular():
			if err := copyRegular(p, target); err != nil {
				return err
			}
		default:
			return nil
		}
		st := fi.Sys().(*syscall.Stat_t)
		if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		return os.Chmod(target, fi.Mode().Perm())
	})
}

func copyRegular(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
