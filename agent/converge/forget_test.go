package converge_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"genesis.dev/fleet/agent/converge"
)

// TestForgetAfterN8NLostItsData: a converged droplet whose n8n comes back
// empty (a new database behind the same address) cannot converge with the
// recorded API key; after Forget it bootstraps the new n8n and converges
// everything again. The agent's other files are left alone.
func TestForgetAfterN8NLostItsData(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	m, plain := manifest(1, creds5, workflows4, "track.acme.com")
	if err := r.converger().Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(r.dir, "applied.json")
	if err := os.WriteFile(other, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The same address now serves an empty n8n.
	fresh := startN8N(t, r.dir)
	r.n8n.proxy = fresh.proxy
	r.n8n.emu = fresh.emu
	if err := r.converger().Apply(ctx, m, plain); err == nil {
		t.Fatal("apply with the old n8n's API key succeeded against an empty n8n")
	}

	if err := converge.Forget(r.dir); err != nil {
		t.Fatal(err)
	}
	if err := r.converger().Apply(ctx, m, plain); err != nil {
		t.Fatalf("apply after Forget: %v", err)
	}
	converged(t, r, m, plain)
	if _, err := os.Stat(other); err != nil {
		t.Errorf("Forget touched another file: %v", err)
	}
	// Twice, and on an empty directory, is fine.
	for _, dir := range []string{r.dir, r.dir, t.TempDir()} {
		if err := converge.Forget(dir); err != nil {
			t.Errorf("Forget(%s): %v", dir, err)
		}
	}
}

// TestAccessTravelsWithBackup: the converger's records copied into n8n's
// data directory before a backup let the droplet that restores it use
// the restored n8n (its owner, key and the ids of what was made) instead
// of failing on a key it does not know and making everything twice.
func TestAccessTravelsWithBackup(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	m, plain := manifest(1, creds5, workflows4, "track.acme.com")
	if err := r.converger().Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	if err := r.converger().ExportAccess(data); err != nil {
		t.Fatal(err)
	}
	// A new droplet restored n8n's data: its agent has no records of its own.
	if err := converge.Forget(r.dir); err != nil {
		t.Fatal(err)
	}
	c := r.converger()
	if err := c.AdoptAccess(data); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatalf("apply after adopting the restored records: %v", err)
	}
	converged(t, r, m, plain)
	// No records in the data (an older backup): nothing changes.
	if err := c.AdoptAccess(t.TempDir()); err != nil {
		t.Errorf("adopt from a backup without records: %v", err)
	}
	// A record that is not a login is refused.
	if err := os.WriteFile(filepath.Join(data, converge.AccessDir, "n8n.json"), []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.AdoptAccess(data); err == nil {
		t.Error("adopted an empty login record")
	}
}
