// Package sealing encrypts credentials with age, bound to the slot they are
// for.
//
// Admins seal a credential's data to the fleet's recipients (genesis seal).
// The reconciler opens it in memory with the fleet identity and seals it
// again to one droplet's own recipient, wrapping the data in a
// schema.SealedCredential that names the workspace, droplet and credential
// it is for. The agent opens it with its identity and refuses data bound to
// another slot, so a ciphertext copied from one droplet's manifest to
// another's, or from one credential to another, is rejected. Plaintext is
// never written anywhere by this package.
package sealing

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"
	"filippo.io/age/armor"

	"genesis.dev/fleet/schema"
)

// maxPlain bounds a decrypted credential.
const maxPlain = 256 << 10

// Digest is the hex SHA-256 of a sealed credential, as listed in manifests.
func Digest(sealed string) string {
	sum := sha256.Sum256([]byte(sealed))
	return hex.EncodeToString(sum[:])
}

// Seal encrypts c to recipient and returns the armored ciphertext and its
// digest.
func Seal(recipient age.Recipient, c schema.SealedCredential) (string, string, error) {
	plain, err := json.Marshal(c)
	if err != nil {
		return "", "", err
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, recipient)
	if err != nil {
		return "", "", fmt.Errorf("seal credential %s: %w", c.Name, err)
	}
	if _, err := w.Write(plain); err != nil {
		return "", "", err
	}
	if err := w.Close(); err != nil {
		return "", "", err
	}
	if err := aw.Close(); err != nil {
		return "", "", err
	}
	s := buf.String()
	return s, Digest(s), nil
}

// Decrypt opens an armored age file with any of ids and returns its
// plaintext (bounded).
//
// The file is read whole and opened with age.DecryptReaderAt, which
// authenticates the final chunk (and so the size) before anything is read:
// a credential is one small chunk, and age.Decrypt's stream reader would
// allocate two 64 KiB buffers for it, one 64 KiB buffer here. A render of
// 100,000 first manifests opens 100,000 credentials (the leader's largest
// source of garbage in a 100,000-agent run).
func Decrypt(sealed string, ids ...age.Identity) ([]byte, error) {
	// An armored file is 4/3 of the binary one and more: the binary one
	// never outgrows the armored string.
	bin, err := io.ReadAll(io.LimitReader(armor.NewReader(strings.NewReader(sealed)), int64(len(sealed))+1))
	if err != nil {
		return nil, err
	}
	r, size, err := age.DecryptReaderAt(bytes.NewReader(bin), int64(len(bin)), ids...)
	if err != nil {
		return nil, err
	}
	if size > maxPlain {
		return nil, errors.New("sealed data is larger than the limit")
	}
	plain := make([]byte, size)
	if n, err := r.ReadAt(plain, 0); n != len(plain) {
		clear(plain)
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return plain, nil
}

// ErrBinding means a credential was sealed for another slot.
var ErrBinding = errors.New("credential is bound to another slot")

// Open decrypts a manifest credential with the droplet's identity, checks
// its digest and that it is bound to (workspace, droplet, name), and returns
// the credential data.
func Open(id age.Identity, mc schema.ManifestCredential, workspace, droplet string) (json.RawMessage, error) {
	if Digest(mc.Sealed) != mc.SHA256 {
		return nil, fmt.Errorf("credential %s: ciphertext digest does not match the manifest", mc.Name)
	}
	plain, err := Decrypt(mc.Sealed, id)
	if err != nil {
		return nil, fmt.Errorf("credential %s: %w", mc.Name, err)
	}
	var c schema.SealedCredential
	if err := schema.DecodeStrict(plain, &c); err != nil {
		return nil, fmt.Errorf("credential %s: malformed sealed plaintext", mc.Name)
	}
	if c.Workspace != workspace || c.Droplet != droplet || c.Name != mc.Name {
		return nil, fmt.Errorf("credential %s: %w (sealed for %s/%s/%s)", mc.Name, ErrBinding, c.Workspace, c.Droplet, c.Name)
	}
	return c.Data, nil
}
