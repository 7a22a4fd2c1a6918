package sealing

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"filippo.io/age"
	"filippo.io/age/armor"

	"genesis.dev/fleet/internal/testkit"
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

// TestDecrypt: what Seal sealed opens, in one chunk and across several
// (age's chunks are 64 KiB); a truncated or altered file, or one past the
// limit, is an error.
func TestDecrypt(t *testing.T) {
	id, _ := age.GenerateX25519Identity()
	for _, size := range []int{0, 1, 64 << 10, 64<<10 + 1, 200 << 10} {
		plain := bytes.Repeat([]byte{'x'}, size)
		sealed := testkit.Seal(t, id.Recipient(), string(plain))
		got, err := Decrypt(sealed, id)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: got %d bytes, %v", size, len(got), err)
		}
		if want, err := decryptStream(sealed, id); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: age.Decrypt's stream reader gives %d bytes, %v", size, len(want), err)
		}
	}
	sealed := testkit.Seal(t, id.Recipient(), `{"clientSecret":"s3cret"}`)
	bin, err := io.ReadAll(armor.NewReader(strings.NewReader(sealed)))
	if err != nil {
		t.Fatal(err)
	}
	rearmor := func(b []byte) string {
		var buf bytes.Buffer
		w := armor.NewWriter(&buf)
		w.Write(b)
		w.Close()
		return buf.String()
	}
	flipped := bytes.Clone(bin)
	flipped[len(flipped)-3] ^= 1
	for name, s := range map[string]string{
		"truncated":   rearmor(bin[:len(bin)-1]),
		"altered":     rearmor(flipped),
		"no armor":    string(bin),
		"past limit":  testkit.Seal(t, id.Recipient(), strings.Repeat("x", maxPlain+1)),
		"empty input": "",
	} {
		if got, err := Decrypt(s, id); err == nil {
			t.Errorf("%s: opened as %d bytes, want an error", name, len(got))
		}
	}
}

// decryptStream is Decrypt as it was: age.Decrypt's stream reader.
func decryptStream(sealed string, ids ...age.Identity) ([]byte, error) {
	r, err := age.Decrypt(armor.NewReader(strings.NewReader(sealed)), ids...)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(r, maxPlain+1))
}

// BenchmarkDecrypt opens a sealed credential (the fleet-sealed copy a
// render opens once per droplet): Decrypt against the same-run baseline of
// age.Decrypt's stream reader (stream), in B/op and ns/op.
func BenchmarkDecrypt(b *testing.B) {
	id, _ := age.GenerateX25519Identity()
	sealed := testkit.Seal(b, id.Recipient(), `{"clientId":"bench","clientSecret":"0123456789abcdef0123456789abcdef"}`)
	for name, open := range map[string]func(string, ...age.Identity) ([]byte, error){"readerat": Decrypt, "stream": decryptStream} {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if _, err := open(sealed, id); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
