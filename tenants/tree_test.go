package tenants

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"genesis.dev/fleet/internal/testkit"
)

// TestReadTreeLoose holds readTree's fast path for loose objects to what
// go-git reads, and a damaged loose object to an error, never a tree.
func TestReadTreeLoose(t *testing.T) {
	dir := t.TempDir()
	testkit.Git(t, dir, "init", "-q", "-b", "main")
	for _, name := range []string{"a.yaml", "b.yaml", "c.yaml"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Git(t, dir, "add", "-A")
	testkit.Git(t, dir, "commit", "-q", "-m", "three files")
	h := plumbing.NewHash(strings.TrimSpace(testkit.Git(t, dir, "rev-parse", "HEAD^{tree}")))
	repo, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readTree(repo, h)
	if err != nil {
		t.Fatal(err)
	}
	o, err := repo.Storer.EncodedObject(plumbing.TreeObject, h)
	if err != nil {
		t.Fatal(err)
	}
	r, err := o.Reader()
	if err != nil {
		t.Fatal(err)
	}
	want, err := io.ReadAll(r)
	r.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) || !bytes.Contains(got, []byte("b.yaml\x00")) {
		t.Fatalf("readTree: %q, go-git: %q", got, want)
	}

	// Damage the loose object: its last bytes (the deflate stream's end
	// and the checksum) are cut off.
	p := filepath.Join(dir, ".git", "objects", h.String()[:2], h.String()[2:])
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data[:len(data)-6], 0o644); err != nil {
		t.Fatal(err)
	}
	repo, err = git.PlainOpen(dir) // no cached copy of the tree
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := readTree(repo, h); err == nil {
		t.Fatalf("a truncated loose tree read as %q, want an error", raw)
	}
}
