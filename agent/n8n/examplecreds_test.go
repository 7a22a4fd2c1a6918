package n8n_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"filippo.io/age"

	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/fakes/n8ntest"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
)

// TestExampleCredentialsAccepted opens every credential of state-example
// with its demo key and creates it in n8n (the emulator, which validates
// against n8n 1.123.81's own credential schemas, or a real n8n with
// GENESIS_N8N_BIN): the example must hold data n8n accepts.
func TestExampleCredentialsAccepted(t *testing.T) {
	root := filepath.Join("..", "..", "state-example")
	keyData, err := os.ReadFile(filepath.Join(root, "demo-keys", "age.key"))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(keyData))
	if err != nil {
		t.Fatal(err)
	}
	repo := schema.LoadDir(os.DirFS(root))
	if len(repo.Errors) > 0 {
		t.Fatal(repo.Errors)
	}
	url, _ := n8ntest.Start(t)
	c, _ := bootstrapped(t, url)
	n := 0
	for _, id := range repo.IDs() {
		for _, cr := range repo.Tenants[id].Spec.Credentials {
			plain, err := sealing.Decrypt(cr.Sealed, ids...)
			if err != nil {
				t.Fatalf("%s/%s: %v", id, cr.Name, err)
			}
			if _, err := c.CreateCredential(t.Context(), n8n.NewCredential{Name: id + "-" + cr.Name, Type: cr.Type, Data: plain}); err != nil {
				t.Errorf("%s/%s (%s): n8n refuses the example's data: %v", id, cr.Name, cr.Type, err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("state-example has no credentials to check")
	}
}
