package sealing

import (
	"errors"
	"strings"
	"testing"

	"filippo.io/age"

	"genesis.dev/fleet/schema"
)

func TestSealOpen(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	other, _ := age.GenerateX25519Identity()
	c := schema.SealedCredential{Workspace: "ws-a", Droplet: "42", Name: "gmail", Data: []byte(`{"clientSecret":"s3cret"}`)}
	sealed, digest, err := Seal(id.Recipient(), c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "s3cret") {
		t.Fatal("plaintext in the ciphertext")
	}
	mc := schema.ManifestCredential{Name: "gmail", Type: "gmailOAuth2", Sealed: sealed, SHA256: digest}
	data, err := Open(id, mc, "ws-a", "42")
	if err != nil || string(data) != `{"clientSecret":"s3cret"}` {
		t.Fatalf("Open = %s, %v", data, err)
	}
	tests := []struct {
		name     string
		mc       schema.ManifestCredential
		id       age.Identity
		ws, drop string
		want     string
	}{
		{"another droplet", mc, id, "ws-a", "43", "bound to another slot"},
		{"another workspace", mc, id, "ws-b", "42", "bound to another slot"},
		{"another slot name", schema.ManifestCredential{Name: "openai", Sealed: sealed, SHA256: digest}, id, "ws-a", "42", "bound to another slot"},
		{"digest mismatch", schema.ManifestCredential{Name: "gmail", Sealed: sealed, SHA256: strings.Repeat("0", 64)}, id, "ws-a", "42", "digest"},
		{"wrong identity", mc, other, "ws-a", "42", "did not match"},
	}
	for _, tt := range tests {
		_, err := Open(tt.id, tt.mc, tt.ws, tt.drop)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error holds the plaintext", tt.name)
		}
	}
	if _, err := Open(id, schema.ManifestCredential{Name: "gmail", Sealed: sealed, SHA256: digest}, "ws-a", "43"); !errors.Is(err, ErrBinding) {
		t.Errorf("binding error kind: %v", err)
	}
}
