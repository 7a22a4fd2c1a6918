package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"genesis.dev/fleet/schema"
)

// TestResume: what an agent does at start with a pending upgrade whose
// watcher is gone, and with one whose watcher still runs.
func TestResume(t *testing.T) {
	for _, tc := range []struct {
		name      string
		running   string // the build this process is
		active    string // where current points
		healthy   string // the marker's version ("": none)
		watcher   bool   // a watcher holds the lock
		restart   bool
		pending   bool // pending is left in place
		wantSlot  string
		rejection bool
	}{
		{name: "new build reported healthy: commit", running: "1.5.0", active: "b", healthy: "1.5.0", wantSlot: "b"},
		{name: "new build never healthy: roll back and exit", running: "1.5.0", active: "b", healthy: "1.4.0", restart: true, wantSlot: "a", rejection: true},
		{name: "old build after a rollback the watcher did not finish", running: "1.4.0", active: "b", wantSlot: "a", rejection: true},
		{name: "switch never happened: drop", running: "1.4.0", active: "a", wantSlot: "a"},
		{name: "watcher running: left to it", running: "1.5.0", active: "b", watcher: true, pending: true, wantSlot: "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, state := t.TempDir(), t.TempDir()
			s := Slots{Root: root}
			bin := filepath.Join(t.TempDir(), "bin")
			os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755)
			if err := Install(root, bin); err != nil {
				t.Fatal(err)
			}
			if err := s.Switch(tc.active); err != nil {
				t.Fatal(err)
			}
			p := Pending{From: "a", To: "b", FromVersion: "1.4.0", Version: "1.5.0", Manifest: 7, Deadline: time.Now().Add(time.Hour),
				Timeout: time.Hour, StateDir: state, Restart: []string{"true"}}
			data, _ := json.Marshal(p)
			if err := os.WriteFile(s.PendingPath(), data, 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.healthy != "" {
				if err := WriteHealthy(state, tc.healthy, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			if tc.watcher {
				lk, err := tryLock(filepath.Join(root, watchLockFile))
				if err != nil {
					t.Fatal(err)
				}
				defer lk.Close()
			}
			u := &Upgrader{Slots: s, StateDir: state, Version: tc.running}
			restart, err := u.Resume()
			if err != nil {
				t.Fatal(err)
			}
			if restart != tc.restart {
				t.Errorf("restart = %v, want %v", restart, tc.restart)
			}
			if _, pending, _ := s.ReadPending(); pending != tc.pending {
				t.Errorf("pending = %v, want %v", pending, tc.pending)
			}
			if got, _ := s.Active(); got != tc.wantSlot {
				t.Errorf("current at %s, want %s", got, tc.wantSlot)
			}
			rj, err := OpenRejections(state)
			if err != nil {
				t.Fatal(err)
			}
			r, rejected := rj.Rejected(schema.RejectAgent, "1.5.0")
			if rejected != tc.rejection {
				t.Errorf("rejected = %v (%+v), want %v", rejected, r, tc.rejection)
			}
			if rejected && r.Version != 7 {
				t.Errorf("rejection %+v, want manifest version 7", r)
			}
		})
	}
}

// TestResumeSetsAsideABrokenPending: a torn pending file is moved aside,
// current left alone.
func TestResumeSetsAsideABrokenPending(t *testing.T) {
	root := t.TempDir()
	s := Slots{Root: root}
	bin := filepath.Join(t.TempDir(), "bin")
	os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755)
	if err := Install(root, bin); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(s.PendingPath(), []byte(`{"from":"a","to`), 0o600)
	restart, err := (&Upgrader{Slots: s, StateDir: t.TempDir(), Version: "1.4.0"}).Resume()
	if err != nil || restart {
		t.Fatalf("Resume = %v, %v", restart, err)
	}
	if _, err := os.Stat(s.PendingPath() + ".bad"); err != nil {
		t.Error(err)
	}
	if got, _ := s.Active(); got != "a" {
		t.Errorf("current at %s", got)
	}
}

func FuzzParsePending(f *testing.F) {
	good, _ := json.Marshal(Pending{From: "a", To: "b", FromVersion: "1.4.0", Version: "1.5.0", Manifest: 3,
		Deadline: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), Timeout: time.Minute, StateDir: "/var/lib/genesis-agent", Restart: []string{"systemctl", "restart", "genesis-agent.service"}})
	f.Add(good)
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"from":"b","to":"b"}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePending(data)
		if err != nil {
			return
		}
		if p.To == p.From || len(p.Restart) == 0 || !filepath.IsAbs(p.StateDir) {
			t.Errorf("accepted %+v", p)
		}
	})
}

func FuzzReadHealthy(f *testing.F) {
	f.Add([]byte(`{"version":"1.5.0","at":"2030-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"version":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, healthyFile), data, 0o600)
		if h, ok := ReadHealthy(dir); ok && h.Version == "" {
			t.Errorf("accepted %+v", h)
		}
	})
}
