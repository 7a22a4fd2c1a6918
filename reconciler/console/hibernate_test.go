package console

import (
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/tenants"
)

// TestHibernateByCommit: the console's hibernate, confirmed with the
// session's CSRF token by a dashboard-only token, goes through the API's
// PATCH /v1/tenants/{id} (stateapi with a real tenants.Writer): the state
// repository gets a commit that sets state: hibernated in the tenant's
// file, authored by the caller, the API audits it with the commit, and
// the flash names the commit. A second hibernate changes nothing. A post
// without the CSRF token commits nothing.
func TestHibernateByCommit(t *testing.T) {
	repo := testkit.NewStateRepo(t)
	repo.CopyExample("genesis.yaml", "tenants", "templates")
	repo.Commit("example state")
	bare := repo.Push()
	start := testkit.Git(t, bare, "rev-parse", "main")
	writer, err := tenants.NewWriter(tenants.WriterConfig{Remote: "file://" + bare, Dir: filepath.Join(t.TempDir(), "writer.git"),
		Committer: tenants.Identity{Name: "Genesis API", Email: "api@genesis.invalid"}, Logger: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Fetch(t.Context()); err != nil {
		t.Fatal(err)
	}
	pushed := make(chan struct{}, 10)
	r := newRigWith(t, rigOptions{stateAPI: func(st *store.Store) *stateapi.API {
		return stateapi.New(stateapi.Config{Writer: writer, Store: st, Logger: quietLog(), Pushed: func() { pushed <- struct{}{} }})
	}})
	ctx := t.Context()
	before := testkit.Git(t, bare, "show", "main:tenants/ws-acme.yaml")
	if !strings.Contains(before, "state: running") {
		t.Fatalf("ws-acme does not start running:\n%s", before)
	}

	b := r.browser(t)
	b.login(dashToken)
	_, page, _ := b.get("/console/tenants/ws-acme")
	// Without the CSRF token: refused, nothing committed.
	if code, _, _ := b.post("/console/tenants/ws-acme/act", "-", url.Values{"action": {"hibernate"}}); code != http.StatusForbidden {
		t.Errorf("hibernate without csrf = %d, want 403", code)
	}
	if head := testkit.Git(t, bare, "rev-parse", "main"); head != start {
		t.Fatalf("a refused hibernate committed %s", head)
	}
	code, confirm, _ := b.post("/console/tenants/ws-acme/confirm", "-", url.Values{"csrf": {csrf(t, page)}, "action": {"hibernate"}})
	if code != http.StatusOK || !strings.Contains(confirm, "PATCH /v1/tenants/ws-acme") {
		t.Fatalf("confirm = %d:\n%s", code, confirm)
	}
	code, _, resp := b.post("/console/tenants/ws-acme/act", "-", url.Values{"csrf": {csrf(t, confirm)}, "action": {"hibernate"}, "reason": {"test"}})
	if code != http.StatusSeeOther || resp.Header.Get("Location") != "/console/tenants/ws-acme" {
		t.Fatalf("act = %d %s", code, resp.Header.Get("Location"))
	}
	head := testkit.Git(t, bare, "rev-parse", "main")
	if head == start {
		t.Fatal("hibernate made no commit")
	}
	after := testkit.Git(t, bare, "show", "main:tenants/ws-acme.yaml")
	if !strings.Contains(after, "state: hibernated") || strings.Contains(after, "state: running") {
		t.Errorf("ws-acme's file after hibernate:\n%s", after)
	}
	if files := strings.Fields(testkit.Git(t, bare, "diff", "--name-only", start, head)); len(files) != 1 || files[0] != "tenants/ws-acme.yaml" {
		t.Errorf("the commit changed %v, want tenants/ws-acme.yaml only", files)
	}
	if author := testkit.Git(t, bare, "log", "-1", "--format=%an", head); author != "dash" {
		t.Errorf("commit author %q, want the caller dash", author)
	}
	if msg := testkit.Git(t, bare, "log", "-1", "--format=%B", head); !strings.Contains(msg, "patch ws-acme") || !regexp.MustCompile(`Genesis-Correlation-Id: console-`).MatchString(msg) {
		t.Errorf("commit message:\n%s", msg)
	}
	select {
	case <-pushed:
	default:
		t.Error("the API did not announce the push (the watcher would not fetch at once)")
	}
	var actor, commit string
	if err := r.st.Pool().QueryRow(ctx, `SELECT actor, coalesce(commit, '') FROM audit_log WHERE action = 'tenant.patch' AND workspace = 'ws-acme'`).Scan(&actor, &commit); err != nil {
		t.Fatalf("hibernate audit: %v", err)
	}
	if actor != "dash" || commit != head {
		t.Errorf("audit: actor %q commit %q, want dash and %s", actor, commit, head)
	}
	_, page, _ = b.get("/console/tenants/ws-acme")
	fl := byID(doc(t, page), "flash")
	if c, _ := attr(fl, "class"); c != "ok" || !strings.Contains(text(fl), "committed "+head[:12]+" to tenants/ws-acme.yaml") {
		t.Errorf("#flash after hibernate: class %q text %q", c, text(fl))
	}

	// Again: already declared, no commit.
	code, _, _ = b.post("/console/tenants/ws-acme/act", "-", url.Values{"csrf": {csrf(t, page)}, "action": {"hibernate"}})
	if code != http.StatusSeeOther {
		t.Fatalf("second act = %d", code)
	}
	if again := testkit.Git(t, bare, "rev-parse", "main"); again != head {
		t.Errorf("a second hibernate committed %s", again)
	}
	_, page, _ = b.get("/console/tenants/ws-acme")
	if got := text(byID(doc(t, page), "flash")); !strings.Contains(got, "already declared hibernated") {
		t.Errorf("#flash after a second hibernate: %q", got)
	}
}
