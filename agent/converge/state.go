package converge

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files the converger keeps in the agent's state directory.
const (
	n8nFile   = "n8n.json"      // owner e-mail, password and API key
	stateFile = "converge.json" // the dynamic UUID map and workflow records
)

// n8nAccess is how the agent logs in to its n8n. Secret: 0600, never logged.
type n8nAccess struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	APIKey   string `json:"api_key,omitempty"`
	// APIKeyID is APIKey's id in n8n (known once a rotation made it).
	APIKeyID string `json:"api_key_id,omitempty"`
	// NextPassword is a password a rotation is moving the owner to:
	// recorded before n8n is asked, so a crash in between can still log
	// in (with one or the other).
	NextPassword string `json:"next_password,omitempty"`
	// Rotated is the highest secret rotation generation whose n8n part
	// is done.
	Rotated int64 `json:"rotated,omitempty"`
}

// record is what converge.json holds.
type record struct {
	// Credentials is the dynamic UUID map: credential name → n8n id.
	Credentials map[string]credentialRecord `json:"credentials"`
	// Retired are n8n credential ids to delete once no workflow of ours
	// uses them (rotated or undeclared credentials).
	Retired []string `json:"retired,omitempty"`
	// Workflows by manifest workflow name.
	Workflows map[string]workflowRecord `json:"workflows"`
	// N8NStopped is set while n8n is stopped for a hibernation; it comes
	// back with the snapshot, so a woken droplet starts n8n again.
	N8NStopped bool `json:"n8n_stopped,omitempty"`
}

type credentialRecord struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	// SHA256 is the manifest's digest of the sealed ciphertext the
	// credential was created from.
	SHA256 string `json:"sha256"`
}

type workflowRecord struct {
	ID string `json:"id"`
	// Hash is the SHA-256 of the last body sent for it; empty when unknown.
	Hash string `json:"hash,omitempty"`
}

func loadJSON(dir, name string, v any) (bool, error) {
	data, err := os.ReadFile(filepath.Join(dir, name))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s: %w", name, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return false, fmt.Errorf("read %s: %w", name, err)
	}
	return true, nil
}

// saveJSON replaces dir/name atomically (write, fsync, rename, fsync the
// directory) with mode 0600.
func saveJSON(dir, name string, v any) (err error) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	path := filepath.Join(dir, name)
	tmp, err := os.CreateTemp(dir, "."+name+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// newPassword returns a random password n8n accepts (8–64 characters, a
// digit and an uppercase letter).
func newPassword() string {
	return "G1" + rand.Text()
}
