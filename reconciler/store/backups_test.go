package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestBackupLifecycle(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	now := time.Now()
	busySince := now.Add(-time.Hour)
	if err := s.BeginBackup(ctx, "b-1", "ws-a", 7, "ws-a/b-1.age", busySince); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginBackup(ctx, "b-2", "ws-a", 7, "ws-a/b-2.age", busySince); !errors.Is(err, ErrBackupBusy) {
		t.Fatalf("second BeginBackup: err = %v, want ErrBackupBusy", err)
	}
	if err := s.BeginBackup(ctx, "b-x", "ws-b", 8, "ws-b/b-x.age", busySince); err != nil {
		t.Fatalf("BeginBackup of another workspace: %v", err)
	}
	// A pending backup older than busySince (its URL expired) no longer
	// holds the workspace.
	if err := s.BeginBackup(ctx, "b-2", "ws-a", 7, "ws-a/b-2.age", now.Add(time.Minute)); err != nil {
		t.Fatalf("BeginBackup past an abandoned one: %v", err)
	}
	if _, err := s.GetBackup(ctx, "ws-b", "b-1"); !errors.Is(err, ErrNoBackup) {
		t.Errorf("GetBackup of another workspace's backup: err = %v, want ErrNoBackup", err)
	}

	if err := s.FinishBackup(ctx, "ws-a", "b-1", 123, sha, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishBackup(ctx, "ws-a", "b-1", 0, "", "late error"); !errors.Is(err, ErrNoBackup) {
		t.Errorf("second FinishBackup: err = %v, want ErrNoBackup", err)
	}
	if err := s.FinishBackup(ctx, "ws-b", "b-2", 1, sha, ""); !errors.Is(err, ErrNoBackup) {
		t.Errorf("FinishBackup by another workspace: err = %v, want ErrNoBackup", err)
	}
	if err := s.FinishBackup(ctx, "ws-a", "b-2", 99, sha, "upload: 403"); err != nil {
		t.Fatal(err)
	}
	b1, _ := s.GetBackup(ctx, "ws-a", "b-1")
	b2, _ := s.GetBackup(ctx, "ws-a", "b-2")
	ignore := func(b Backup) Backup { b.Started, b.Finished = time.Time{}, nil; return b }
	if b1.Finished == nil || b2.Finished == nil {
		t.Error("finished_at not recorded")
	}
	if diff := cmp.Diff(Backup{ID: "b-1", Workspace: "ws-a", DropletID: 7, Key: "ws-a/b-1.age", State: BackupGood, Size: 123, SHA256: sha}, ignore(b1)); diff != "" {
		t.Errorf("good backup (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Backup{ID: "b-2", Workspace: "ws-a", DropletID: 7, Key: "ws-a/b-2.age", State: BackupFailed, Error: "upload: 403"}, ignore(b2)); diff != "" {
		t.Errorf("failed backup (-want +got):\n%s", diff)
	}

	good, err := s.GoodBackups(ctx, "ws-a")
	if err != nil || len(good) != 1 || good[0].ID != "b-1" {
		t.Errorf("GoodBackups = %v, %v; want b-1", good, err)
	}
	newest, err := s.NewestBackups(ctx)
	if err != nil || len(newest) != 1 || newest["ws-a"].ID != "b-1" {
		t.Errorf("NewestBackups = %v, %v; want ws-a: b-1", newest, err)
	}
	un, err := s.Unfinished(ctx, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, b := range un {
		ids = append(ids, b.ID)
	}
	if diff := cmp.Diff([]string{"b-x", "b-2"}, ids); diff != "" {
		t.Errorf("Unfinished (-want +got):\n%s", diff)
	}
	if un, _ := s.Unfinished(ctx, now.Add(-time.Hour)); len(un) != 1 || un[0].ID != "b-2" {
		t.Errorf("Unfinished with a recent pending = %v, want only the failed one", un)
	}

	// MarkDeleting moves only from the state the caller saw.
	if ok, err := s.MarkDeleting(ctx, "b-1", BackupFailed, "x"); ok || err != nil {
		t.Errorf("MarkDeleting from the wrong state = %v, %v; want false", ok, err)
	}
	if ok, err := s.MarkDeleting(ctx, "b-2", BackupFailed, "failed"); !ok || err != nil {
		t.Fatalf("MarkDeleting = %v, %v", ok, err)
	}
	if err := s.DeleteBackup(ctx, "b-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBackup(ctx, "ws-a", "b-1"); err != nil {
		t.Errorf("DeleteBackup removed a good backup not marked deleting: %v", err)
	}
	if err := s.DeleteBackup(ctx, "b-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBackup(ctx, "ws-a", "b-2"); !errors.Is(err, ErrNoBackup) {
		t.Errorf("after DeleteBackup: err = %v, want ErrNoBackup", err)
	}
}

// addDroplet records ws's droplet (fleet_status) in state with an agent.
func addDroplet(t *testing.T, s *Store, ws string, droplet int64, name, state string) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.pool.Exec(ctx, `INSERT INTO fleet_status (workspace, droplet_id, droplet_name, state, desired_state)
		VALUES ($1, $2, $3, $4, 'running')`, ws, droplet, name, state); err != nil {
		t.Fatal(err)
	}
	hash := sha256.Sum256([]byte(ws))
	if _, err := s.pool.Exec(ctx, `INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash)
		VALUES ($1, $2, 'age1test', $3, $4)`, droplet, ws, make([]byte, 32), hash[:]); err != nil {
		t.Fatal(err)
	}
}

func TestRestores(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	if err := s.BeginBackup(ctx, "b-1", "ws-a", 7, "ws-a/b-1.age", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishBackup(ctx, "ws-a", "b-1", 10, sha, ""); err != nil {
		t.Fatal(err)
	}
	addDroplet(t, s, "ws-a", 8, "genesis-ws-a-2", "BOOTING")
	addDroplet(t, s, "ws-b", 9, "genesis-ws-b-1", "ACTIVE_HEALTHY")
	target := func(ws string) Target {
		t.Helper()
		tg, ok, err := s.LiveTarget(ctx, ws)
		if err != nil || !ok {
			t.Fatalf("LiveTarget(%s) = %v, %v", ws, ok, err)
		}
		return tg
	}
	sweepRestore := func(ws string) string {
		t.Helper()
		ts, err := s.SweepTargets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range ts {
			if tg.Workspace == ws {
				return tg.Restore
			}
		}
		t.Fatalf("SweepTargets lacks %s", ws)
		return ""
	}
	if _, ok, _ := s.RestoreFor(ctx, "ws-a", "genesis-ws-a-2"); ok {
		t.Error("RestoreFor before any request")
	}
	// A restore for another droplet name of ws-a is not this droplet's.
	if err := s.RequestRestore(ctx, "ws-a", "genesis-ws-a-9", "b-1", commit); err != nil {
		t.Fatal(err)
	}
	if r := target("ws-a").Restore; r != "" {
		t.Errorf("Target.Restore = %q for a restore asked of another droplet", r)
	}
	if err := s.RequestRestore(ctx, "ws-a", "genesis-ws-a-2", "b-1", commit); err != nil {
		t.Fatal(err)
	}
	if r := target("ws-a").Restore; r != "b-1" {
		t.Errorf("LiveTarget.Restore = %q, want b-1", r)
	}
	if r := sweepRestore("ws-a"); r != "b-1" {
		t.Errorf("SweepTargets Restore = %q, want b-1", r)
	}
	if r := target("ws-b").Restore; r != "" {
		t.Errorf("ws-b Restore = %q, want none", r)
	}
	r, ok, err := s.RestoreFor(ctx, "ws-a", "genesis-ws-a-2")
	if err != nil || !ok || r.Backup.ID != "b-1" || r.Finished != nil || r.Droplet != "genesis-ws-a-2" {
		t.Errorf("RestoreFor = %+v, %v, %v", r, ok, err)
	}
	// Retention cannot take a backup a pending restore names.
	if ok, err := s.MarkDeleting(ctx, "b-1", BackupGood, "retention"); ok || err != nil {
		t.Errorf("MarkDeleting of a backup being restored = %v, %v; want false", ok, err)
	}
	if err := s.FinishRestore(ctx, "ws-b", "genesis-ws-b-1", "b-1", ""); !errors.Is(err, ErrNoBackup) {
		t.Errorf("FinishRestore by another workspace: err = %v, want ErrNoBackup", err)
	}
	if err := s.FinishRestore(ctx, "ws-a", "genesis-ws-a-2", "b-1", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishRestore(ctx, "ws-a", "genesis-ws-a-2", "b-1", ""); !errors.Is(err, ErrNoBackup) {
		t.Errorf("second FinishRestore: err = %v, want ErrNoBackup", err)
	}
	r, ok, _ = s.RestoreFor(ctx, "ws-a", "genesis-ws-a-2")
	if !ok || r.Finished == nil || r.Error != "" {
		t.Errorf("RestoreFor after the restore = %+v, %v; want finished", r, ok)
	}
	if r := target("ws-a").Restore; r != "" {
		t.Errorf("Target.Restore = %q after the restore finished", r)
	}
	// A refused restore records why.
	if err := s.BeginBackup(ctx, "b-2", "ws-b", 9, "ws-b/b-2.age", time.Now()); err != nil {
		t.Fatal(err)
	}
	s.FinishBackup(ctx, "ws-b", "b-2", 10, sha, "")
	s.RequestRestore(ctx, "ws-b", "genesis-ws-b-1", "b-2", commit)
	if err := s.FinishRestore(ctx, "ws-b", "genesis-ws-b-1", "b-2", "sha256 mismatch"); err != nil {
		t.Fatal(err)
	}
	if r, _, _ := s.RestoreFor(ctx, "ws-b", "genesis-ws-b-1"); r.Error != "sha256 mismatch" {
		t.Errorf("refused restore error = %q", r.Error)
	}
	// FinishRestore finishes every open restore of b-1 in ws-a (the agent
	// reports its droplet id, not the name a restore is asked of), so
	// b-1 may go now, and its finished restore rows go with it.
	if ok, err := s.MarkDeleting(ctx, "b-1", BackupGood, "retention"); !ok || err != nil {
		t.Fatalf("MarkDeleting after the restores finished = %v, %v", ok, err)
	}
	if err := s.DeleteBackup(ctx, "b-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetBackup(ctx, "ws-a", "b-1"); !errors.Is(err, ErrNoBackup) {
		t.Errorf("after DeleteBackup: %v", err)
	}
}

func TestLiveSince(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	addDroplet(t, s, "ws-up", 11, "genesis-ws-up-1", "ACTIVE_HEALTHY")
	addDroplet(t, s, "ws-boot", 12, "genesis-ws-boot-1", "BOOTING")
	addDroplet(t, s, "ws-hib", 13, "genesis-ws-hib-1", "HIBERNATING")
	enrolled := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	if _, err := s.pool.Exec(ctx, `UPDATE agents SET enrolled_at = $1 WHERE droplet_id = 11`, enrolled); err != nil {
		t.Fatal(err)
	}
	// A health change moves state_since, not when the droplet went live.
	if _, err := s.pool.Exec(ctx, `UPDATE fleet_status SET state = 'ACTIVE_DEGRADED', state_since = now() WHERE workspace = 'ws-up'`); err != nil {
		t.Fatal(err)
	}
	got, err := s.LiveSince(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !got["ws-up"].Equal(enrolled) || got["ws-boot"].IsZero() {
		t.Errorf("LiveSince = %v, want ws-up since %v and ws-boot", got, enrolled)
	}
}
