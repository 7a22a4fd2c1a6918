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
