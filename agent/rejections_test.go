package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/schema"
)

func TestRejectionsPersist(t *testing.T) {
	dir := t.TempDir()
	r, err := OpenRejections(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.List() != nil {
		t.Fatalf("new list: %v", r.List())
	}
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	if err := r.Add(schema.Rejection{Version: 7, Part: schema.RejectN8N, Target: "9.9.9", Reason: strings.Repeat("x", 900), At: at}); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(schema.Rejection{Version: 8, Part: schema.RejectAgent, Target: "2.0.0", Reason: "crashed", At: at}); err != nil {
		t.Fatal(err)
	}
	again, err := OpenRejections(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := again.List()
	if len(got) != 2 || got[0].Part != schema.RejectAgent || got[1].Target != "9.9.9" || len(got[1].Reason) != 500 {
		t.Fatalf("reopened: %+v", got)
	}
	if _, ok := again.Rejected(schema.RejectN8N, "9.9.9"); !ok {
		t.Error("9.9.9 is not rejected after a restart")
	}
	// The manifest still asks for 9.9.9: kept. The older manifest 6
	// (reapplied at a restart) asks for another version: kept. A newer
	// one asks for 9.9.10: gone.
	if err := again.Forget(schema.RejectN8N, "9.9.9", 9); err != nil {
		t.Fatal(err)
	}
	if _, ok := again.Rejected(schema.RejectN8N, "9.9.9"); !ok {
		t.Error("Forget dropped the rejection the manifest still asks for")
	}
	if err := again.Forget(schema.RejectN8N, "1.0.0", 6); err != nil {
		t.Fatal(err)
	}
	if _, ok := again.Rejected(schema.RejectN8N, "9.9.9"); !ok {
		t.Error("reapplying an older manifest ended the rejection")
	}
	if err := again.Forget(schema.RejectN8N, "9.9.10", 9); err != nil {
		t.Fatal(err)
	}
	if _, ok := again.Rejected(schema.RejectN8N, "9.9.9"); ok {
		t.Error("a manifest asking for another version did not end the rejection")
	}
	if _, ok := again.Rejected(schema.RejectAgent, "2.0.0"); !ok {
		t.Error("Forget of n8n dropped the agent's rejection")
	}
	if err := os.WriteFile(filepath.Join(dir, rejectionsFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRejections(dir); err == nil || !strings.Contains(err.Error(), rejectionsFile) {
		t.Errorf("broken file: err = %v, want one naming %s", err, rejectionsFile)
	}
}
