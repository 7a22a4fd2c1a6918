package backup

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"filippo.io/age"
)

func newKeys(t testing.TB) *Keys {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKeys([]byte("# created: for a test\n" + id.String() + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeysIdentity(t *testing.T) {
	k1, k2 := newKeys(t), newKeys(t)
	id := func(k *Keys, ws string) string {
		t.Helper()
		i, err := k.Identity(ws)
		if err != nil {
			t.Fatal(err)
		}
		return i.String()
	}
	a := id(k1, "ws-a")
	if !strings.HasPrefix(a, "AGE-SECRET-KEY-1") {
		t.Errorf("identity %q is not an age secret key", a[:16])
	}
	if id(k1, "ws-a") != a {
		t.Error("Identity is not deterministic for one workspace")
	}
	if id(k1, "ws-b") == a {
		t.Error("two workspaces share an identity")
	}
	if id(k2, "ws-a") == a {
		t.Error("two backup keys give one workspace the same identity")
	}
	// Loading the same key file again gives the same identities (a
	// restart, another replica).
	again, err := NewKeys([]byte(strings.Join([]string{"", string(k1.secret), ""}, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	if id(again, "ws-a") != a {
		t.Error("the same backup key loaded twice derives different identities")
	}
}

func TestKeysRoundTrip(t *testing.T) {
	k := newKeys(t)
	for _, ws := range []string{"ws-a", "ws-b", strings.Repeat("w", 40)} {
		t.Run(ws, func(t *testing.T) {
			rec, err := k.Recipient(ws)
			if err != nil {
				t.Fatal(err)
			}
			id, err := k.Identity(ws)
			if err != nil {
				t.Fatal(err)
			}
			if got := id.Recipient().String(); got != rec {
				t.Errorf("Recipient = %s, identity's recipient = %s", rec, got)
			}
			r, err := age.ParseX25519Recipient(rec)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			w, err := age.Encrypt(&buf, r)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(w, "pg_dump of "+ws)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			cipher := buf.Bytes()
			out, err := age.Decrypt(bytes.NewReader(cipher), id)
			if err != nil {
				t.Fatal(err)
			}
			plain, _ := io.ReadAll(out)
			if string(plain) != "pg_dump of "+ws {
				t.Errorf("decrypted %q", plain)
			}
			other, _ := k.Identity(ws + "-other")
			if _, err := age.Decrypt(bytes.NewReader(cipher), other); err == nil {
				t.Error("another workspace's identity opens the backup")
			}
		})
	}
}

func TestNewKeysErrors(t *testing.T) {
	a, _ := age.GenerateX25519Identity()
	b, _ := age.GenerateX25519Identity()
	for name, file := range map[string]string{
		"empty":          "",
		"not a key":      "hello\n",
		"two identities": a.String() + "\n" + b.String() + "\n",
		"a recipient":    a.Recipient().String() + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewKeys([]byte(file)); err == nil {
				t.Error("NewKeys accepted it")
			} else if strings.Contains(err.Error(), a.String()) {
				t.Error("the error holds the key")
			}
		})
	}
}
