package backup

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/internal/objtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
	"genesis.dev/fleet/tenants"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// operators is the fleet's backup recipient (spec.backup.recipients).
const operators = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"

// env is a Service on a real Postgres with real keys and objtest storage.
type env struct {
	t    *testing.T
	url  string
	st   *store.Store
	obj  *objtest.Store
	keys *Keys
	svc  *Service
	reg  *prometheus.Registry

	mu    sync.Mutex
	now   time.Time // zero: the wall clock plus offset
	off   time.Duration
	snap  tenants.Snapshot
	ok    bool
	live  map[string]time.Time
	snaps map[string]SnapshotCopy
}

func tenant(id string, tier schema.Tier) tenants.TenantState {
	return tenants.TenantState{ID: id, Tenant: &schema.Tenant{Metadata: schema.TenantMeta{ID: id, Name: id, Tier: tier}}}
}

func backupFleet() *schema.Fleet {
	return &schema.Fleet{Spec: schema.FleetSpec{Backup: &schema.Backup{
		Recipients: []string{operators},
		Tiers:      map[schema.Tier]schema.BackupTier{schema.TierEnterprise: {Every: schema.Duration(time.Hour)}},
	}}}
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, url: pgtest.New(t), keys: newKeys(t), reg: prometheus.NewRegistry(), ok: true}
	var err error
	e.st, err = store.Open(t.Context(), e.url, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.st.Close)
	e.snap = tenants.Snapshot{Fleet: backupFleet(), Tenants: map[string]tenants.TenantState{
		"ws-a": tenant("ws-a", schema.TierStarter),
		"ws-e": tenant("ws-e", schema.TierEnterprise),
	}}
	e.obj = objtest.New(t, e.clock, ErrNotFound)
	e.svc = New(Config{
		Store: e.st, Objects: e.obj, Keys: e.keys, Prefix: "fleet/", Desired: e.desired, Now: e.clock,
		Snapshots: func() map[string]SnapshotCopy { e.mu.Lock(); defer e.mu.Unlock(); return e.snaps },
		Live: func(ctx context.Context) (map[string]time.Time, error) {
			e.mu.Lock()
			defer e.mu.Unlock()
			return e.live, nil
		},
		Registerer: e.reg,
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	return e
}

func (e *env) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.now.IsZero() {
		return e.now
	}
	return time.Now().Add(e.off)
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	e.off += d
	e.mu.Unlock()
}

func (e *env) desired() (tenants.Snapshot, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.snap, e.ok
}

func (e *env) exec(sql string, args ...any) {
	e.t.Helper()
	conn, err := pgx.Connect(e.t.Context(), e.url)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(e.t.Context(), sql, args...); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) backup(ws, id string) store.Backup {
	e.t.Helper()
	b, err := e.st.GetBackup(e.t.Context(), ws, id)
	if err != nil {
		e.t.Fatalf("backup %s of %s: %v", id, ws, err)
	}
	return b
}

// upload is an agent's backup: Start, PUT data to the presigned URL.
func (e *env) upload(ws string, data []byte) (schema.BackupStart, schema.BackupFinish) {
	e.t.Helper()
	start, err := e.svc.Start(e.t.Context(), ws, 77)
	if err != nil {
		e.t.Fatal(err)
	}
	if code, body := objtest.Do(e.t, http.MethodPut, start.URL, data); code != http.StatusOK {
		e.t.Fatalf("PUT = %d %s", code, body)
	}
	sum := sha256.Sum256(data)
	return start, schema.BackupFinish{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
}

// good records a good backup of ws taken at (its object in storage).
func (e *env) good(ws string, at time.Time) string {
	e.t.Helper()
	ctx := e.t.Context()
	var rnd [4]byte
	rand.Read(rnd[:])
	id := "b-" + at.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(rnd[:])
	key := "fleet/" + ws + "/" + id + ".age"
	if err := e.st.BeginBackup(ctx, id, ws, 77, key, at.Add(100*365*24*time.Hour)); err != nil {
		e.t.Fatal(err)
	}
	e.obj.Put(e.t, key, []byte("backup "+id))
	if err := e.st.FinishBackup(ctx, ws, id, int64(len("backup "+id)), strings.Repeat("ab", 32), ""); err != nil {
		e.t.Fatal(err)
	}
	e.exec(`UPDATE backups SET started_at = $2 WHERE id = $1`, id, at)
	return id
}

func (e *env) results() map[string]float64 {
	out := map[string]float64{}
	for _, r := range []string{resultSucceeded, resultFailed, resultMismatch} {
		out[r] = testutil.ToFloat64(e.svc.results.WithLabelValues(r))
	}
	return out
}

func TestStartUploadFinishFetch(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	data := []byte("age-encrypted pg_dump and n8n data")
	start, fin := e.upload("ws-a", data)
	if !ValidID(start.ID) {
		t.Errorf("id %q is not ValidID", start.ID)
	}
	if !start.Expires.After(e.clock()) {
		t.Errorf("upload URL expires %v, not in the future", start.Expires)
	}
	if b := e.backup("ws-a", start.ID); b.State != store.BackupPending || b.Key != "fleet/ws-a/"+start.ID+".age" {
		t.Errorf("after Start: %+v, want pending at fleet/ws-a/<id>.age", b)
	}
	// One upload per workspace at a time; another workspace is not held up.
	if _, err := e.svc.Start(ctx, "ws-a", 77); !errors.Is(err, ErrBusy) {
		t.Errorf("second Start: err = %v, want ErrBusy", err)
	}
	if _, err := e.svc.Start(ctx, "ws-e", 78); err != nil {
		t.Errorf("Start of another workspace: %v", err)
	}
	if err := e.svc.Finish(ctx, "ws-a", start.ID, fin); err != nil {
		t.Fatal(err)
	}
	b := e.backup("ws-a", start.ID)
	if b.State != store.BackupGood || b.Size != fin.Size || b.SHA256 != fin.SHA256 {
		t.Errorf("after Finish: %+v, want good with the reported size and sha256", b)
	}
	if err := e.svc.Finish(ctx, "ws-a", start.ID, fin); !errors.Is(err, ErrUnknown) {
		t.Errorf("second Finish: err = %v, want ErrUnknown", err)
	}
	if err := e.svc.Finish(ctx, "ws-e", start.ID, fin); !errors.Is(err, ErrUnknown) {
		t.Errorf("Finish by another workspace: err = %v, want ErrUnknown", err)
	}
	f, err := e.svc.Fetch(ctx, "ws-a", start.ID)
	if err != nil {
		t.Fatal(err)
	}
	if f.SHA256 != fin.SHA256 || f.Size != fin.Size || f.ID != start.ID {
		t.Errorf("Fetch = %+v", f)
	}
	if code, body := objtest.Do(t, http.MethodGet, f.URL, nil); code != http.StatusOK || string(body) != string(data) {
		t.Errorf("GET of the fetch URL = %d %q", code, body)
	}
	if _, err := e.svc.Fetch(ctx, "ws-e", start.ID); !errors.Is(err, ErrUnknown) {
		t.Errorf("Fetch by another workspace: err = %v, want ErrUnknown", err)
	}
	if got, want := e.results(), map[string]float64{"succeeded": 1, "failed": 0, "mismatch": 0}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("genesis_backups_total = %v, want %v", got, want)
	}
	// Once finished, the next backup may start.
	if _, err := e.svc.Start(ctx, "ws-a", 77); err != nil {
		t.Errorf("Start after Finish: %v", err)
	}
}

func TestFinishFailures(t *testing.T) {
	tests := []struct {
		name       string
		upload     []byte // nil: nothing uploaded
		report     func(schema.BackupFinish) schema.BackupFinish
		wantErr    error
		wantState  string
		wantResult string
	}{
		{name: "wrong size", upload: []byte("four"),
			report:  func(f schema.BackupFinish) schema.BackupFinish { f.Size++; return f },
			wantErr: ErrMismatch, wantState: store.BackupFailed, wantResult: resultMismatch},
		{name: "missing object",
			report:  func(f schema.BackupFinish) schema.BackupFinish { return f },
			wantErr: ErrMismatch, wantState: store.BackupFailed, wantResult: resultMismatch},
		{name: "the agent reports an error", upload: []byte("half"),
			report:    func(schema.BackupFinish) schema.BackupFinish { return schema.BackupFinish{Error: "pg_dump: exit 1"} },
			wantState: store.BackupFailed, wantResult: resultFailed},
		{name: "a success without a size", upload: []byte("data"),
			report:  func(f schema.BackupFinish) schema.BackupFinish { f.Size = 0; return f },
			wantErr: errAny, wantState: store.BackupPending},
		{name: "a success without a hex sha256", upload: []byte("data"),
			report:  func(f schema.BackupFinish) schema.BackupFinish { f.SHA256 = strings.ToUpper(f.SHA256); return f },
			wantErr: errAny, wantState: store.BackupPending},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			start, err := e.svc.Start(t.Context(), "ws-a", 77)
			if err != nil {
				t.Fatal(err)
			}
			data := tt.upload
			if data != nil {
				if code, _ := objtest.Do(t, http.MethodPut, start.URL, data); code != http.StatusOK {
					t.Fatalf("PUT = %d", code)
				}
			} else {
				data = []byte("never uploaded")
			}
			sum := sha256.Sum256(data)
			err = e.svc.Finish(t.Context(), "ws-a", start.ID, tt.report(schema.BackupFinish{Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}))
			switch {
			case tt.wantErr == nil && err != nil, tt.wantErr == errAny && err == nil:
				t.Errorf("Finish: err = %v, want %v", err, tt.wantErr)
			case tt.wantErr != nil && tt.wantErr != errAny && !errors.Is(err, tt.wantErr):
				t.Errorf("Finish: err = %v, want %v", err, tt.wantErr)
			}
			b := e.backup("ws-a", start.ID)
			if b.State != tt.wantState {
				t.Errorf("state = %s, want %s", b.State, tt.wantState)
			}
			if b.State == store.BackupFailed && b.Error == "" {
				t.Error("a failed backup records no error")
			}
			if _, err := e.svc.Fetch(t.Context(), "ws-a", start.ID); !errors.Is(err, ErrUnknown) {
				t.Errorf("Fetch of a %s backup: err = %v, want ErrUnknown", b.State, err)
			}
			for r, n := range e.results() {
				if want := map[bool]float64{true: 1}[r == tt.wantResult]; n != want {
					t.Errorf("genesis_backups_total{result=%q} = %v, want %v", r, n, want)
				}
			}
		})
	}
}

// errAny stands for "some error" in tables.
var errAny = errors.New("any error")

func TestFinishStorageDown(t *testing.T) {
	e := newEnv(t)
	start, fin := e.upload("ws-a", []byte("backup"))
	e.obj.Down.Store(true)
	err := e.svc.Finish(t.Context(), "ws-a", start.ID, fin)
	if err == nil || errors.Is(err, ErrMismatch) || errors.Is(err, ErrUnknown) {
		t.Fatalf("Finish with storage down: err = %v, want a plain (retryable) error", err)
	}
	if b := e.backup("ws-a", start.ID); b.State != store.BackupPending {
		t.Fatalf("state = %s, want pending (the agent reports again)", b.State)
	}
	e.obj.Down.Store(false)
	if err := e.svc.Finish(t.Context(), "ws-a", start.ID, fin); err != nil {
		t.Fatalf("Finish once storage is back: %v", err)
	}
	if b := e.backup("ws-a", start.ID); b.State != store.BackupGood {
		t.Errorf("state = %s, want good", b.State)
	}
}

func TestDisabled(t *testing.T) {
	ctx := t.Context()
	if New(Config{}) != nil {
		t.Error("New without storage or keys is not nil")
	}
	var nilSvc *Service
	if _, err := nilSvc.Start(ctx, "ws-a", 1); !errors.Is(err, ErrDisabled) {
		t.Errorf("nil Start: %v", err)
	}
	if err := nilSvc.Finish(ctx, "ws-a", "b", schema.BackupFinish{}); !errors.Is(err, ErrDisabled) {
		t.Errorf("nil Finish: %v", err)
	}
	if _, err := nilSvc.Fetch(ctx, "ws-a", "b"); !errors.Is(err, ErrDisabled) {
		t.Errorf("nil Fetch: %v", err)
	}
	if err := nilSvc.Restored(ctx, "ws-a", "d", "b", ""); !errors.Is(err, ErrDisabled) {
		t.Errorf("nil Restored: %v", err)
	}
	if _, err := nilSvc.Sweep(ctx); !errors.Is(err, ErrDisabled) {
		t.Errorf("nil Sweep: %v", err)
	}
	if mb, err := nilSvc.Section(ctx, "ws-a", "d", operators, "", true); mb != nil || err != nil {
		t.Errorf("nil Section = %v, %v; want nil, nil", mb, err)
	}

	e := newEnv(t)
	e.snap.Fleet = &schema.Fleet{}
	if _, err := e.svc.Start(ctx, "ws-a", 1); !errors.Is(err, ErrDisabled) {
		t.Errorf("Start without spec.backup: %v", err)
	}
	if mb, err := e.svc.Section(ctx, "ws-a", "d", operators, "", true); mb != nil || err != nil {
		t.Errorf("Section without spec.backup = %v, %v; want nil, nil", mb, err)
	}
	e.ok = false
	if _, err := e.svc.Start(ctx, "ws-a", 1); !errors.Is(err, ErrDisabled) {
		t.Errorf("Start before the desired state is known: %v", err)
	}
}

func TestSection(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	start, fin := e.upload("ws-e", []byte("enterprise data"))
	if err := e.svc.Finish(ctx, "ws-e", start.ID, fin); err != nil {
		t.Fatal(err)
	}
	own, _ := e.keys.Recipient("ws-e")
	mb, err := e.svc.Section(ctx, "ws-e", "genesis-ws-e-2", operators, "", true)
	if err != nil {
		t.Fatal(err)
	}
	if mb.EverySeconds != 3600 || fmt.Sprint(mb.Recipients) != fmt.Sprint([]string{operators, own}) || mb.Restore != nil {
		t.Errorf("Section = %+v, want every 3600s to the operators and the workspace, no restore", mb)
	}
	starter, err := e.svc.Section(ctx, "ws-a", "genesis-ws-a-1", operators, "", true)
	if err != nil || starter.EverySeconds != 86400 {
		t.Errorf("starter Section = %+v, %v; want every 86400s", starter, err)
	}

	droplet, _ := age.GenerateX25519Identity()
	unsealed, err := e.svc.Section(ctx, "ws-e", "genesis-ws-e-2", droplet.Recipient().String(), start.ID, false)
	if err != nil {
		t.Fatal(err)
	}
	if r := unsealed.Restore; r == nil || r.ID != start.ID || r.SHA256 != fin.SHA256 || r.Size != fin.Size || r.Identity != "" {
		t.Errorf("unsealed restore = %+v, want the backup without an identity", r)
	}
	mb, err = e.svc.Section(ctx, "ws-e", "genesis-ws-e-2", droplet.Recipient().String(), start.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	mc := schema.ManifestCredential{Name: schema.BackupSlot(start.ID), Sealed: mb.Restore.Identity, SHA256: sealing.Digest(mb.Restore.Identity)}
	data, err := sealing.Open(droplet, mc, "ws-e", "genesis-ws-e-2")
	if err != nil {
		t.Fatal(err)
	}
	var idStr string
	if err := json.Unmarshal(data, &idStr); err != nil {
		t.Fatalf("sealed data %q is not a JSON string: %v", data, err)
	}
	want, _ := e.keys.Identity("ws-e")
	if idStr != want.String() {
		t.Error("the sealed identity is not the workspace's backup identity")
	}
	if _, err := sealing.Open(droplet, mc, "ws-e", "genesis-ws-e-3"); !errors.Is(err, sealing.ErrBinding) {
		t.Errorf("Open as another droplet: err = %v, want ErrBinding", err)
	}
	other, _ := age.GenerateX25519Identity()
	if _, err := sealing.Open(other, mc, "ws-e", "genesis-ws-e-2"); err == nil {
		t.Error("another droplet's identity opens the sealed backup identity")
	}
	if _, err := e.svc.Section(ctx, "ws-a", "genesis-ws-a-2", droplet.Recipient().String(), start.ID, true); !errors.Is(err, ErrUnknown) {
		t.Errorf("restore of another workspace's backup: err = %v, want ErrUnknown", err)
	}
}
