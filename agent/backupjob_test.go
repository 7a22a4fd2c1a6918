package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"filippo.io/age"
	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/agent/backup"
	"genesis.dev/fleet/internal/objtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
)

// The backup tests run a real Postgres (n8n's database) with the real
// pg_dump and pg_restore, object storage over HTTP with presigned URLs
// (objtest) and the fake reconciler's backup routes.
func TestMain(m *testing.M) { pgtest.Main(m) }

func pgBin(tb testing.TB) string { return pgtest.ClientBin(tb) }

func dumpArgv(tb testing.TB, url string) []string { return pgtest.DumpArgv(tb, url) }

func restoreArgv(tb testing.TB, url string) []string { return pgtest.RestoreArgv(tb, url) }

func pgExec(tb testing.TB, url, sql string, args ...any) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatal(err)
	}
}

// seedN8N gives the database at url a workflow table holding names.
func seedN8N(tb testing.TB, url string, names ...string) {
	tb.Helper()
	pgExec(tb, url, `CREATE TABLE workflow_entity (id serial PRIMARY KEY, name text NOT NULL)`)
	for _, n := range names {
		pgExec(tb, url, `INSERT INTO workflow_entity (name) VALUES ($1)`, n)
	}
}

// workflowNames lists the workflows in the database at url, sorted.
func workflowNames(tb testing.TB, url string) ([]string, error) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT name FROM workflow_entity ORDER BY name`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// n8nData is what n8n runs on: its workflows and its data directory's
// config.
func n8nData(tb testing.TB, url, dataDir string) string {
	tb.Helper()
	names, err := workflowNames(tb, url)
	if err != nil {
		tb.Fatal(err)
	}
	config, err := os.ReadFile(filepath.Join(dataDir, "config"))
	if err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("%q config=%s", names, config)
}

// makeDataDir makes an n8n data directory whose config says config.
func makeDataDir(tb testing.TB, config string) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "n8n")
	if err := os.MkdirAll(filepath.Join(dir, "binaryData"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte(config), 0o600); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// events is the order in which n8n was stopped, started and the inner
// applier ran.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.list = append(e.list, s)
	e.mu.Unlock()
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

func (e *events) count(s string) int {
	n := 0
	for _, x := range e.get() {
		if x == s {
			n++
		}
	}
	return n
}

// wait waits until ok holds for the events.
func (e *events) wait(t testing.TB, what string, ok func([]string) bool) []string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if ev := e.get(); ok(ev) {
			return ev
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s; events %q", what, e.get())
	return nil
}

// n8nApplier is the inner Applier: it records what n8n holds when the
// manifest is applied.
type n8nApplier struct {
	w *backupWorld
}

func (a n8nApplier) Apply(_ context.Context, m *schema.Manifest, _ map[string]json.RawMessage) error {
	a.w.events.add(fmt.Sprintf("apply %d: %s", m.Version, n8nData(a.w.h.t, a.w.dbURL, a.w.dataDir)))
	return nil
}

// backupWorld is a droplet with backups on: n8n's database and data
// directory (what a backup holds and a restore replaces), object storage
// behind the fake reconciler, and the workspace's backup identity.
type backupWorld struct {
	h       *harness
	objects *objtest.Store
	dbURL   string
	dataDir string
	wsID    *age.X25519Identity
	events  *events
}

func newBackupWorld(t *testing.T) *backupWorld {
	t.Helper()
	h := newHarness(t)
	objects := objtest.New(t, time.Now, errNoObject)
	h.fake.useObjects(objects)
	wsID, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	w := &backupWorld{h: h, objects: objects, dbURL: pgtest.New(t), dataDir: makeDataDir(t, "old"), wsID: wsID, events: &events{}}
	seedN8N(t, w.dbURL, "old workflow")
	return w
}

// start runs the droplet's agent; mod adjusts its backup config.
func (w *backupWorld) start(token string, mod func(*BackupConfig)) *running {
	w.h.t.Helper()
	t := w.h.t
	return w.h.start(w.h.fx.droplet, token, n8nApplier{w}, func(c *Config) {
		c.Backup = &BackupConfig{
			Source: backup.Source{Dump: dumpArgv(t, w.dbURL), DataDir: w.dataDir},
			Target: backup.Target{Restore: restoreArgv(t, w.dbURL), DataDir: w.dataDir},
			Stop: func(context.Context) error {
				w.events.add("stop")
				return nil
			},
			Start: func(context.Context) error {
				w.events.add("start")
				return nil
			},
			FirstWithin: 10 * time.Millisecond,
			Retry:       50 * time.Millisecond,
		}
		if mod != nil {
			mod(c.Backup)
		}
	})
}

func (w *backupWorld) token() string { return w.h.fake.token(w.h.fx.workspace, "genesis-ws-acme") }

// publish signs manifest v with backup section mb and publishes it.
func (w *backupWorld) publish(v int64, mb *schema.ManifestBackup) {
	m := w.h.fx.manifest(v)
	m.Backup = mb
	w.h.fake.publish(w.h.fx.droplet, w.h.fx.sign(m, nil))
}

// policy is a backup section without a restore.
func (w *backupWorld) policy(every int64) *schema.ManifestBackup {
	return &schema.ManifestBackup{EverySeconds: every, Recipients: []string{w.wsID.Recipient().String()}}
}

// download GETs key from storage.
func (w *backupWorld) download(key string) []byte {
	w.h.t.Helper()
	url, _ := w.objects.PresignGet(context.Background(), key, time.Minute)
	code, body := objtest.Do(w.h.t, http.MethodGet, url, nil)
	if code != http.StatusOK {
		w.h.t.Fatalf("GET %s: %d", key, code)
	}
	return body
}

// takeBackup takes a backup, bound to b, of another droplet's n8n (its
// workflow "restored workflow", config "restored"), encrypted to the
// workspace's identity, and stores it. The fake does not record it.
func (w *backupWorld) takeBackup(b backup.Binding) fakeBackup {
	t := w.h.t
	t.Helper()
	src := pgtest.New(t)
	seedN8N(t, src, "restored workflow")
	arch, err := backup.Take(context.Background(), backup.Source{Dump: dumpArgv(t, src), DataDir: makeDataDir(t, "restored")}, b,
		[]age.Recipient{w.wsID.Recipient()}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(arch.Path)
	if err != nil {
		t.Fatal(err)
	}
	key := w.h.fx.workspace + "/" + b.BackupID + ".age"
	w.objects.Put(t, key, data)
	return fakeBackup{ID: b.BackupID, Workspace: w.h.fx.workspace, Droplet: b.Droplet, Key: key, State: "good",
		Size: arch.Size, SHA256: arch.SHA256, Started: b.Created, Finished: b.Created}
}

// sealIdentity seals the workspace's backup identity for a restore of id
// to recipient, bound to (workspace, droplet).
func (w *backupWorld) sealIdentity(recipient age.Recipient, workspace, droplet, id string) string {
	w.h.t.Helper()
	data, err := json.Marshal(w.wsID.String())
	if err != nil {
		w.h.t.Fatal(err)
	}
	sealed, _, err := sealing.Seal(recipient, schema.SealedCredential{Workspace: workspace, Droplet: droplet, Name: schema.BackupSlot(id), Data: data})
	if err != nil {
		w.h.t.Fatal(err)
	}
	return sealed
}

// restoring is a backup section that restores b with identity (sealed).
func (w *backupWorld) restoring(b fakeBackup, identity string) *schema.ManifestBackup {
	mb := w.policy(86400)
	mb.Restore = &schema.ManifestRestore{ID: b.ID, SHA256: b.SHA256, Size: b.Size, Created: b.Started.UTC(), Identity: identity}
	return mb
}

// goodBackup is a backup of this workspace by another droplet, recorded
// good by the fake, and a restore of it sealed to this droplet.
func (w *backupWorld) goodBackup() (fakeBackup, *schema.ManifestBackup) {
	fx := w.h.fx
	id := "b-20250101T000000Z-0badcafe"
	b := w.takeBackup(backup.Binding{Workspace: fx.workspace, Droplet: "1111", BackupID: id, Created: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)})
	w.h.fake.addBackup(b)
	return b, w.restoring(b, w.sealIdentity(fx.recipient, fx.workspace, fx.droplet, id))
}

// applierFunc is an Applier of a function.
type applierFunc func(ctx context.Context, m *schema.Manifest, creds map[string]json.RawMessage) error

func (f applierFunc) Apply(ctx context.Context, m *schema.Manifest, creds map[string]json.RawMessage) error {
	return f(ctx, m, creds)
}

// readBackupRecord reads backup.json of the agent's state directory.
func readBackupRecord(t *testing.T, dir string) backupRecord {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, backupFile))
	if err != nil {
		t.Fatal(err)
	}
	var rec backupRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestBackupsOnSchedule: the manifest's schedule makes the agent back up
// n8n's database and data directory to storage through a presigned URL;
// the reconciler records it good with the object's size and SHA-256, the
// workspace's identity restores it, the heartbeat reports it, and the
// next one follows a schedule's interval later.
func TestBackupsOnSchedule(t *testing.T) {
	w := newBackupWorld(t)
	fx := w.h.fx
	r := w.start(w.token(), nil)
	w.publish(1, w.policy(1))

	bs := w.h.fake.waitBackups(t, "two good backups", 20*time.Second, func(bs []fakeBackup) bool { return len(backupsIn(bs, "good")) >= 2 })
	if failed := backupsIn(bs, "failed"); len(failed) > 0 {
		t.Errorf("failed backups: %+v", failed)
	}
	good := backupsIn(bs, "good")
	first := good[0]
	if first.Workspace != fx.workspace || first.Droplet != fx.droplet {
		t.Errorf("first backup %+v, want of %s by %s", first, fx.workspace, fx.droplet)
	}
	obj := w.download(first.Key)
	if int64(len(obj)) != first.Size || sha(obj) != first.SHA256 {
		t.Errorf("stored object is %d bytes, sha256 %s; the agent reported %d bytes, %s", len(obj), sha(obj), first.Size, first.SHA256)
	}
	if gap, every := good[1].Started.Sub(first.Finished), time.Second; gap < every {
		t.Errorf("second backup started %v after the first finished, want at least the schedule's %v", gap, every)
	}

	// The object is n8n's data, for the workspace's identity only.
	path := filepath.Join(t.TempDir(), "b.age")
	if err := os.WriteFile(path, obj, 0o600); err != nil {
		t.Fatal(err)
	}
	other, _ := age.GenerateX25519Identity()
	if _, err := backup.Restore(context.Background(), path, []age.Identity{other}, backup.Binding{Workspace: fx.workspace, BackupID: first.ID},
		backup.Target{Restore: []string{"false"}}); err == nil {
		t.Error("another identity opened the backup")
	}
	fresh := pgtest.New(t)
	got, err := backup.Restore(context.Background(), path, []age.Identity{w.wsID}, backup.Binding{Workspace: fx.workspace, BackupID: first.ID},
		backup.Target{Restore: restoreArgv(t, fresh)})
	if err != nil {
		t.Fatal(err)
	}
	if got.Workspace != fx.workspace || got.Droplet != fx.droplet || got.BackupID != first.ID {
		t.Errorf("binding %+v", got)
	}
	if names, err := workflowNames(t, fresh); err != nil || !slices.Equal(names, []string{"old workflow"}) {
		t.Errorf("restored workflows %q, %v", names, err)
	}

	hb := w.h.fake.waitBeat(t, "backup.last_ok", func(hb schema.Heartbeat) bool { return hb.Backup != nil && !hb.Backup.LastOK.IsZero() })
	if hb.Backup.LastError != "" || hb.Backup.Restored != "" || hb.Backup.RestoreError != "" {
		t.Errorf("heartbeat backup %+v", hb.Backup)
	}
	if w.events.count("stop") != 0 {
		t.Errorf("n8n stopped for a backup: %q", w.events.get())
	}

	r.stop()
	if rec := readBackupRecord(t, w.h.dir); rec.LastOK.IsZero() {
		t.Errorf("backup.json %+v: no last_ok", rec)
	}
	if left := tempEntries(t, filepath.Join(w.h.dir, "backup-tmp")); len(left) != 0 {
		t.Errorf("backup-tmp holds %q", left)
	}
	for _, b := range w.h.fake.backupList() {
		if b.State == "pending" {
			t.Errorf("backup %s left pending", b.ID)
		}
	}
}

func tempEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestBackupStorageDown: with storage down a backup fails, is reported
// failed (never good) and goes out in the heartbeat; the agent goes on
// applying manifests, and a try after storage is back succeeds.
func TestBackupStorageDown(t *testing.T) {
	w := newBackupWorld(t)
	w.objects.Down.Store(true)
	w.start(w.token(), nil)
	w.publish(1, w.policy(1))

	bs := w.h.fake.waitBackups(t, "a failed backup", 20*time.Second, func(bs []fakeBackup) bool { return len(backupsIn(bs, "failed")) > 0 })
	for _, b := range backupsIn(bs, "failed") {
		if !strings.Contains(b.Error, "503") {
			t.Errorf("backup %s failed with %q, want storage's 503", b.ID, b.Error)
		}
	}
	hb := w.h.fake.waitBeat(t, "backup.last_error", func(hb schema.Heartbeat) bool { return hb.Backup != nil && hb.Backup.LastError != "" })
	if !strings.Contains(hb.Backup.LastError, "503") || !hb.Backup.LastOK.IsZero() {
		t.Errorf("heartbeat backup %+v, want a 503 and no last_ok", hb.Backup)
	}
	if strings.Contains(hb.Backup.LastError, "X-Signature") {
		t.Errorf("heartbeat shows a presigned URL: %q", hb.Backup.LastError)
	}

	// The agent runs on: a new manifest is applied.
	w.publish(2, w.policy(1))
	w.h.fake.waitBeat(t, "applied version 2", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 2 })
	if good := backupsIn(w.h.fake.backupList(), "good"); len(good) != 0 {
		t.Fatalf("good backups with storage down: %+v", good)
	}

	w.objects.Down.Store(false)
	bs = w.h.fake.waitBackups(t, "a good backup after storage is back", 20*time.Second, func(bs []fakeBackup) bool { return len(backupsIn(bs, "good")) > 0 })
	good := backupsIn(bs, "good")[0]
	if obj := w.download(good.Key); sha(obj) != good.SHA256 {
		t.Errorf("stored object sha256 %s, reported %s", sha(obj), good.SHA256)
	}
	w.h.fake.waitBeat(t, "backup.last_ok and no last_error", func(hb schema.Heartbeat) bool {
		return hb.Backup != nil && !hb.Backup.LastOK.IsZero() && hb.Backup.LastError == ""
	})
}

// TestRestoreBeforeApply: a manifest that names a backup restores it into
// n8n's database and data directory, n8n stopped, before the manifest is
// applied; the restore is reported, and neither the next manifest nor a
// restart restores it again.
func TestRestoreBeforeApply(t *testing.T) {
	w := newBackupWorld(t)
	fx := w.h.fx
	b, section := w.goodBackup()
	r := w.start(w.token(), func(c *BackupConfig) { c.FirstWithin = time.Hour })
	w.publish(1, section)

	hb := w.h.fake.waitBeat(t, "applied version 1", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 1 })
	want := []string{"stop", "start", `apply 1: ["restored workflow"] config=restored`}
	if diff := cmp.Diff(want, w.events.get()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]fakeRestore{{Workspace: fx.workspace, Droplet: fx.droplet, ID: b.ID}}, w.h.fake.restoreList()); diff != "" {
		t.Errorf("restores (-want +got):\n%s", diff)
	}
	hb = w.h.fake.waitBeat(t, "backup.restored", func(hb schema.Heartbeat) bool { return hb.Backup != nil && hb.Backup.Restored == b.ID })
	if hb.Backup.RestoreError != "" {
		t.Errorf("heartbeat backup %+v", hb.Backup)
	}

	// n8n works on; the next manifest names the same restore.
	pgExec(t, w.dbURL, `INSERT INTO workflow_entity (name) VALUES ('made after the restore')`)
	w.publish(2, section)
	w.h.fake.waitBeat(t, "applied version 2", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 2 })
	after := `apply 2: ["made after the restore" "restored workflow"] config=restored`
	if diff := cmp.Diff(append(want, after), w.events.get()); diff != "" {
		t.Errorf("events after version 2 (-want +got):\n%s", diff)
	}

	// A restart reapplies version 2 and does not restore.
	r.stop()
	if rec := readBackupRecord(t, w.h.dir); rec.Restored != b.ID || rec.Refused != "" {
		t.Errorf("backup.json %+v", rec)
	}
	w.start("", func(c *BackupConfig) { c.FirstWithin = time.Hour })
	w.events.wait(t, "a reapply after the restart", func(ev []string) bool { return len(ev) >= 5 })
	w.h.fake.waitBeat(t, "restored after the restart", func(hb schema.Heartbeat) bool {
		return hb.Backup != nil && hb.Backup.Restored == b.ID && hb.AppliedVersion == 2 && hb.Seq > 0
	})
	if diff := cmp.Diff(append(want, after, after), w.events.get()); diff != "" {
		t.Errorf("events after the restart (-want +got):\n%s", diff)
	}
	if n := len(w.h.fake.restoreList()); n != 1 {
		t.Errorf("%d restores reported, want 1", n)
	}
}

// TestRestoreRefused: a backup that is not this workspace's, cannot be
// opened by this droplet or is corrupt is refused: n8n keeps its data,
// the refusal is reported, the manifest is applied, and the restore is not
// tried again.
func TestRestoreRefused(t *testing.T) {
	id := "b-20250101T000000Z-0badcafe"
	created := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		// section stores what the case needs and returns the manifest's
		// backup section.
		section func(w *backupWorld) *schema.ManifestBackup
		want    string // in the reported error
	}{
		{
			name: "backup of another workspace",
			section: func(w *backupWorld) *schema.ManifestBackup {
				b := w.takeBackup(backup.Binding{Workspace: "ws-other", Droplet: "1111", BackupID: id, Created: created})
				w.h.fake.addBackup(b)
				return w.restoring(b, w.sealIdentity(w.h.fx.recipient, w.h.fx.workspace, w.h.fx.droplet, id))
			},
			want: `backup is bound to another workspace or backup id: binding says workspace "ws-other", want "ws-acme"`,
		},
		{
			name: "identity sealed for another droplet",
			section: func(w *backupWorld) *schema.ManifestBackup {
				b := w.takeBackup(backup.Binding{Workspace: w.h.fx.workspace, Droplet: "1111", BackupID: id, Created: created})
				w.h.fake.addBackup(b)
				return w.restoring(b, w.sealIdentity(w.h.fx.recipient, w.h.fx.workspace, "9999", id))
			},
			want: "open the restore identity: credential backup:" + id + ": credential is bound to another slot (sealed for ws-acme/9999/backup:" + id + ")",
		},
		{
			name: "identity sealed for another backup",
			section: func(w *backupWorld) *schema.ManifestBackup {
				b := w.takeBackup(backup.Binding{Workspace: w.h.fx.workspace, Droplet: "1111", BackupID: id, Created: created})
				w.h.fake.addBackup(b)
				return w.restoring(b, w.sealIdentity(w.h.fx.recipient, w.h.fx.workspace, w.h.fx.droplet, "b-20240101T000000Z-00000000"))
			},
			want: "sealed for ws-acme/4242/backup:b-20240101T000000Z-00000000",
		},
		{
			name: "identity sealed to another droplet's key",
			section: func(w *backupWorld) *schema.ManifestBackup {
				b := w.takeBackup(backup.Binding{Workspace: w.h.fx.workspace, Droplet: "1111", BackupID: id, Created: created})
				w.h.fake.addBackup(b)
				other, _ := age.GenerateX25519Identity()
				return w.restoring(b, w.sealIdentity(other.Recipient(), w.h.fx.workspace, w.h.fx.droplet, id))
			},
			want: "open the restore identity: credential backup:" + id + ": identity did not match any of the recipients",
		},
		{
			name: "corrupt archive",
			section: func(w *backupWorld) *schema.ManifestBackup {
				junk := make([]byte, 4096)
				rand.Read(junk)
				key := w.h.fx.workspace + "/" + id + ".age"
				w.objects.Put(w.h.t, key, junk)
				b := fakeBackup{ID: id, Workspace: w.h.fx.workspace, Key: key, State: "good", Size: int64(len(junk)), SHA256: sha(junk), Started: created}
				w.h.fake.addBackup(b)
				return w.restoring(b, w.sealIdentity(w.h.fx.recipient, w.h.fx.workspace, w.h.fx.droplet, id))
			},
			want: "backup " + id + ": decrypt: failed to read header",
		},
		{
			name: "object altered in storage",
			section: func(w *backupWorld) *schema.ManifestBackup {
				b := w.takeBackup(backup.Binding{Workspace: w.h.fx.workspace, Droplet: "1111", BackupID: id, Created: created})
				w.h.fake.addBackup(b)
				obj := w.download(b.Key)
				obj[len(obj)/2] ^= 1
				w.objects.Put(w.h.t, b.Key, obj)
				return w.restoring(b, w.sealIdentity(w.h.fx.recipient, w.h.fx.workspace, w.h.fx.droplet, id))
			},
			want: "download failed 3 times: fetch backup: sha256 ",
		},
		{
			name: "truncated object",
			section: func(w *backupWorld) *schema.ManifestBackup {
				b := w.takeBackup(backup.Binding{Workspace: w.h.fx.workspace, Droplet: "1111", BackupID: id, Created: created})
				obj := w.download(b.Key)
				obj = obj[:len(obj)-100]
				w.objects.Put(w.h.t, b.Key, obj)
				b.Size, b.SHA256 = int64(len(obj)), sha(obj) // the reconciler recorded what was stored
				w.h.fake.addBackup(b)
				return w.restoring(b, w.sealIdentity(w.h.fx.recipient, w.h.fx.workspace, w.h.fx.droplet, id))
			},
			want: "file may be corrupted or tampered with",
		},
		{
			name: "the reconciler has no such backup",
			section: func(w *backupWorld) *schema.ManifestBackup {
				b := w.takeBackup(backup.Binding{Workspace: w.h.fx.workspace, Droplet: "1111", BackupID: id, Created: created})
				return w.restoring(b, w.sealIdentity(w.h.fx.recipient, w.h.fx.workspace, w.h.fx.droplet, id))
			},
			want: "the reconciler has no such backup: GET /v1/agent/backups/" + id + ": 404",
		},
		{
			name: "the reconciler's record differs from the manifest's",
			section: func(w *backupWorld) *schema.ManifestBackup {
				b := w.takeBackup(backup.Binding{Workspace: w.h.fx.workspace, Droplet: "1111", BackupID: id, Created: created})
				w.h.fake.addBackup(b)
				b.Size++
				return w.restoring(b, w.sealIdentity(w.h.fx.recipient, w.h.fx.workspace, w.h.fx.droplet, id))
			},
			want: "the reconciler's record of the backup differs from the manifest's",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newBackupWorld(t)
			fx := w.h.fx
			section := tc.section(w)
			before := n8nData(t, w.dbURL, w.dataDir)
			w.start(w.token(), func(c *BackupConfig) { c.FirstWithin = time.Hour })
			w.publish(1, section)

			hb := w.h.fake.waitBeat(t, "version 1 applied with a restore error", func(hb schema.Heartbeat) bool {
				return hb.AppliedVersion == 1 && hb.Backup != nil && hb.Backup.RestoreError != ""
			})
			if got := n8nData(t, w.dbURL, w.dataDir); got != before {
				t.Errorf("n8n's data is %s, was %s", got, before)
			}
			if !strings.Contains(hb.Backup.RestoreError, tc.want) || hb.Backup.Restored != "" {
				t.Errorf("heartbeat backup %+v, want a restore error with %q", hb.Backup, tc.want)
			}
			rs := w.h.fake.restoreList()
			if len(rs) != 1 || rs[0].ID != id || rs[0].Workspace != fx.workspace || !strings.Contains(rs[0].Error, tc.want) {
				t.Errorf("restores %+v, want one of %s refused with %q", rs, id, tc.want)
			}
			for _, r := range rs {
				if strings.Contains(r.Error, "AGE-SECRET-KEY") {
					t.Errorf("reported error shows an identity: %q", r.Error)
				}
			}
			ev := w.events.get()
			if last := ev[len(ev)-1]; last != "apply 1: "+before {
				t.Errorf("events %q, want the manifest applied on n8n's own data", ev)
			}
			if w.events.count("stop") != w.events.count("start") {
				t.Errorf("events %q: n8n left stopped", ev)
			}

			// The next manifest is applied without another try.
			fetches, stops := w.h.fake.countPrefix("GET /v1/agent/backups/"), w.events.count("stop")
			w.publish(2, section)
			w.h.fake.waitBeat(t, "applied version 2", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 2 })
			if n := w.h.fake.countPrefix("GET /v1/agent/backups/"); n != fetches {
				t.Errorf("%d fetches after version 2, %d before", n, fetches)
			}
			if n := w.events.count("stop"); n != stops {
				t.Errorf("n8n stopped %d times after version 2, %d before", n, stops)
			}
			if n := len(w.h.fake.restoreList()); n != 1 {
				t.Errorf("%d restore reports, want 1", n)
			}
			if got := n8nData(t, w.dbURL, w.dataDir); got != before {
				t.Errorf("n8n's data is %s, was %s", got, before)
			}
		})
	}
}

// TestRestoreWaitsForTheReconciler: while the reconciler cannot answer a
// fetch the manifest is not applied (it is tried again), nothing is
// restored or reported; once it answers, the restore happens first.
func TestRestoreWaitsForTheReconciler(t *testing.T) {
	w := newBackupWorld(t)
	fx := w.h.fx
	b, section := w.goodBackup()
	w.h.fake.setFetchCode(http.StatusServiceUnavailable)
	w.start(w.token(), func(c *BackupConfig) { c.FirstWithin = time.Hour })
	w.publish(1, section)

	hb := w.h.fake.waitBeat(t, "an apply error", func(hb schema.Heartbeat) bool { return hb.ApplyError != "" })
	if !strings.Contains(hb.ApplyError, "restore "+b.ID) || !strings.Contains(hb.ApplyError, "503") || hb.AppliedVersion != 0 {
		t.Errorf("heartbeat apply error %q, applied %d", hb.ApplyError, hb.AppliedVersion)
	}
	key := "GET /v1/agent/backups/" + b.ID + " 503"
	deadline := time.Now().Add(10 * time.Second)
	for w.h.fake.count(key) < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := w.h.fake.count(key); n < 3 {
		t.Errorf("%d fetches, want the apply tried again", n)
	}
	if ev := w.events.get(); len(ev) != 0 {
		t.Errorf("events %q while the fetch fails", ev)
	}
	if rs := w.h.fake.restoreList(); len(rs) != 0 {
		t.Errorf("restores %+v while the fetch fails", rs)
	}
	if hb := last(w.h.fake.beats()); hb.Backup != nil && hb.Backup.RestoreError != "" {
		t.Errorf("a transient failure reported as refused: %+v", hb.Backup)
	}

	w.h.fake.setFetchCode(0)
	w.h.fake.waitBeat(t, "version 1 applied after the restore", func(hb schema.Heartbeat) bool {
		return hb.AppliedVersion == 1 && hb.Backup != nil && hb.Backup.Restored == b.ID
	})
	want := []string{"stop", "start", `apply 1: ["restored workflow"] config=restored`}
	if diff := cmp.Diff(want, w.events.get()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]fakeRestore{{Workspace: fx.workspace, Droplet: fx.droplet, ID: b.ID}}, w.h.fake.restoreList()); diff != "" {
		t.Errorf("restores (-want +got):\n%s", diff)
	}
}

// TestRestoreCutByShutdown: an agent stopped in the middle of a restore
// has not refused the backup: after the restart it restores it.
func TestRestoreCutByShutdown(t *testing.T) {
	w := newBackupWorld(t)
	fx := w.h.fx
	b, section := w.goodBackup()
	var mu sync.Mutex
	var cut func()
	r := w.start(w.token(), func(c *BackupConfig) {
		c.FirstWithin = time.Hour
		stop := c.Stop
		c.Stop = func(ctx context.Context) error {
			mu.Lock()
			if cut != nil {
				cut() // the agent is told to stop while n8n is down
				cut = nil
			}
			mu.Unlock()
			return stop(ctx)
		}
	})
	mu.Lock()
	cut = r.cancel
	mu.Unlock()
	w.publish(1, section)
	select {
	case err := <-r.done:
		r.done <- err // for r.stop
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop")
	}
	if got, want := n8nData(t, w.dbURL, w.dataDir), `["old workflow"] config=old`; got != want {
		t.Errorf("n8n's data after the cut restore: %s, want %s", got, want)
	}
	if rs := w.h.fake.restoreList(); len(rs) != 0 {
		t.Errorf("restores %+v after the cut", rs)
	}
	if data, err := os.ReadFile(filepath.Join(w.h.dir, backupFile)); err == nil && bytes.Contains(data, []byte(b.ID)) {
		t.Errorf("backup.json %s after the cut", data)
	}
	r.stop()

	w.start("", func(c *BackupConfig) { c.FirstWithin = time.Hour })
	w.h.fake.waitBeat(t, "version 1 applied after the restore", func(hb schema.Heartbeat) bool {
		return hb.AppliedVersion == 1 && hb.Backup != nil && hb.Backup.Restored == b.ID
	})
	if got, want := n8nData(t, w.dbURL, w.dataDir), `["restored workflow"] config=restored`; got != want {
		t.Errorf("n8n's data after the restart: %s, want %s", got, want)
	}
	if diff := cmp.Diff([]fakeRestore{{Workspace: fx.workspace, Droplet: fx.droplet, ID: b.ID}}, w.h.fake.restoreList()); diff != "" {
		t.Errorf("restores (-want +got):\n%s", diff)
	}
}

// TestBackupBeforeUpgrade: as converge.Config.BeforeUpgrade, the agent
// backs up before n8n moves to another version when the manifest asks
// for backups, and refuses the upgrade when the backup fails; without a
// backup policy it lets the upgrade go.
func TestBackupBeforeUpgrade(t *testing.T) {
	w := newBackupWorld(t)
	var mu sync.Mutex
	var ag *Agent
	current := "1.123.81"
	upgrade := applierFunc(func(ctx context.Context, m *schema.Manifest, _ map[string]json.RawMessage) error {
		mu.Lock()
		a, cur := ag, current
		mu.Unlock()
		if m.N8N.Version == cur {
			return nil
		}
		if err := a.BackupBeforeUpgrade(ctx, cur, m.N8N.Version); err != nil {
			return fmt.Errorf("n8n version %s: before the upgrade from %s: %w", m.N8N.Version, cur, err)
		}
		w.events.add(fmt.Sprintf("switch to %s after %d good backups", m.N8N.Version, len(backupsIn(w.h.fake.backupList(), "good"))))
		mu.Lock()
		current = m.N8N.Version
		mu.Unlock()
		return nil
	})
	r := w.h.start(w.h.fx.droplet, w.token(), upgrade, func(c *Config) {
		c.Backup = &BackupConfig{Source: backup.Source{Dump: dumpArgv(t, w.dbURL), DataDir: w.dataDir}, FirstWithin: time.Hour, Retry: time.Hour}
	})
	mu.Lock()
	ag = r.agent
	mu.Unlock()
	publish := func(v int64, version string, mb *schema.ManifestBackup) {
		m := w.h.fx.manifest(v)
		m.N8N.Version, m.Backup = version, mb
		w.h.fake.publish(w.h.fx.droplet, w.h.fx.sign(m, nil))
		w.h.fake.waitBeat(t, fmt.Sprintf("applied version %d", v), func(hb schema.Heartbeat) bool { return hb.AppliedVersion == v })
	}

	publish(1, "1.123.81", w.policy(86400))
	if bs := w.h.fake.backupList(); len(bs) != 0 {
		t.Errorf("backups without an upgrade: %+v", bs)
	}
	publish(2, "1.124.0", w.policy(86400))
	w.objects.Down.Store(true)
	m := w.h.fx.manifest(3)
	m.N8N.Version, m.Backup = "1.125.0", w.policy(86400)
	w.h.fake.publish(w.h.fx.droplet, w.h.fx.sign(m, nil))
	hb := w.h.fake.waitBeat(t, "the upgrade refused", func(hb schema.Heartbeat) bool { return strings.Contains(hb.ApplyError, "before the upgrade") })
	if !strings.Contains(hb.ApplyError, "1.125.0") || !strings.Contains(hb.ApplyError, "503") || hb.AppliedVersion != 2 {
		t.Errorf("heartbeat: applied %d, apply error %q", hb.AppliedVersion, hb.ApplyError)
	}
	w.objects.Down.Store(false)
	w.h.fake.waitBeat(t, "applied version 3", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 3 })
	publish(4, "1.126.0", nil)

	want := []string{"switch to 1.124.0 after 1 good backups", "switch to 1.125.0 after 2 good backups", "switch to 1.126.0 after 2 good backups"}
	if diff := cmp.Diff(want, w.events.get()); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
}

// TestBackupReportBounded: however long a backup or restore error is, the
// heartbeat's report stays within what the reconciler accepts (1000
// bytes), so a long error never gets the droplet's heartbeats refused.
func TestBackupReportBounded(t *testing.T) {
	b := newBackups(&BackupConfig{}, t.TempDir())
	b.policy = &schema.ManifestBackup{EverySeconds: 60}
	b.lastErr = strings.Repeat("é", 2000)
	b.rec.RestoreError = strings.Repeat("x", 5000)
	r := b.report()
	if len(r.LastError) > 500 || len(r.RestoreError) > 500 || !utf8.ValidString(r.LastError) || r.LastError == "" {
		t.Errorf("report strings: %d and %d bytes (valid UTF-8: %v)", len(r.LastError), len(r.RestoreError), utf8.ValidString(r.LastError))
	}
}

// TestBackupAskedByOperator: a manifest whose backup section carries an
// operator's request (requested_at) makes the agent take a backup at once,
// outside its schedule; the same request in the next manifest, or after a
// restart, takes none; a newer request takes another.
func TestBackupAskedByOperator(t *testing.T) {
	w := newBackupWorld(t)
	hour := func(c *BackupConfig) { c.FirstWithin = time.Hour }
	r := w.start(w.token(), hour)
	asked := func(at time.Time) *schema.ManifestBackup {
		p := w.policy(3600) // the schedule alone takes none in this test
		p.RequestedAt = at
		return p
	}
	good := func() int { return len(backupsIn(w.h.fake.backupList(), "good")) }
	first := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	w.publish(1, asked(first))
	w.h.fake.waitBackups(t, "the asked-for backup", 20*time.Second, func(bs []fakeBackup) bool { return len(backupsIn(bs, "good")) == 1 })
	// Recorded once the upload is done (a crash before takes it again).
	testkit.WaitFor(t, "backup.json to record the request as served", func() bool {
		data, err := os.ReadFile(filepath.Join(w.h.dir, backupFile))
		var rec backupRecord
		return err == nil && json.Unmarshal(data, &rec) == nil && rec.Asked.Equal(first)
	})

	// The same request again, then a restart: nothing more.
	w.publish(2, asked(first))
	w.h.fake.waitBeat(t, "applied version 2", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 2 })
	r.stop()
	w.start("", hour)
	w.h.fake.waitBeat(t, "a heartbeat after the restart at version 2", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 2 && hb.Seq > 1 })
	if n := good(); n != 1 {
		t.Errorf("%d good backups after the same request again, want 1", n)
	}

	// A newer request: another backup.
	w.publish(3, asked(first.Add(time.Hour)))
	w.h.fake.waitBackups(t, "the second asked-for backup", 20*time.Second, func(bs []fakeBackup) bool { return len(backupsIn(bs, "good")) == 2 })
}
