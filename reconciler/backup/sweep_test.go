package backup

import (
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/objtest"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// goodIDs lists ws's good backups, newest first.
func (e *env) goodIDs(ws string) []string {
	e.t.Helper()
	bs, err := e.st.GoodBackups(e.t.Context(), ws)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

func TestSweepRetention(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	base := time.Now().UTC().Truncate(24 * time.Hour).Add(-30 * 24 * time.Hour)
	// ws-a (starter: keepLast 3, keepDaily 7, keepWeekly 4): five backups
	// on one day; the three newest are kept.
	var a []string
	for i := range 5 {
		a = append(a, e.good("ws-a", base.Add(time.Duration(i)*time.Hour)))
	}
	// ws-gone is no longer declared: five backups on five days keep only
	// the newest three (starter's keepLast, no dailies or weeklies).
	var gone []string
	for i := range 5 {
		gone = append(gone, e.good("ws-gone", base.Add(time.Duration(i)*24*time.Hour)))
	}
	// ws-last, not declared either, keeps its single backup.
	last := e.good("ws-last", base)
	// A restore that has not finished names ws-a's oldest: it stays.
	if err := e.st.RequestRestore(ctx, "ws-a", "genesis-ws-a-2", a[0], ""); err != nil {
		t.Fatal(err)
	}
	rep, err := e.svc.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Report{Expired: 3, Deleted: 3}, rep); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{a[4], a[3], a[2], a[0]}, e.goodIDs("ws-a")); diff != "" {
		t.Errorf("ws-a kept (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{gone[4], gone[3], gone[2]}, e.goodIDs("ws-gone")); diff != "" {
		t.Errorf("ws-gone kept (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{last}, e.goodIDs("ws-last")); diff != "" {
		t.Errorf("ws-last kept (-want +got):\n%s", diff)
	}
	for _, id := range []string{a[1], gone[0], gone[1]} {
		ws := map[bool]string{true: "ws-a", false: "ws-gone"}[id == a[1]]
		if e.obj.Exists("fleet/" + ws + "/" + id + ".age") {
			t.Errorf("object of expired %s is still stored", id)
		}
		if _, err := e.st.GetBackup(ctx, ws, id); err != store.ErrNoBackup {
			t.Errorf("expired %s: GetBackup err = %v, want ErrNoBackup", id, err)
		}
	}
	for _, id := range []string{a[0], a[2]} {
		if !e.obj.Exists("fleet/ws-a/" + id + ".age") {
			t.Errorf("object of kept %s is gone", id)
		}
	}
	// A second sweep has nothing to do.
	if rep, err := e.svc.Sweep(ctx); err != nil || rep != (Report{}) {
		t.Errorf("second sweep = %+v, %v; want nothing done", rep, err)
	}
	// Once the restore is done, a[0] is no longer held.
	if err := e.st.FinishRestore(ctx, "ws-a", "genesis-ws-a-2", a[0], ""); err != nil {
		t.Fatal(err)
	}
	if rep, err := e.svc.Sweep(ctx); err != nil || rep != (Report{Expired: 1, Deleted: 1}) {
		t.Errorf("sweep after the restore = %+v, %v; want a[0] expired", rep, err)
	}
}

func TestSweepRetentionNeedsTheDesiredState(t *testing.T) {
	e := newEnv(t)
	base := time.Now().UTC().Add(-48 * time.Hour)
	for i := range 5 {
		e.good("ws-gone", base.Add(time.Duration(i)*time.Minute))
	}
	for name, change := range map[string]func(){
		"unknown":            func() { e.ok = false },
		"backups undeclared": func() { e.ok = true; e.snap.Fleet = backupFleet(); e.snap.Fleet.Spec.Backup = nil },
	} {
		change()
		rep, err := e.svc.Sweep(t.Context())
		if err != nil || rep != (Report{}) {
			t.Errorf("%s: sweep = %+v, %v; want nothing deleted", name, rep, err)
		}
		if n := len(e.goodIDs("ws-gone")); n != 5 {
			t.Errorf("%s: %d good backups left, want 5", name, n)
		}
	}
}

func TestSweepCleanup(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	// A failed upload whose object exists (wrong size), a failed one with
	// no object, a pending one whose URL has expired (uploaded), and a
	// fresh pending one.
	mismatch, fin := e.upload("ws-a", []byte("short"))
	fin.Size++
	e.svc.Finish(ctx, "ws-a", mismatch.ID, fin)
	noObject, _ := e.svc.Start(ctx, "ws-e", 78)
	e.svc.Finish(ctx, "ws-e", noObject.ID, schema.BackupFinish{Error: "disk full"})
	abandoned, _ := e.upload("ws-gone", []byte("never reported"))
	e.exec(`UPDATE backups SET started_at = started_at - $2::interval WHERE id = $1`, abandoned.ID, (URLTTL + time.Minute).String())
	fresh, err := e.svc.Start(ctx, "ws-a", 77)
	if err != nil {
		t.Fatal(err)
	}
	key := func(ws, id string) string { return "fleet/" + ws + "/" + id + ".age" }

	// Storage down: nothing is forgotten whose object may still exist.
	e.obj.Down.Store(true)
	rep, err := e.svc.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Report{StorageErrors: 3}, rep); diff != "" {
		t.Errorf("sweep with storage down (-want +got):\n%s", diff)
	}
	for _, c := range []struct{ ws, id string }{{"ws-a", mismatch.ID}, {"ws-e", noObject.ID}, {"ws-gone", abandoned.ID}} {
		if b := e.backup(c.ws, c.id); b.State != store.BackupDeleting {
			t.Errorf("%s: state = %s, want deleting (kept until its object is gone)", c.id, b.State)
		}
	}
	if !e.obj.Exists(key("ws-a", mismatch.ID)) || !e.obj.Exists(key("ws-gone", abandoned.ID)) {
		t.Error("an object went while storage was down")
	}

	e.obj.Down.Store(false)
	rep, err = e.svc.Sweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Report{Deleted: 3}, rep); diff != "" {
		t.Errorf("sweep (-want +got):\n%s", diff)
	}
	for _, c := range []struct{ ws, id string }{{"ws-a", mismatch.ID}, {"ws-e", noObject.ID}, {"ws-gone", abandoned.ID}} {
		if _, err := e.st.GetBackup(ctx, c.ws, c.id); err != store.ErrNoBackup {
			t.Errorf("%s: GetBackup err = %v, want ErrNoBackup", c.id, err)
		}
		if e.obj.Exists(key(c.ws, c.id)) {
			t.Errorf("%s: object still stored", c.id)
		}
	}
	// The fresh upload goes on.
	if b := e.backup("ws-a", fresh.ID); b.State != store.BackupPending {
		t.Errorf("fresh backup: state = %s, want pending", b.State)
	}
	if code, _ := objtest.Do(t, http.MethodPut, fresh.URL, []byte("fresh")); code != http.StatusOK {
		t.Errorf("PUT of the fresh upload = %d", code)
	}
	if rep, err := e.svc.Sweep(ctx); err != nil || rep != (Report{}) {
		t.Errorf("third sweep = %+v, %v; want nothing to do", rep, err)
	}
	if !slices.Contains([]string{store.BackupPending}, e.backup("ws-a", fresh.ID).State) {
		t.Error("the sweep touched the fresh upload")
	}
}
