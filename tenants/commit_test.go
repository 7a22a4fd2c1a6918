package tenants

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants/yamledit"
)

// bareRemote makes a bare repository holding state-example, as the state
// repository a Writer pushes to, and returns its file:// URL and path.
func bareRemote(tb testing.TB) (string, string) {
	tb.Helper()
	work := newExampleRepo(tb)
	bare := filepath.Join(tb.TempDir(), "state.git")
	testkit.Git(tb, work.Dir, "clone", "-q", "--bare", work.Dir, bare)
	return "file://" + bare, bare
}

func newWriter(tb testing.TB, url string, propose bool) *Writer {
	tb.Helper()
	w, err := NewWriter(WriterConfig{Remote: url, Dir: filepath.Join(tb.TempDir(), "writer.git"), Propose: propose,
		Committer: Identity{"Genesis API", "api@genesis.invalid"}, Logger: quietLogger(),
		Now: func() time.Time { return time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC) }})
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := w.Fetch(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return w
}

func patch(p string) func([]byte) ([]byte, error) {
	return func(cur []byte) ([]byte, error) { return yamledit.MergePatch(cur, []byte(p)) }
}

func blobOf(tb testing.TB, w *Writer, id string) string {
	tb.Helper()
	return w.Head().Tenants[id].Blob
}

var alice = Identity{"alice", "alice@example.com"}

func TestWriterChanges(t *testing.T) {
	url, bare := bareRemote(t)
	w := newWriter(t, url, false)
	ctx := context.Background()
	head := testkit.Git(t, bare, "rev-parse", "main")

	// Refusals leave the repository untouched.
	refusals := []struct {
		name string
		ch   Change
		want error
	}{
		{"stale version", Change{ID: "ws-acme", IfMatch: strings.Repeat("0", 40), Edit: patch(`{"spec":{"state":"hibernated"}}`)}, ErrPrecondition},
		{"unknown tenant", Change{ID: "ws-nobody", IfMatch: strings.Repeat("0", 40), Edit: patch(`{}`)}, ErrNotFound},
		{"create existing", Change{ID: "ws-acme", Create: true, Edit: patch(`{}`)}, ErrExists},
		{"bad patch", Change{ID: "ws-acme", IfMatch: blobOf(t, w, "ws-acme"), Edit: patch(`[1]`)}, &EditError{}},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			_, err := w.Write(ctx, tt.ch)
			if ee := (&EditError{}); errors.As(tt.want, &ee) {
				if !errors.As(err, &ee) {
					t.Fatalf("err = %v, want an EditError", err)
				}
			} else if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	// Invalid results: the messages genesis validate prints.
	invalid := []struct {
		name, id, patch string
		want            []string
	}{
		{"bad state", "ws-acme", `{"spec":{"state":"gone"}}`, []string{`tenants/ws-acme.yaml:11:10: spec.state: "gone" is not one of running, hibernated, absent`}},
		{"unknown field", "ws-acme", `{"spec":{"colour":"red"}}`, []string{`tenants/ws-acme.yaml:74:3: unknown field "colour" in spec (known: state, droplet, n8n, hibernation, domains, credentials, workflows)`}},
		{"domain of another tenant", "ws-acme", `{"spec":{"domains":["track.acme.com","track.globex.de"]}}`, []string{`tenants/ws-globex.yaml:16:7: spec.domains[0]: domain "track.globex.de" is already claimed by tenants/ws-acme.yaml`}},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			_, err := w.Write(ctx, Change{ID: tt.id, IfMatch: blobOf(t, w, tt.id), Edit: patch(tt.patch), Author: alice, Message: "x"})
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want a ValidationError", err)
			}
			var got []string
			for _, e := range ve.Errors {
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
	if got := testkit.Git(t, bare, "rev-parse", "main"); got != head {
		t.Fatalf("refused changes moved main: %s -> %s", head, got)
	}

	// A patch commits with the caller as author; the next ETag is the new blob.
	res, err := w.Write(ctx, Change{ID: "ws-acme", IfMatch: blobOf(t, w, "ws-acme"), Edit: patch(`{"spec":{"state":"hibernated"}}`), Author: alice, Message: "hibernate ws-acme"})
	if err != nil {
		t.Fatal(err)
	}
	if got := testkit.Git(t, bare, "rev-parse", "main"); got != res.Commit {
		t.Fatalf("main = %s, want the new commit %s", got, res.Commit)
	}
	if got, want := testkit.Git(t, bare, "log", "-1", "--format=%an <%ae>|%cn|%s|%P", "main"), "alice <alice@example.com>|Genesis API|hibernate ws-acme|"+head; got != want {
		t.Errorf("commit = %q, want %q", got, want)
	}
	if got := testkit.Git(t, bare, "rev-parse", "main:tenants/ws-acme.yaml"); got != res.Blob || blobOf(t, w, "ws-acme") != res.Blob {
		t.Errorf("blob %s, result %s, head %s", got, res.Blob, blobOf(t, w, "ws-acme"))
	}
	if !strings.Contains(testkit.Git(t, bare, "show", "main:tenants/ws-acme.yaml"), "# yaml-language-server: $schema=../../schema/tenant.schema.json") {
		t.Error("the file's comments were lost")
	}
	// The same patch again changes nothing and commits nothing.
	again, err := w.Write(ctx, Change{ID: "ws-acme", IfMatch: res.Blob, Edit: patch(`{"spec":{"state":"hibernated"}}`), Author: alice})
	if err != nil || !again.Unchanged || again.Commit != res.Commit {
		t.Fatalf("no-op write: %+v, %v", again, err)
	}
	// A create.
	newTenant := testkit.TenantYAML(tenant("ws-new", "nyc3", "new.example.com"))
	res, err = w.Write(ctx, Change{ID: "ws-new", Create: true, Edit: func([]byte) ([]byte, error) { return []byte(newTenant), nil }, Author: alice, Message: "onboard ws-new"})
	if err != nil {
		t.Fatal(err)
	}
	if got := testkit.Git(t, bare, "show", "main:tenants/ws-new.yaml"); got != strings.TrimSpace(newTenant) {
		t.Errorf("new file:\n%s", got)
	}
	if got := testkit.Git(t, bare, "rev-list", "--count", "main"); got != "3" {
		t.Errorf("%s commits, want 3", got)
	}
}

// An admin's commit lands between the Writer's fetch and its push: the push
// is refused, the change is re-applied on the new head, and both survive.
func TestWriterRebasesOnMovedBranch(t *testing.T) {
	url, bare := bareRemote(t)
	w := newWriter(t, url, false)
	admin := filepath.Join(t.TempDir(), "admin")
	testkit.Git(t, filepath.Dir(admin), "clone", "-q", bare, admin)
	edits := 0
	res, err := w.Write(context.Background(), Change{ID: "ws-acme", IfMatch: blobOf(t, w, "ws-acme"), Author: alice, Message: "bump n8n",
		Edit: func(cur []byte) ([]byte, error) {
			edits++
			if edits == 1 {
				r := testkit.OpenStateRepo(t, admin)
				r.Write("tenants/ws-globex.yaml", strings.Replace(r.Read("tenants/ws-globex.yaml"), "state: running", "state: hibernated", 1))
				r.Commit("admin: hibernate globex")
				testkit.Git(t, admin, "push", "-q", "origin", "main")
			}
			return yamledit.MergePatch(cur, []byte(`{"spec":{"n8n":{"version":"1.124.0"}}}`))
		}})
	if err != nil {
		t.Fatal(err)
	}
	if edits != 2 || res.Attempts != 2 {
		t.Errorf("edits %d, attempts %d; want 2 and 2", edits, res.Attempts)
	}
	if got, want := testkit.Git(t, bare, "log", "--format=%s", "main"), "bump n8n\nadmin: hibernate globex\nexample state"; got != want {
		t.Errorf("log:\n%s\nwant:\n%s", got, want)
	}
	// A change to the same tenant in between is a conflict.
	_, err = w.Write(context.Background(), Change{ID: "ws-acme", IfMatch: blobOf(t, w, "ws-acme"), Author: alice,
		Edit: func(cur []byte) ([]byte, error) {
			r := testkit.OpenStateRepo(t, admin)
			testkit.Git(t, admin, "pull", "-q", "--rebase", "origin", "main")
			if !strings.Contains(r.Read("tenants/ws-acme.yaml"), "hibernated") {
				r.Write("tenants/ws-acme.yaml", strings.Replace(r.Read("tenants/ws-acme.yaml"), "state: running", "state: hibernated", 1))
				r.Commit("admin: hibernate acme")
				testkit.Git(t, admin, "push", "-q", "origin", "main")
			}
			return yamledit.MergePatch(cur, []byte(`{"spec":{"state":"absent"}}`))
		}})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	if got := testkit.Git(t, bare, "log", "-1", "--format=%s", "main"); got != "admin: hibernate acme" {
		t.Errorf("head %q: the conflicting change was applied", got)
	}
}

// Many writers in two replicas (two Writers, two clones) push to one bare
// repository at once: every change to a distinct tenant lands exactly once.
func TestWriterConcurrentReplicas(t *testing.T) {
	url, bare := bareRemote(t)
	replicas := []*Writer{newWriter(t, url, false), newWriter(t, url, false)}
	ids := replicas[0].Head().IDs()
	const perTenant = 3
	var wg sync.WaitGroup
	errs := make(chan error, len(ids)*perTenant)
	for i, id := range ids {
		for n := range perTenant {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w := replicas[(i+n)%2]
				key := fmt.Sprintf("p%d", n)
				for {
					snap, err := w.Fetch(context.Background())
					if err != nil {
						errs <- err
						return
					}
					_, err = w.Write(context.Background(), Change{ID: id, IfMatch: snap.Tenants[id].Blob, Author: alice, Message: id + " " + key,
						Edit: func(cur []byte) ([]byte, error) {
							t, _ := schema.DecodeTenant("tenants/"+id+".yaml", cur)
							return yamledit.MergePatch(cur, []byte(`{"metadata":{"name":"`+t.Metadata.Name+" "+key+`"}}`))
						}})
					if errors.Is(err, ErrPrecondition) || errors.Is(err, ErrConflict) {
						continue // another writer changed this tenant: read and retry
					}
					errs <- err
					return
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	want := len(ids)*perTenant + 1
	if got := testkit.Git(t, bare, "rev-list", "--count", "main"); got != fmt.Sprint(want) {
		t.Errorf("%s commits, want %d", got, want)
	}
	subjects := strings.Split(testkit.Git(t, bare, "log", "--format=%s", "main"), "\n")
	seen := map[string]int{}
	for _, s := range subjects {
		seen[s]++
	}
	for _, id := range ids {
		for n := range perTenant {
			if s := fmt.Sprintf("%s p%d", id, n); seen[s] != 1 {
				t.Errorf("commit %q appears %d times", s, seen[s])
			}
		}
		name := testkit.Git(t, bare, "show", "main:tenants/"+id+".yaml")
		for n := range perTenant {
			if !strings.Contains(name, fmt.Sprintf("p%d", n)) {
				t.Errorf("%s lost change p%d", id, n)
			}
		}
	}
}

func TestWriterPropose(t *testing.T) {
	url, bare := bareRemote(t)
	w := newWriter(t, url, true)
	head := testkit.Git(t, bare, "rev-parse", "main")
	res, err := w.Write(context.Background(), Change{ID: "ws-acme", IfMatch: blobOf(t, w, "ws-acme"), Edit: patch(`{"spec":{"state":"hibernated"}}`), Author: alice, Message: "hibernate ws-acme"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Proposed || res.Branch != "genesis/proposals/ws-acme-"+res.Commit[:12] {
		t.Fatalf("result %+v", res)
	}
	if got := testkit.Git(t, bare, "rev-parse", "main"); got != head {
		t.Error("propose mode moved main")
	}
	if got := testkit.Git(t, bare, "rev-parse", res.Branch); got != res.Commit {
		t.Errorf("proposal branch at %s, want %s", got, res.Commit)
	}
	if got := testkit.Git(t, bare, "rev-parse", res.Branch+"^"); got != head {
		t.Errorf("proposal parent %s, want main %s", got, head)
	}
}
