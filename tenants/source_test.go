package tenants

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

var exampleIDs = []string{"ws-acme", "ws-globex", "ws-hooli", "ws-initech", "ws-soylent", "ws-stark", "ws-umbrella"}

// agreesWithLoadDir checks that an incrementally built snapshot judges every
// file as schema.LoadDir judges the same tree from scratch.
func agreesWithLoadDir(t *testing.T, dir string, snap Snapshot) {
	t.Helper()
	r := schema.LoadDir(os.DirFS(dir))
	if diff := cmp.Diff(snap.Errors, r.Errors); diff != "" {
		t.Errorf("snapshot errors differ from LoadDir (-got +want):\n%s", diff)
	}
	for id, tn := range r.Tenants {
		st, ok := snap.Tenants[id]
		if !ok || st.Status != StatusValid {
			t.Errorf("LoadDir says %s is valid, snapshot says %+v", id, st)
		}
		if ok && tn.Metadata.Name != st.Tenant.Metadata.Name {
			t.Errorf("tenant %s: got name %q, LoadDir %q", id, st.Tenant.Metadata.Name, tn.Metadata.Name)
		}
	}
	for file := range r.Invalid {
		if st := snap.Tenants[schema.IDFromPath(file)]; st.Status != StatusInvalid {
			t.Errorf("LoadDir says %s is invalid, snapshot says %q", file, st.Status)
		}
	}
}

func TestOnboardByCommit(t *testing.T) {
	r := newExampleRepo(t)
	s := openLocal(t, r.Dir)
	first := mustSync(t, s)
	if diff := cmp.Diff(first.IDs(), exampleIDs); diff != "" {
		t.Fatalf("ids (-got +want):\n%s", diff)
	}
	if len(first.Errors) != 0 {
		t.Fatalf("example state has errors: %v", first.Errors)
	}
	if diff := cmp.Diff(first.Changed, exampleIDs); diff != "" {
		t.Errorf("first snapshot: every tenant is new (-got +want):\n%s", diff)
	}
	if first.Commit != testkit.Git(t, r.Dir, "rev-parse", "HEAD") || first.Fleet == nil || first.Time.IsZero() {
		t.Errorf("first snapshot: commit %q fleet %v time %v", first.Commit, first.Fleet, first.Time)
	}

	r.Write("tenants/ws-new.yaml", testkit.TenantYAML(tenant("ws-new", "fra1", "new.example.com")))
	head := r.Commit(WithCorrelation("onboard ws-new", "req-onboard-1"))
	before := s.Stats()
	snap := mustSync(t, s)
	if snap.Commit != head {
		t.Errorf("commit: got %s, want %s", snap.Commit, head)
	}
	if snap.Correlation != "req-onboard-1" || first.Correlation != "git-"+first.Commit[:12] {
		t.Errorf("correlation: %q after the trailer commit, %q before", snap.Correlation, first.Correlation)
	}
	st, ok := snap.Tenants["ws-new"]
	if !ok || st.Status != StatusValid || st.Tenant == nil || st.Tenant.Spec.Droplet.Region != "fra1" || st.File != "tenants/ws-new.yaml" {
		t.Fatalf("ws-new: got %+v", st)
	}
	if st.Blob != testkit.Git(t, r.Dir, "rev-parse", "HEAD:tenants/ws-new.yaml") || st.ValidBlob != st.Blob {
		t.Errorf("ws-new blob %s valid blob %s", st.Blob, st.ValidBlob)
	}
	if diff := cmp.Diff(snap.Changed, []string{"ws-new"}); diff != "" {
		t.Errorf("changed (-got +want):\n%s", diff)
	}
	if got := s.Stats().Parses - before.Parses; got != 1 {
		t.Errorf("parses for a one-tenant commit: got %d, want 1", got)
	}
	if snap.FleetChanged {
		t.Error("fleet reported changed")
	}
	// Unchanged tenants keep their decoded value: nothing was re-decoded.
	if first.Tenants["ws-acme"].Tenant != snap.Tenants["ws-acme"].Tenant {
		t.Error("ws-acme was decoded again")
	}
	agreesWithLoadDir(t, r.Dir, snap)

	// The same head again: nothing to do, nothing changed.
	again := mustSync(t, s)
	if again.Commit != head || again.Changed != nil || s.Stats().Syncs != 2 {
		t.Errorf("resync: commit %s changed %v syncs %d", again.Commit, again.Changed, s.Stats().Syncs)
	}
}

func TestParsesPerCommit(t *testing.T) {
	acme := "tenants/ws-acme.yaml"
	tests := []struct {
		name        string
		edit        func(r *testkit.StateRepo)
		wantParses  int64
		wantChecks  int64
		wantChanged []string
		wantFleet   bool
	}{
		{
			name:        "one tenant edited",
			edit:        func(r *testkit.StateRepo) { r.Write(acme, strings.Replace(r.Read(acme), "Acme", "Acme Two", 1)) },
			wantParses:  1,
			wantChecks:  1,
			wantChanged: []string{"ws-acme"},
		},
		{
			name:       "unrelated file",
			edit:       func(r *testkit.StateRepo) { r.Write("README.md", "hello\n") },
			wantParses: 0,
			wantChecks: 0,
		},
		{
			name:        "non-tenant file in tenants/",
			edit:        func(r *testkit.StateRepo) { r.Write("tenants/notes.txt", "not a tenant\n") },
			wantParses:  0,
			wantChanged: nil,
		},
		{
			// The fleet changed: one parse, and every tenant's context rules
			// are re-checked without decoding any tenant again.
			name: "genesis.yaml edited",
			edit: func(r *testkit.StateRepo) {
				r.Write("genesis.yaml", strings.Replace(r.Read("genesis.yaml"), "maxDestroyPerRun: 5", "maxDestroyPerRun: 6", 1))
			},
			wantParses: 1,
			wantChecks: 7,
			wantFleet:  true,
		},
		{
			// A template changed: one parse, every tenant re-checked, and the
			// tenants using it are reported changed (their manifests render
			// differently).
			name: "template edited",
			edit: func(r *testkit.StateRepo) {
				p := "templates/workflows/click-tracker.json"
				r.Write(p, strings.Replace(r.Read(p), `"name"`, `"name" `, 1))
			},
			wantParses:  1,
			wantChecks:  7,
			wantChanged: []string{"ws-acme", "ws-globex", "ws-hooli", "ws-initech", "ws-stark", "ws-umbrella"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newExampleRepo(t)
			s := openLocal(t, r.Dir)
			mustSync(t, s)
			before := s.Stats()
			tt.edit(r)
			r.Commit(tt.name)
			snap := mustSync(t, s)
			after := s.Stats()
			if got := after.Parses - before.Parses; got != tt.wantParses {
				t.Errorf("parses: got %d, want %d", got, tt.wantParses)
			}
			if tt.wantChecks >= 0 {
				if got := after.Checks - before.Checks; got != tt.wantChecks {
					t.Errorf("checks: got %d, want %d", got, tt.wantChecks)
				}
			}
			if got := after.TenantParses - before.TenantParses; got > 1 {
				t.Errorf("tenant parses: got %d", got)
			}
			if diff := cmp.Diff(snap.Changed, tt.wantChanged); diff != "" {
				t.Errorf("changed (-got +want):\n%s", diff)
			}
			if snap.FleetChanged != tt.wantFleet {
				t.Errorf("fleet changed: got %v, want %v", snap.FleetChanged, tt.wantFleet)
			}
			agreesWithLoadDir(t, r.Dir, snap)
		})
	}
}

func TestOneParseAtScale(t *testing.T) {
	const n = 2000
	r := newGenRepo(t, n)
	s := openLocal(t, r.Dir)
	first := mustSync(t, s)
	if len(first.Tenants) != n || len(first.Errors) != 0 {
		t.Fatalf("cold load: %d tenants, errors %v", len(first.Tenants), first.Errors.Err())
	}
	if got := s.Stats().TenantParses; got != n {
		t.Errorf("cold load tenant parses: got %d, want %d", got, n)
	}
	p := "tenants/ws-gen-001234.yaml"
	r.Write(p, strings.Replace(r.Read(p), "tier: starter", "tier: pro", 1))
	r.Commit("upgrade one")
	before := s.Stats()
	snap := mustSync(t, s)
	if got := s.Stats().Parses - before.Parses; got != 1 {
		t.Errorf("parses: got %d, want 1", got)
	}
	if got := s.Stats().Checks - before.Checks; got != 1 {
		t.Errorf("checks: got %d, want 1", got)
	}
	if diff := cmp.Diff(snap.Changed, []string{"ws-gen-001234"}); diff != "" {
		t.Errorf("changed (-got +want):\n%s", diff)
	}
	if got := snap.Tenants["ws-gen-001234"].Tenant.Metadata.Tier; got != schema.TierPro {
		t.Errorf("tier: got %q", got)
	}
}

func TestBrokenTenantKeepsLastValid(t *testing.T) {
	r := newExampleRepo(t)
	s := openLocal(t, r.Dir)
	first := mustSync(t, s)
	good := first.Tenants["ws-acme"]

	tests := []struct {
		name    string
		content func(old string) string
		wantErr string
	}{
		{"unknown field", func(old string) string { return old + "colour: blue\n" }, `tenants/ws-acme.yaml:`},
		{"not yaml", func(string) string { return "apiVersion: [\n" }, `tenants/ws-acme.yaml:`},
		{"unserved region", func(old string) string { return strings.Replace(old, "region: nyc3", "region: sfo3", 1) }, `no account in genesis.yaml serves region "sfo3"`},
		{"id differs from file name", func(old string) string { return strings.Replace(old, "id: ws-acme", "id: ws-acme2", 1) }, `ws-acme2`},
		{"empty file", func(string) string { return "" }, `tenants/ws-acme.yaml`},
	}
	orig := r.Read("tenants/ws-acme.yaml")
	if !strings.Contains(orig, "region: nyc3") {
		t.Fatal("fixture: ws-acme is not in nyc3")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.Write("tenants/ws-acme.yaml", tt.content(orig))
			r.Commit("break ws-acme: " + tt.name)
			snap := mustSync(t, s)
			st := snap.Tenants["ws-acme"]
			if st.Status != StatusInvalid || len(st.Errors) == 0 || !strings.Contains(st.Errors.Error(), tt.wantErr) {
				t.Fatalf("ws-acme: status %q errors %v, want invalid with %q", st.Status, st.Errors, tt.wantErr)
			}
			if st.Tenant != good.Tenant || st.ValidBlob != good.Blob || st.Blob == good.Blob {
				t.Errorf("ws-acme does not act on its last valid version: blob %s valid blob %s (good %s)", st.Blob, st.ValidBlob, good.Blob)
			}
			want := map[string]Status{}
			for _, id := range exampleIDs {
				want[id] = StatusValid
			}
			want["ws-acme"] = StatusInvalid
			if diff := cmp.Diff(statuses(snap), want); diff != "" {
				t.Errorf("statuses (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(snap.Invalid(), []string{"ws-acme"}); diff != "" {
				t.Errorf("invalid (-got +want):\n%s", diff)
			}
			agreesWithLoadDir(t, r.Dir, snap)
		})
	}

	// Fixed again: valid, acting on the new (identical) content.
	r.Write("tenants/ws-acme.yaml", orig)
	r.Commit("fix ws-acme")
	snap := mustSync(t, s)
	if st := snap.Tenants["ws-acme"]; st.Status != StatusValid || st.Errors != nil || st.Blob != good.Blob {
		t.Errorf("fixed ws-acme: %+v", st)
	}
	if diff := cmp.Diff(snap.Changed, []string{"ws-acme"}); diff != "" {
		t.Errorf("changed (-got +want):\n%s", diff)
	}

	// A tenant that was never valid has nothing to act on.
	r.Write("tenants/ws-broken.yaml", "kind: Tenant\n")
	r.Commit("broken newcomer")
	snap = mustSync(t, s)
	if st := snap.Tenants["ws-broken"]; st.Status != StatusInvalid || st.Tenant != nil || st.ValidBlob != "" {
		t.Errorf("never-valid tenant: %+v", st)
	}
}

func TestDeletedTenantIsAbsent(t *testing.T) {
	r := newExampleRepo(t)
	s := openLocal(t, r.Dir)
	mustSync(t, s)
	r.Remove("tenants/ws-hooli.yaml")
	r.Commit("remove ws-hooli")
	before := s.Stats()
	snap := mustSync(t, s)
	if _, ok := snap.Tenants["ws-hooli"]; ok {
		t.Error("deleted tenant is still in the snapshot")
	}
	if diff := cmp.Diff(snap.Changed, []string{"ws-hooli"}); diff != "" {
		t.Errorf("changed (-got +want):\n%s", diff)
	}
	if len(snap.Tenants) != len(exampleIDs)-1 || len(snap.Errors) != 0 {
		t.Errorf("%d tenants, errors %v", len(snap.Tenants), snap.Errors)
	}
	if got := s.Stats().Parses - before.Parses; got != 0 {
		t.Errorf("parses: got %d, want 0", got)
	}

	// Broken, then deleted, then re-added broken: its old version is gone
	// with the deletion, so there is nothing to act on.
	r.Write("tenants/ws-hooli.yaml", "kind: Tenant\n")
	r.Commit("re-add ws-hooli broken")
	snap = mustSync(t, s)
	if st := snap.Tenants["ws-hooli"]; st.Status != StatusInvalid || st.Tenant != nil {
		t.Errorf("re-added broken ws-hooli: %+v", st)
	}
}

func TestBrokenFleetKeepsLastValid(t *testing.T) {
	r := newExampleRepo(t)
	s := openLocal(t, r.Dir)
	first := mustSync(t, s)
	orig := r.Read("genesis.yaml")
	tests := []struct {
		name    string
		edit    func()
		wantErr string
	}{
		{"unknown field", func() { r.Write("genesis.yaml", orig+"extra: 1\n") }, "genesis.yaml:"},
		{"no accounts", func() {
			r.Write("genesis.yaml", strings.Replace(orig, "  accounts:", "  accountz:", 1))
		}, "genesis.yaml:"},
		{"deleted", func() { r.Remove("genesis.yaml") }, "genesis.yaml: file is missing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.edit()
			r.Commit("break fleet: " + tt.name)
			snap := mustSync(t, s)
			if snap.Fleet != first.Fleet {
				t.Error("the last valid fleet was not kept")
			}
			if snap.FleetChanged {
				t.Error("fleet reported changed")
			}
			if len(snap.FleetErrors) == 0 || !strings.Contains(snap.FleetErrors.Error(), tt.wantErr) {
				t.Errorf("fleet errors: got %v, want %q", snap.FleetErrors, tt.wantErr)
			}
			if len(snap.Invalid()) != 0 || len(snap.Tenants) != len(exampleIDs) {
				t.Errorf("tenants: %d, invalid %v", len(snap.Tenants), snap.Invalid())
			}
			if !strings.Contains(snap.Errors.Error(), tt.wantErr) {
				t.Errorf("snapshot errors lack the fleet error: %v", snap.Errors)
			}
		})
	}
	r.Write("genesis.yaml", orig)
	r.Commit("fix fleet")
	snap := mustSync(t, s)
	if snap.Fleet == nil || snap.FleetErrors != nil || len(snap.Errors) != 0 {
		t.Errorf("fixed fleet: %v %v", snap.FleetErrors, snap.Errors)
	}
}

func TestBrokenTemplateKeepsLastValid(t *testing.T) {
	r := newExampleRepo(t)
	s := openLocal(t, r.Dir)
	first := mustSync(t, s)
	p := "templates/workflows/click-tracker.json"
	r.Write(p, "{not json")
	r.Commit("break click-tracker")
	snap := mustSync(t, s)
	users := []string{"ws-acme", "ws-globex", "ws-hooli", "ws-initech", "ws-stark", "ws-umbrella"}
	if diff := cmp.Diff(snap.Invalid(), users); diff != "" {
		t.Errorf("invalid (-got +want):\n%s", diff)
	}
	for _, id := range users {
		st := snap.Tenants[id]
		if st.Tenant != first.Tenants[id].Tenant || !strings.Contains(st.Errors.Error(), `template "click-tracker" is invalid`) {
			t.Errorf("%s: %+v", id, st)
		}
	}
	if snap.Templates["click-tracker"] != first.Templates["click-tracker"] {
		t.Error("the last valid click-tracker is not in the snapshot for the tenants acting on it")
	}
	agreesWithLoadDir(t, r.Dir, snap)
}

func TestDomainHeldByBrokenTenant(t *testing.T) {
	r := newRepo(t)
	r.CopyExample("genesis.yaml")
	r.Write("tenants/ws-b.yaml", testkit.TenantYAML(tenant("ws-b", "nyc1", "shop.example.com")))
	r.Commit("ws-b")
	s := openLocal(t, r.Dir)
	mustSync(t, s)

	// ws-b breaks; ws-a (sorting first) claims its domain meanwhile. ws-b's
	// last valid version still holds it, so ws-a is refused and the domain
	// never moves because of a typo.
	r.Write("tenants/ws-b.yaml", "kind: Tenant\n")
	r.Write("tenants/ws-c.yaml", testkit.TenantYAML(tenant("ws-c", "nyc1", "shop.example.com")))
	r.Commit("break ws-b, ws-c claims its domain")
	snap := mustSync(t, s)
	if diff := cmp.Diff(statuses(snap), map[string]Status{"ws-b": StatusInvalid, "ws-c": StatusInvalid}); diff != "" {
		t.Errorf("statuses (-got +want):\n%s", diff)
	}
	if got := snap.Tenants["ws-c"].Errors.Error(); !strings.Contains(got, `domain "shop.example.com" is already claimed by tenants/ws-b.yaml`) {
		t.Errorf("ws-c errors: %s", got)
	}
}

func TestURLMode(t *testing.T) {
	remote := filepath.Join(t.TempDir(), "state.git")
	testkit.Git(t, t.TempDir(), "init", "-q", "--bare", "-b", "main", remote)
	r := newExampleRepo(t)
	testkit.Git(t, r.Dir, "remote", "add", "origin", remote)
	testkit.Git(t, r.Dir, "push", "-q", "origin", "main")

	cache := t.TempDir()
	ctx := context.Background()
	s, err := Open(Config{Repo: "file://" + remote, CacheDir: cache, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s.GitDir(), cache) {
		t.Errorf("clone at %s, not under the cache %s", s.GitDir(), cache)
	}
	first := mustSync(t, s)
	if first.Commit != testkit.Git(t, r.Dir, "rev-parse", "HEAD") || len(first.Tenants) != len(exampleIDs) {
		t.Fatalf("first sync: commit %s, %d tenants", first.Commit, len(first.Tenants))
	}

	r.Write("tenants/ws-pushed.yaml", testkit.TenantYAML(tenant("ws-pushed", "ams3")))
	head := r.Commit("onboard ws-pushed")
	testkit.Git(t, r.Dir, "push", "-q", "origin", "main")
	before := s.Stats()
	snap := mustSync(t, s)
	if snap.Commit != head || snap.Tenants["ws-pushed"].Status != StatusValid {
		t.Fatalf("after push: commit %s, ws-pushed %+v", snap.Commit, snap.Tenants["ws-pushed"])
	}
	if got := s.Stats().Parses - before.Parses; got != 1 {
		t.Errorf("parses: got %d, want 1", got)
	}

	// A second Source on the same cache reuses the clone.
	s2, err := Open(Config{Repo: "file://" + remote, CacheDir: cache, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if snap2 := mustSync(t, s2); snap2.Commit != head || s2.GitDir() != s.GitDir() {
		t.Errorf("reopened cache: commit %s dir %s", snap2.Commit, s2.GitDir())
	}

	// A branch that does not exist is an error, not an empty fleet.
	s3, err := Open(Config{Repo: "file://" + remote, Branch: "nope", CacheDir: cache, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s3.Sync(ctx); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing branch: got %v", err)
	}
}

func TestForcePushRefused(t *testing.T) {
	remote := filepath.Join(t.TempDir(), "state.git")
	testkit.Git(t, t.TempDir(), "init", "-q", "--bare", "-b", "main", remote)
	r := newExampleRepo(t)
	older := testkit.Git(t, r.Dir, "rev-parse", "HEAD")
	testkit.Git(t, r.Dir, "remote", "add", "origin", remote)
	r.Write("tenants/ws-new.yaml", testkit.TenantYAML(tenant("ws-new", "nyc1")))
	newer := r.Commit("onboard ws-new")
	testkit.Git(t, r.Dir, "push", "-q", "origin", "main")

	unrelated := newExampleRepo(t) // same files, unrelated history
	unrelated.Write("tenants/ws-other.yaml", testkit.TenantYAML(tenant("ws-other", "nyc1")))
	unrelated.Commit("other history")
	testkit.Git(t, unrelated.Dir, "remote", "add", "origin", remote)

	ctx := context.Background()
	tests := []struct {
		name string
		push func()
	}{
		{"reset to an older commit", func() { testkit.Git(t, r.Dir, "push", "-q", "--force", "origin", older+":refs/heads/main") }},
		{"unrelated history", func() { testkit.Git(t, unrelated.Dir, "push", "-q", "--force", "origin", "main") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testkit.Git(t, r.Dir, "push", "-q", "--force", "origin", newer+":refs/heads/main")
			s, err := Open(Config{Repo: "file://" + remote, CacheDir: t.TempDir(), Logger: quietLogger()})
			if err != nil {
				t.Fatal(err)
			}
			good := mustSync(t, s)
			if err := s.MarkReconciled(good.Commit); err != nil {
				t.Fatal(err)
			}
			tt.push()
			_, err = s.Sync(ctx)
			var he *HistoryError
			if !errors.Is(err, ErrNotDescendant) || !errors.As(err, &he) || he.Base != newer || he.Head == newer {
				t.Fatalf("got %v, want a HistoryError from %s", err, newer)
			}
			if cur := s.Current(); cur.Commit != newer || cur.Tenants["ws-new"].Status != StatusValid {
				t.Errorf("the previous snapshot was not kept: %s", cur.Commit)
			}
			// Refused every time until a person accepts the new history.
			if _, err := s.Sync(ctx); !errors.Is(err, ErrNotDescendant) {
				t.Errorf("second sync: %v", err)
			}
			if err := s.MarkReconciled(he.Head); err != nil {
				t.Fatal(err)
			}
			snap := mustSync(t, s)
			if snap.Commit != he.Head {
				t.Errorf("accepted head: got %s, want %s", snap.Commit, he.Head)
			}
			if _, ok := snap.Tenants["ws-new"]; ok {
				t.Error("ws-new survived the accepted rewrite")
			}
		})
	}

	// A restart passes the persisted commit back: the guard holds at once.
	testkit.Git(t, r.Dir, "push", "-q", "--force", "origin", older+":refs/heads/main")
	s, err := Open(Config{Repo: "file://" + remote, CacheDir: t.TempDir(), LastReconciled: newer, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Sync(ctx); !errors.Is(err, ErrNotDescendant) {
		t.Errorf("after restart: got %v, want ErrNotDescendant", err)
	}
	if _, err := Open(Config{Repo: r.Dir, LastReconciled: "not-a-hash"}); err == nil {
		t.Error("a bad LastReconciled was accepted")
	}
}

func TestLocalResetRefused(t *testing.T) {
	r := newExampleRepo(t)
	r.Write("tenants/ws-new.yaml", testkit.TenantYAML(tenant("ws-new", "nyc1")))
	r.Commit("onboard ws-new")
	s := openLocal(t, r.Dir)
	good := mustSync(t, s) // no MarkReconciled: the last loaded commit guards
	testkit.Git(t, r.Dir, "reset", "-q", "--hard", "HEAD~1")
	if _, err := s.Sync(context.Background()); !errors.Is(err, ErrNotDescendant) {
		t.Fatalf("got %v, want ErrNotDescendant", err)
	}
	if s.Current().Commit != good.Commit {
		t.Error("the previous snapshot was not kept")
	}
}

func TestLocalReadsCommittedHead(t *testing.T) {
	r := newExampleRepo(t)
	s := openLocal(t, r.Dir)
	mustSync(t, s)
	r.Write("tenants/ws-uncommitted.yaml", testkit.TenantYAML(tenant("ws-uncommitted", "nyc1")))
	testkit.Git(t, r.Dir, "commit", "-q", "--allow-empty", "-m", "empty")
	snap := mustSync(t, s)
	if _, ok := snap.Tenants["ws-uncommitted"]; ok {
		t.Error("an uncommitted file was read")
	}
}

func TestIsURL(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"https://github.com/org/state.git", true},
		{"file:///srv/state.git", true},
		{"ssh://git@host/state", true},
		{"git@github.com:org/state.git", true},
		{"/srv/state", false},
		{"./state", false},
		{"state-example", false},
		{"dir/with@at:colon", false},
	}
	for _, tt := range tests {
		if got := IsURL(tt.in); got != tt.want {
			t.Errorf("IsURL(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestGitFileLimits(t *testing.T) {
	r := newExampleRepo(t)
	s := openLocal(t, r.Dir)
	first := mustSync(t, s)
	r.Write("tenants/ws-big.yaml", strings.Repeat("#", schema.MaxFileSize+1))
	if err := os.Remove(filepath.Join(r.Dir, "tenants/ws-stark.yaml")); err != nil {
		t.Fatal(err)
	}
	// A link to a file outside the reviewed tree is never followed.
	if err := os.Symlink("/etc/hostname", filepath.Join(r.Dir, "tenants/ws-stark.yaml")); err != nil {
		t.Fatal(err)
	}
	r.Commit("oversized file and a symlink")
	before := s.Stats()
	snap := mustSync(t, s)
	tests := []struct {
		id, wantErr string
		wantTenant  bool
	}{
		{"ws-big", "tenants/ws-big.yaml: file is larger than the 1048576-byte limit", false},
		{"ws-stark", "tenants/ws-stark.yaml: file is a symbolic link; links are not followed", true},
	}
	for _, tt := range tests {
		st := snap.Tenants[tt.id]
		if st.Status != StatusInvalid || st.Errors.Error() != tt.wantErr || (st.Tenant != nil) != tt.wantTenant {
			t.Errorf("%s: status %q errors %q tenant %v; want %q", tt.id, st.Status, st.Errors.Error(), st.Tenant != nil, tt.wantErr)
		}
	}
	if snap.Tenants["ws-stark"].Tenant != first.Tenants["ws-stark"].Tenant {
		t.Error("ws-stark does not keep its last valid version")
	}
	if got := s.Stats().Parses - before.Parses; got != 0 {
		t.Errorf("parses: got %d, want 0 (neither file is decoded)", got)
	}
}

func TestStateInSubfolder(t *testing.T) {
	r := newRepo(t)
	testkit.CopyTree(t, testkit.ExamplePath(t, "genesis.yaml"), filepath.Join(r.Dir, "state/genesis.yaml"))
	testkit.CopyTree(t, testkit.ExamplePath(t, "tenants"), filepath.Join(r.Dir, "state/tenants"))
	testkit.CopyTree(t, testkit.ExamplePath(t, "templates"), filepath.Join(r.Dir, "state/templates"))
	r.Write("tenants/ws-decoy.yaml", testkit.TenantYAML(tenant("ws-decoy", "nyc1"))) // outside the state folder
	r.Commit("monorepo")
	tests := []struct {
		name string
		cfg  Config
	}{
		{"path inside the work tree", Config{Repo: filepath.Join(r.Dir, "state")}},
		{"explicit subdir", Config{Repo: r.Dir, Subdir: "state/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Logger = quietLogger()
			s, err := Open(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if s.Subdir() != "state" {
				t.Errorf("subdir: got %q", s.Subdir())
			}
			snap := mustSync(t, s)
			if diff := cmp.Diff(snap.IDs(), exampleIDs); diff != "" {
				t.Errorf("ids (-got +want):\n%s", diff)
			}
		})
	}
	if _, err := Open(Config{Repo: t.TempDir()}); err == nil {
		t.Error("a folder outside any repository opened as a git source")
	}
}

// TestSyncSurvivesGC: a git gc in a local state repository that packs and
// prunes the loose objects a Sync is about to read (here: right after the
// Sync opened the repository; at 100,000 tenants, the auto gc that follows
// a commit of every file) costs a second read, not a failed Sync.
func TestSyncSurvivesGC(t *testing.T) {
	const n = 40
	r := newGenRepo(t, n)
	// Packed, so that the first Sync reads a pack and go-git keeps its
	// list of packs (it reads loose objects first only while it has none).
	r.Git("repack", "-adq")
	s := openLocal(t, r.Dir)
	mustSync(t, s)
	// A second Sync reads through the repository the Source keeps between
	// Syncs, which then holds its own list of packs.
	r.Write("tenants/ws-gen-000000.yaml", r.Read("tenants/ws-gen-000000.yaml")+"# first edit\n")
	r.Commit("edit one tenant")
	mustSync(t, s)
	for i := range n {
		p := fmt.Sprintf("tenants/ws-gen-%06d.yaml", i)
		r.Write(p, r.Read(p)+"# edited\n")
	}
	head := r.Commit("edit every tenant")
	gcs := 0
	s.afterOpen = func() {
		if gcs++; gcs == 1 {
			r.Git("repack", "-adq")
			r.Git("prune-packed")
		}
	}
	snap, err := s.Sync(t.Context())
	if err != nil {
		t.Fatalf("Sync with a gc in the middle: %v", err)
	}
	if snap.Commit != head || len(snap.Changed) != n {
		t.Errorf("commit %s with %d changed, want %s with %d", snap.Commit, len(snap.Changed), head, n)
	}
	if gcs != 2 {
		t.Errorf("the repository was opened %d times, want 2 (the second read after the gc)", gcs)
	}
}
