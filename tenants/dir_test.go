package tenants

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/testkit"
)

func TestDirSource(t *testing.T) {
	r := newExampleRepo(t)
	src := NewDirSource(r.Dir, quietLogger())
	first := mustSync(t, src)
	if first.Commit != "" || len(first.Tenants) != len(exampleIDs) || len(first.Errors) != 0 {
		t.Fatalf("first: commit %q, %d tenants, errors %v", first.Commit, len(first.Tenants), first.Errors)
	}
	agreesWithLoadDir(t, r.Dir, first)

	tests := []struct {
		name        string
		edit        func()
		wantParses  int64
		wantChanged []string
	}{
		{"nothing", func() {}, 0, nil},
		{"uncommitted new tenant", func() { r.Write("tenants/ws-draft.yaml", testkit.TenantYAML(tenant("ws-draft", "nyc1"))) }, 1, []string{"ws-draft"}},
		{"rewritten with the same content", func() {
			p := "tenants/ws-stark.yaml"
			old := r.Read(p)
			r.Write(p, old+"\n")
			r.Write(p, old)
		}, 0, nil},
		{"edited", func() {
			p := "tenants/ws-draft.yaml"
			r.Write(p, strings.Replace(r.Read(p), "starter", "enterprise", 1))
		}, 1, []string{"ws-draft"}},
		{"broken", func() { r.Write("tenants/ws-draft.yaml", "nope: [") }, 1, []string{"ws-draft"}},
		{"oversized", func() { r.Write("tenants/ws-big.yaml", strings.Repeat("#", 2<<20)) }, 0, []string{"ws-big"}},
		{"deleted", func() { r.Remove("tenants/ws-big.yaml"); r.Remove("tenants/ws-draft.yaml") }, 0, []string{"ws-big", "ws-draft"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := src.Stats()
			tt.edit()
			snap := mustSync(t, src)
			if got := src.Stats().Parses - before.Parses; got != tt.wantParses {
				t.Errorf("parses: got %d, want %d", got, tt.wantParses)
			}
			if diff := cmp.Diff(snap.Changed, tt.wantChanged); diff != "" {
				t.Errorf("changed (-got +want):\n%s", diff)
			}
			agreesWithLoadDir(t, r.Dir, snap)
		})
	}
	if _, err := NewDirSource(filepath.Join(r.Dir, "missing"), nil).Sync(context.Background()); err == nil {
		t.Error("a missing folder was read as an empty fleet")
	}
}

func TestDirSourceExample(t *testing.T) {
	snap := mustSync(t, NewDirSource("../state-example", quietLogger()))
	if diff := cmp.Diff(snap.IDs(), exampleIDs); diff != "" {
		t.Errorf("ids (-got +want):\n%s", diff)
	}
	agreesWithLoadDir(t, "../state-example", snap)
	if _, err := os.Stat("../state-example/.git"); err == nil {
		t.Log("state-example has its own .git")
	}
}
