package service

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoadAnnounced: bad --announce-signing-key files are refused by name
// (genesis-reconciler's TestAnnounceFlag covers the flag itself).
func TestLoadAnnounced(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pub")
	os.WriteFile(bad, []byte("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), 0o644)
	if _, err := loadAnnounced([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("bad key: %v", err)
	}
	if _, err := loadAnnounced([]string{filepath.Join(dir, "missing.pub")}); err == nil {
		t.Error("missing key file: no error")
	}
}
