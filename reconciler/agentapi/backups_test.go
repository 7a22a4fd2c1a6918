package agentapi

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/internal/objtest"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
)

// backupOperators is the fleet's backup recipient in these tests.
const backupOperators = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"

// withBackups gives the world a backup.Service on objtest storage and
// declares spec.backup; it returns the storage and the keys.
func withBackups(t *testing.T) (option, *objtest.Store, *backup.Keys) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	keys, err := backup.NewKeys([]byte(id.String()))
	if err != nil {
		t.Fatal(err)
	}
	obj := objtest.New(t, time.Now, backup.ErrNotFound)
	return func(c *Config) {
		c.Backups = backup.New(backup.Config{Store: c.Store, Objects: obj, Keys: keys, Desired: c.Desired, Now: c.Now, Logger: c.Logger})
	}, obj, keys
}

func (w *world) declareBackups() {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := *w.snap.Fleet
	f.Spec.Backup = &schema.Backup{Recipients: []string{backupOperators}}
	w.snap.Fleet = &f
}

func TestBackupRoutes(t *testing.T) {
	opt, _, _ := withBackups(t)
	w := newWorld(t, opt)
	w.declareBackups()
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.setTenant("ws-beta", "blob2", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	b := w.mustEnroll("ws-beta", 1, 2001, "203.0.113.8")

	// Every route needs the droplet's credential.
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/agent/backups"}, {"POST", "/v1/agent/backups/b-20261206T120000Z-0123abcd"},
		{"GET", "/v1/agent/backups/b-20261206T120000Z-0123abcd"}, {"POST", "/v1/agent/backups/b-20261206T120000Z-0123abcd/restored"},
	} {
		for _, cred := range []string{"", "not-a-credential"} {
			if code, hdr, _ := w.do(r.method, r.path, cred, nil, []byte(`{}`)); code != http.StatusUnauthorized || hdr.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with credential %q = %d, want 401 with WWW-Authenticate", r.method, r.path, cred, code)
			}
		}
	}

	code, _, body := w.do("POST", "/v1/agent/backups", a.cred, nil, nil)
	if code != http.StatusCreated {
		t.Fatalf("start = %d %s", code, body)
	}
	var start schema.BackupStart
	if err := schema.DecodeStrict(body, &start); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := w.do("POST", "/v1/agent/backups", a.cred, nil, nil); code != http.StatusTooManyRequests {
		t.Errorf("second start = %d, want 429", code)
	}
	data := []byte("age-encrypted backup of ws-acme")
	if code, body := objtest.Do(t, http.MethodPut, start.URL, data); code != http.StatusOK {
		t.Fatalf("PUT = %d %s", code, body)
	}
	sum := sha256.Sum256(data)
	fin, _ := json.Marshal(schema.BackupFinish{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
	finish := "/v1/agent/backups/" + start.ID

	// Another workspace's droplet cannot see or finish it.
	if code, _, _ := w.do("POST", finish, b.cred, nil, fin); code != http.StatusNotFound {
		t.Errorf("finish by another workspace = %d, want 404", code)
	}
	if code, _, _ := w.do("GET", finish, b.cred, nil, nil); code != http.StatusNotFound {
		t.Errorf("fetch by another workspace = %d, want 404", code)
	}
	// Bad ids and bodies.
	for _, path := range []string{"/v1/agent/backups/not-an-id", "/v1/agent/backups/b-20261206T120000Z-0123ABCD"} {
		if code, _, _ := w.do("POST", path, a.cred, nil, fin); code != http.StatusBadRequest {
			t.Errorf("finish %s = %d, want 400", path, code)
		}
		if code, _, _ := w.do("GET", path, a.cred, nil, nil); code != http.StatusBadRequest {
			t.Errorf("fetch %s = %d, want 400", path, code)
		}
		if code, _, _ := w.do("POST", path+"/restored", a.cred, nil, []byte(`{}`)); code != http.StatusBadRequest {
			t.Errorf("restored %s = %d, want 400", path, code)
		}
	}
	for name, body := range map[string][]byte{
		"not JSON":      []byte(`{"size":`),
		"unknown field": []byte(`{"size": 1, "path": "/etc/passwd"}`),
		"wrong type":    []byte(`{"size": "31"}`),
	} {
		if code, _, _ := w.do("POST", finish, a.cred, nil, body); code != http.StatusBadRequest {
			t.Errorf("finish with a body %s = %d, want 400", name, code)
		}
	}
	huge := []byte(`{"error": "` + strings.Repeat("x", maxBackupBody) + `"}`)
	if code, _, _ := w.do("POST", finish, a.cred, nil, huge); code != http.StatusRequestEntityTooLarge {
		t.Errorf("finish with an oversize body = %d, want 413", code)
	}
	// Fetching a backup not finished yet: 404.
	if code, _, _ := w.do("GET", finish, a.cred, nil, nil); code != http.StatusNotFound {
		t.Errorf("fetch of a pending backup = %d, want 404", code)
	}

	if code, _, body := w.do("POST", finish, a.cred, nil, fin); code != http.StatusNoContent {
		t.Fatalf("finish = %d %s", code, body)
	}
	if code, _, _ := w.do("POST", finish, a.cred, nil, fin); code != http.StatusNotFound {
		t.Errorf("second finish = %d, want 404", code)
	}
	code, _, body = w.do("GET", finish, a.cred, nil, nil)
	if code != http.StatusOK {
		t.Fatalf("fetch = %d %s", code, body)
	}
	var f schema.BackupFetch
	if err := schema.DecodeStrict(body, &f); err != nil {
		t.Fatal(err)
	}
	if got, body := objtest.Do(t, http.MethodGet, f.URL, nil); got != http.StatusOK || string(body) != string(data) || f.SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("download = %d %q, sha %s", got, body, f.SHA256)
	}

	// A report that storage contradicts: 409, and the backup failed.
	code, _, body = w.do("POST", "/v1/agent/backups", a.cred, nil, nil)
	if code != http.StatusCreated {
		t.Fatalf("start = %d %s", code, body)
	}
	schema.DecodeStrict(body, &start)
	if code, _, _ := w.do("POST", "/v1/agent/backups/"+start.ID, a.cred, nil, fin); code != http.StatusConflict {
		t.Errorf("finish of a backup never uploaded = %d, want 409", code)
	}
	// No restore asked of this droplet: 404.
	if code, _, _ := w.do("POST", finish+"/restored", a.cred, nil, []byte(`{}`)); code != http.StatusNotFound {
		t.Errorf("restored without a restore = %d, want 404", code)
	}
}

func TestBackupRoutesDisabled(t *testing.T) {
	t.Run("no service", func(t *testing.T) {
		w := newWorld(t)
		w.setTenant("ws-acme", "blob1", tenantSpec{})
		a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
		for _, r := range []struct{ method, path string }{
			{"POST", "/v1/agent/backups"}, {"GET", "/v1/agent/backups/b-20261206T120000Z-0123abcd"},
			{"POST", "/v1/agent/backups/b-20261206T120000Z-0123abcd"}, {"POST", "/v1/agent/backups/b-20261206T120000Z-0123abcd/restored"},
		} {
			if code, _, body := w.do(r.method, r.path, a.cred, nil, []byte(`{}`)); code != http.StatusServiceUnavailable {
				t.Errorf("%s %s = %d %s, want 503", r.method, r.path, code, body)
			}
		}
		if m, _ := w.manifest(a); m.Backup != nil {
			t.Errorf("manifest backup section = %+v without backups", m.Backup)
		}
	})
	t.Run("not declared", func(t *testing.T) {
		opt, _, _ := withBackups(t)
		w := newWorld(t, opt)
		w.setTenant("ws-acme", "blob1", tenantSpec{})
		a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
		if code, _, _ := w.do("POST", "/v1/agent/backups", a.cred, nil, nil); code != http.StatusServiceUnavailable {
			t.Errorf("start without spec.backup = %d, want 503", code)
		}
		if m, _ := w.manifest(a); m.Backup != nil {
			t.Errorf("manifest backup section = %+v without spec.backup", m.Backup)
		}
	})
}

// TestManifestBackupRestore: a new droplet asked to restore a backup gets
// it in its first manifest, with the workspace's backup identity sealed to
// that droplet alone; reporting the restore finishes it.
func TestManifestBackupRestore(t *testing.T) {
	opt, _, keys := withBackups(t)
	w := newWorld(t, opt)
	w.declareBackups()
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	ctx := t.Context()
	const id = "b-20261206T120000Z-0123abcd"
	if err := w.st.BeginBackup(ctx, id, "ws-acme", 999, "ws-acme/"+id+".age", time.Now()); err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("ab", 32)
	if err := w.st.FinishBackup(ctx, "ws-acme", id, 42, sha, ""); err != nil {
		t.Fatal(err)
	}
	if err := w.st.RequestRestore(ctx, "ws-acme", plan.DropletName("ws-acme", 2), id, commitA); err != nil {
		t.Fatal(err)
	}
	a := w.mustEnroll("ws-acme", 2, 1002, "203.0.113.9")
	m, _ := w.manifest(a)
	own, _ := keys.Recipient("ws-acme")
	if m.Backup == nil || m.Backup.EverySeconds != 86400 || len(m.Backup.Recipients) != 2 || m.Backup.Recipients[0] != backupOperators || m.Backup.Recipients[1] != own {
		t.Fatalf("manifest backup section = %+v", m.Backup)
	}
	r := m.Backup.Restore
	if r == nil || r.ID != id || r.SHA256 != sha || r.Size != 42 {
		t.Fatalf("restore = %+v, want backup %s", r, id)
	}
	mc := schema.ManifestCredential{Name: schema.BackupSlot(id), Sealed: r.Identity, SHA256: sealing.Digest(r.Identity)}
	data, err := sealing.Open(a.id, mc, "ws-acme", "1002")
	if err != nil {
		t.Fatal(err)
	}
	var idStr string
	wantID, _ := keys.Identity("ws-acme")
	if err := json.Unmarshal(data, &idStr); err != nil || idStr != wantID.String() {
		t.Error("the sealed identity is not the workspace's backup identity")
	}
	if code, _, body := w.do("POST", "/v1/agent/backups/"+id+"/restored", a.cred, nil, []byte(`{}`)); code != http.StatusNoContent {
		t.Fatalf("restored = %d %s", code, body)
	}
	if rs, ok, _ := w.st.RestoreFor(ctx, "ws-acme", plan.DropletName("ws-acme", 2)); !ok || rs.Finished == nil || rs.Error != "" {
		t.Errorf("restore after the report = %+v, %v; want finished", rs, ok)
	}
	if code, _, _ := w.do("POST", "/v1/agent/backups/"+id+"/restored", a.cred, nil, []byte(`{}`)); code != http.StatusNotFound {
		t.Errorf("second restored = %d, want 404", code)
	}
}

// TestManifestBackupAsked: an operator's backup request goes into the
// droplet's next manifest (backup.requested_at, a new version); once a
// good backup started after it exists, the next manifest drops it.
func TestManifestBackupAsked(t *testing.T) {
	opt, _, _ := withBackups(t)
	w := newWorld(t, opt)
	w.declareBackups()
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	ctx := t.Context()
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	before, _ := w.manifest(a)
	if before.Backup == nil || !before.Backup.RequestedAt.IsZero() {
		t.Fatalf("manifest backup section before a request = %+v", before.Backup)
	}
	if _, err := w.st.Pool().Exec(ctx, `UPDATE fleet_status SET state = 'ACTIVE_HEALTHY', droplet_id = 1001 WHERE workspace = 'ws-acme'`); err != nil {
		t.Fatal(err)
	}
	if err := w.st.RequestBackup(ctx, "ws-acme", "ops", "before the migration"); err != nil {
		t.Fatal(err)
	}
	var asked time.Time
	if err := w.st.Pool().QueryRow(ctx, `SELECT backup_requested_at FROM fleet_status WHERE workspace = 'ws-acme'`).Scan(&asked); err != nil {
		t.Fatal(err)
	}
	if err := w.svc.RenderWorkspace(ctx, "ws-acme"); err != nil {
		t.Fatal(err)
	}
	m, _ := w.manifest(a)
	if m.Version <= before.Version || m.Backup == nil || !m.Backup.RequestedAt.Equal(asked) {
		t.Fatalf("manifest v%d backup section = %+v, want requested_at %v in a new version", m.Version, m.Backup, asked)
	}
	// A backup that started after the request satisfies it.
	const id = "b-20261207T060000Z-0123abcd"
	if err := w.st.BeginBackup(ctx, id, "ws-acme", 1001, "ws-acme/"+id+".age", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := w.svc.RenderWorkspace(ctx, "ws-acme"); err != nil {
		t.Fatal(err)
	}
	if pending, _ := w.manifest(a); pending.Version != m.Version {
		t.Errorf("a pending backup issued manifest v%d; the request stands until one is good", pending.Version)
	}
	if err := w.st.FinishBackup(ctx, "ws-acme", id, 42, strings.Repeat("ab", 32), ""); err != nil {
		t.Fatal(err)
	}
	if err := w.svc.RenderWorkspace(ctx, "ws-acme"); err != nil {
		t.Fatal(err)
	}
	after, _ := w.manifest(a)
	if after.Version <= m.Version || after.Backup == nil || !after.Backup.RequestedAt.IsZero() {
		t.Errorf("after a good backup: manifest v%d backup section = %+v, want no request", after.Version, after.Backup)
	}
}
