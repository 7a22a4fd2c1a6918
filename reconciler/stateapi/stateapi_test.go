package stateapi_test

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/tenants"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestTenantLifecycle(t *testing.T) {
	w := newWorld(t, 0, false)

	// Reads.
	var list api.TenantList
	r := w.do("dash", "GET", "/v1/tenants", "")
	r.json(t, &list)
	if r.code != 200 || list.Commit != w.head() || len(list.Tenants) != 7 || list.Tenants[0].ID != "ws-acme" || !list.Tenants[0].Valid {
		t.Fatalf("list: %d %s", r.code, r.body)
	}
	var acme api.Tenant
	r = w.do("dash", "GET", "/v1/tenants/ws-acme", "")
	r.json(t, &acme)
	if want := testkit.Git(t, w.bare, "rev-parse", "main:tenants/ws-acme.yaml"); r.hdr.Get("ETag") != `"`+want+`"` || acme.ETag != want || acme.Tenant.Metadata.Name != "Acme Corp" || !strings.HasPrefix(acme.YAML, "# yaml-language-server") {
		t.Fatalf("get: %s %s", r.hdr.Get("ETag"), r.body)
	}
	if r := w.do("dash", "GET", "/v1/tenants/ws-nobody", ""); r.code != 404 {
		t.Errorf("unknown tenant: %d", r.code)
	}

	// PATCH: If-Match required, a stale one is 412 with the current version.
	patch := `{"spec":{"n8n":{"version":"1.124.0"},"domains":["track.acme.com","go.acme.com"]}}`
	if r := w.do("dash", "PATCH", "/v1/tenants/ws-acme", patch); r.code != 428 {
		t.Errorf("no If-Match: %d %s", r.code, r.body)
	}
	r = w.do("dash", "PATCH", "/v1/tenants/ws-acme", patch, "If-Match", `"0000000000000000000000000000000000000000"`)
	var prob api.Problem
	r.json(t, &prob)
	if r.code != 412 || prob.Current == nil || prob.Current.ETag != acme.ETag || r.hdr.Get("ETag") != `"`+acme.ETag+`"` {
		t.Fatalf("stale If-Match: %d %s", r.code, r.body)
	}
	r = w.do("dash", "PATCH", "/v1/tenants/ws-acme", patch, "If-Match", `"`+acme.ETag+`"`, "Content-Type", "application/merge-patch+json",
		stateapi.CorrelationHeader, "req-dash-42")
	var res api.WriteResult
	r.json(t, &res)
	if r.code != 200 || res.Commit != w.head() || res.Proposed || r.hdr.Get("ETag") != `"`+res.ETag+`"` {
		t.Fatalf("patch: %d %s (head %s)", r.code, r.body, w.head())
	}
	// The caller's correlation id is answered and carried by the commit.
	if got := r.hdr.Get(stateapi.CorrelationHeader); got != "req-dash-42" {
		t.Errorf("correlation header: %q", got)
	}
	if got := tenants.Correlation(testkit.Git(t, w.bare, "log", "-1", "--format=%B", "main"), res.Commit); got != "req-dash-42" {
		t.Errorf("commit's correlation id: %q", got)
	}
	if got := testkit.Git(t, w.bare, "log", "-1", "--format=%an|%ae|%s", "main"); got != `dash|dash@api.genesis.invalid|patch ws-acme: "spec.domains", "spec.n8n.version"` {
		t.Errorf("commit: %q", got)
	}
	golden(t, "ws-acme.patched.yaml", testkit.Git(t, w.bare, "show", "main:tenants/ws-acme.yaml")+"\n")
	if len(w.pushed) != 1 {
		t.Errorf("pushed %d times, want 1", len(w.pushed))
	}

	// POST onboards; again is 409.
	onboard := `{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-new","name":"New Co","tier":"pro"},"spec":{"state":"running","droplet":{"region":"fra1"},"domains":["new.example.com"]}}`
	r = w.do("root", "POST", "/v1/tenants", onboard)
	r.json(t, &res)
	if r.code != 201 || res.File != "tenants/ws-new.yaml" || res.Commit != w.head() {
		t.Fatalf("onboard: %d %s", r.code, r.body)
	}
	golden(t, "ws-new.yaml", testkit.Git(t, w.bare, "show", "main:tenants/ws-new.yaml")+"\n")
	if r := w.do("root", "POST", "/v1/tenants", onboard); r.code != 409 {
		t.Errorf("onboard twice: %d %s", r.code, r.body)
	}

	// PUT replaces the spec, keeping the comments of keys that stay.
	put := `{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-acme","name":"Acme Corporation","tier":"pro"},"spec":{"state":"running","droplet":{"region":"nyc3","size":"s-1vcpu-2gb"},"domains":["track.acme.com"]}}`
	r = w.do("dash", "PUT", "/v1/tenants/ws-acme", put, "If-Match", w.etag("ws-acme"))
	if r.code != 200 {
		t.Fatalf("put: %d %s", r.code, r.body)
	}
	golden(t, "ws-acme.replaced.yaml", testkit.Git(t, w.bare, "show", "main:tenants/ws-acme.yaml")+"\n")

	// Credentials: plaintext is sealed to the fleet's recipients and never
	// reaches the repository; a sealed one must open with the identity.
	cred := `{"name":"openai","type":"openAiApi","data":{"apiKey":"sk-plaintext-never-stored"}}`
	r = w.do("dash", "POST", "/v1/tenants/ws-new/credentials", cred, "If-Match", w.etag("ws-new"))
	if r.code != 200 {
		t.Fatalf("credential: %d %s", r.code, r.body)
	}
	if log := testkit.Git(t, w.bare, "log", "-p", "--all"); strings.Contains(log, "sk-plaintext-never-stored") {
		t.Error("plaintext reached the repository")
	}
	if file := testkit.Git(t, w.bare, "show", "main:tenants/ws-new.yaml"); !strings.Contains(file, "  credentials:\n    - name: openai\n      type: openAiApi\n      sealed: |\n        -----BEGIN AGE ENCRYPTED FILE-----") {
		t.Errorf("credential not in the file:\n%s", file)
	}
	var got api.Tenant
	w.do("dash", "GET", "/v1/tenants/ws-new", "").json(t, &got)
	sealed := got.Tenant.Spec.Credentials[0].Sealed
	plain := decrypt(t, sealed)
	if plain != `{"apiKey":"sk-plaintext-never-stored"}` {
		t.Errorf("sealed credential opens to %q", plain)
	}
	// The same sealed value, posted by a dashboard that sealed it, is accepted.
	r = w.do("dash", "POST", "/v1/tenants/ws-new/credentials", fmt.Sprintf(`{"name":"openai2","type":"openAiApi","sealed":%q}`, sealed), "If-Match", w.etag("ws-new"))
	if r.code != 200 {
		t.Errorf("sealed credential: %d %s", r.code, r.body)
	}

	// DELETE sets state: absent and keeps the file.
	r = w.do("dash", "DELETE", "/v1/tenants/ws-new", "", "If-Match", w.etag("ws-new"))
	if r.code != 200 {
		t.Fatalf("delete: %d %s", r.code, r.body)
	}
	if file := testkit.Git(t, w.bare, "show", "main:tenants/ws-new.yaml"); !strings.Contains(file, "state: absent") {
		t.Errorf("after DELETE:\n%s", file)
	}

	// Every write is in audit_log with its caller and commit.
	rows, err := w.store.Pool().Query(t.Context(), `SELECT actor, action, workspace, commit FROM audit_log ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var audit []string
	for rows.Next() {
		var actor, action, ws, commit string
		if err := rows.Scan(&actor, &action, &ws, &commit); err != nil {
			t.Fatal(err)
		}
		if testkit.Git(t, w.bare, "cat-file", "-t", commit) != "commit" {
			t.Errorf("audit commit %s is not in the repository", commit)
		}
		audit = append(audit, actor+" "+action+" "+ws)
	}
	want := []string{"dash tenant.patch ws-acme", "root tenant.create ws-new", "dash tenant.replace ws-acme", "dash tenant.credential ws-new", "dash tenant.credential ws-new", "dash tenant.offboard ws-new"}
	if diff := cmp.Diff(want, audit); diff != "" {
		t.Errorf("audit (-want +got):\n%s", diff)
	}
	if got := testkit.Git(t, w.bare, "rev-list", "--count", "main"); got != "7" {
		t.Errorf("%s commits, want 7 (the example's and six writes)", got)
	}
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	p := "testdata/" + name
	if *update {
		os.WriteFile(p, []byte(got), 0o644)
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", name, diff)
	}
}

// Every refused request leaves the repository exactly as it was.
func TestRefusedInputLeavesRepositoryUntouched(t *testing.T) {
	w := newWorld(t, 0, false)
	head := w.head()
	acme := w.etag("ws-acme")
	big := `{"spec":{"state":"` + strings.Repeat("x", stateapi.DefaultMaxBody) + `"}}`
	tests := []struct {
		name, who, method, path, body string
		hdr                           []string
		code                          int
		want                          string // the error, or the first validation message
	}{
		{"no token", "", "PATCH", "/v1/tenants/ws-acme", `{}`, []string{"If-Match", acme}, 401, "missing bearer token (Authorization: Bearer <token>)"},
		{"agent token", "agent", "PATCH", "/v1/tenants/ws-acme", `{}`, []string{"If-Match", acme}, 403, `token "agent" lacks the dashboard scope`},
		{"bad state", "dash", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"state":"gone"}}`, []string{"If-Match", acme}, 400, `tenants/ws-acme.yaml:11:10: spec.state: "gone" is not one of running, hibernated, absent`},
		{"unknown field", "dash", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"colour":"red"}}`, []string{"If-Match", acme}, 400, `tenants/ws-acme.yaml:74:3: unknown field "colour" in spec (known: state, droplet, n8n, hibernation, domains, credentials, workflows)`},
		{"unknown region", "dash", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"droplet":{"region":"sgp1"}}}`, []string{"If-Match", acme}, 400, `tenants/ws-acme.yaml:13:13: spec.droplet.region: no account in genesis.yaml serves region "sgp1" (served: ams3, fra1, nyc1, nyc3)`},
		{"domain of another tenant", "dash", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"domains":["track.globex.de"]}}`, []string{"If-Match", acme}, 400, `tenants/ws-globex.yaml:16:7: spec.domains[0]: domain "track.globex.de" is already claimed by tenants/ws-acme.yaml`},
		{"id change", "dash", "PATCH", "/v1/tenants/ws-acme", `{"metadata":{"id":"ws-other"}}`, []string{"If-Match", acme}, 400, `tenants/ws-acme.yaml:7:7: metadata.id: "ws-other" must equal the file name "ws-acme"`},
		{"patch not an object", "dash", "PATCH", "/v1/tenants/ws-acme", `[1]`, []string{"If-Match", acme}, 400, "body must be a JSON merge patch object"},
		{"malformed", "dash", "PATCH", "/v1/tenants/ws-acme", `{"spec":`, []string{"If-Match", acme}, 400, "body: malformed JSON: EOF"},
		{"duplicate key", "dash", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"state":"running","state":"absent"}}`, []string{"If-Match", acme}, 400, `body: duplicate JSON key "spec.state"`},
		{"too large", "dash", "PATCH", "/v1/tenants/ws-acme", big, []string{"If-Match", acme}, 413, "request body is larger than 1048576 bytes"},
		{"wrong type", "dash", "PATCH", "/v1/tenants/ws-acme", `{}`, []string{"If-Match", acme, "Content-Type", "text/plain"}, 415, "Content-Type must be application/merge-patch+json or application/json"},
		{"unknown tenant", "dash", "PATCH", "/v1/tenants/ws-nobody", `{"spec":{"state":"absent"}}`, []string{"If-Match", acme}, 404, `tenant "ws-nobody" not found`},
		{"onboard invalid", "dash", "POST", "/v1/tenants", `{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-bad","name":"B","tier":"gold"},"spec":{"state":"running","droplet":{"region":"nyc3"}}}`, nil, 400, `tenants/ws-bad.yaml:6:9: metadata.tier: "gold" is not one of starter, pro, enterprise`},
		{"onboard bad id", "dash", "POST", "/v1/tenants", `{"metadata":{"id":"../x"}}`, nil, 400, `metadata.id: "../x" must be 3-40 characters of a-z, 0-9 and -`},
		{"credential unknown field", "dash", "POST", "/v1/tenants/ws-acme/credentials", `{"name":"k","type":"openAiApi","data":{"apiKey":"x"},"secret":"y"}`, []string{"If-Match", acme}, 400, `unknown field "secret"`},
		{"credential both", "dash", "POST", "/v1/tenants/ws-acme/credentials", `{"name":"k","type":"openAiApi","data":{"apiKey":"x"},"sealed":"y"}`, []string{"If-Match", acme}, 400, "give exactly one of sealed and data"},
		{"credential data not object", "dash", "POST", "/v1/tenants/ws-acme/credentials", `{"name":"k","type":"openAiApi","data":"sk-x"}`, []string{"If-Match", acme}, 400, "data: must be a JSON object of n8n credential data"},
		{"credential foreign seal", "dash", "POST", "/v1/tenants/ws-acme/credentials", `{"name":"k","type":"openAiApi","sealed":"-----BEGIN AGE ENCRYPTED FILE-----\nAAAA\n-----END AGE ENCRYPTED FILE-----\n"}`, []string{"If-Match", acme}, 400, "sealed: does not open with the fleet's identity (seal it with genesis seal to the recipients in genesis.yaml)"},
		{"credential bad name", "dash", "POST", "/v1/tenants/ws-acme/credentials", `{"name":"Bad Name","type":"openAiApi","data":{"apiKey":"x"}}`, []string{"If-Match", acme}, 400, `tenants/ws-acme.yaml:54:13: spec.credentials[3].name: "Bad Name" must be 1-63 characters of a-z, 0-9 and -`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := w.do(tt.who, tt.method, tt.path, tt.body, tt.hdr...)
			var p api.Problem
			r.json(t, &p)
			got := p.Error
			if len(p.Errors) > 0 {
				got = p.Errors[0].Error()
			}
			if r.code != tt.code || got != tt.want {
				t.Errorf("got %d %q\nwant %d %q", r.code, got, tt.code, tt.want)
			}
		})
	}
	if got := w.head(); got != head {
		t.Fatalf("refused requests moved main %s -> %s", head, got)
	}
	if n := w.store.Pool().QueryRow(t.Context(), `SELECT count(*) FROM audit_log`); n != nil {
		var c int
		n.Scan(&c)
		if c != 0 {
			t.Errorf("%d audit rows for refused requests", c)
		}
	}
}

// 50 parallel PATCHes of 50 tenants: 50 commits, none lost. 50 parallel
// PATCHes of one tenant with the same If-Match: one wins, 49 get 412.
func TestConcurrentPatches(t *testing.T) {
	const n = 50
	w := newWorld(t, n, false)
	before := w.head()
	etags := map[string]string{}
	for i := range n {
		id := fmt.Sprintf("ws-gen-%03d", i)
		etags[id] = w.etag(id)
	}
	var wg sync.WaitGroup
	codes := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("ws-gen-%03d", i)
			codes[i] = w.do("dash", "PATCH", "/v1/tenants/"+id, `{"metadata":{"name":"Patched `+id+`"}}`, "If-Match", etags[id]).code
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != 200 {
			t.Errorf("PATCH ws-gen-%03d: %d", i, c)
		}
	}
	if got := testkit.Git(t, w.bare, "rev-list", "--count", before+"..main"); got != fmt.Sprint(n) {
		t.Errorf("%s new commits, want %d", got, n)
	}
	subjects := map[string]int{}
	for _, s := range strings.Split(testkit.Git(t, w.bare, "log", "--format=%s", before+"..main"), "\n") {
		subjects[s]++
	}
	for i := range n {
		id := fmt.Sprintf("ws-gen-%03d", i)
		if subjects["patch "+id+`: "metadata.name"`] != 1 {
			t.Errorf("%s: %d commits", id, subjects["patch "+id+`: "metadata.name"`])
		}
		if !strings.Contains(testkit.Git(t, w.bare, "show", "main:tenants/"+id+".yaml"), "name: Patched "+id) {
			t.Errorf("%s lost its change", id)
		}
	}

	// The same tenant, the same version, 50 times at once.
	before = w.head()
	etag := w.etag("ws-gen-000")
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = w.do("dash", "PATCH", "/v1/tenants/ws-gen-000", fmt.Sprintf(`{"metadata":{"name":"Writer %d"}}`, i), "If-Match", etag).code
		}()
	}
	wg.Wait()
	count := map[int]int{}
	for _, c := range codes {
		count[c]++
	}
	if diff := cmp.Diff(map[int]int{200: 1, 412: n - 1}, count); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	if got := testkit.Git(t, w.bare, "rev-list", "--count", before+"..main"); got != "1" {
		t.Errorf("%s commits, want 1", got)
	}
}

func TestProposeMode(t *testing.T) {
	w := newWorld(t, 0, true)
	head := w.head()
	r := w.do("dash", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"state":"hibernated"}}`, "If-Match", w.etag("ws-acme"))
	var res api.WriteResult
	r.json(t, &res)
	if r.code != 202 || !res.Proposed || !strings.HasPrefix(res.Branch, "genesis/proposals/ws-acme-") || r.hdr.Get("ETag") != "" {
		t.Fatalf("propose: %d %s", r.code, r.body)
	}
	if w.head() != head {
		t.Error("propose mode moved main")
	}
	if got := testkit.Git(t, w.bare, "rev-parse", res.Branch); got != res.Commit {
		t.Errorf("proposal branch %s, want %s", got, res.Commit)
	}
	if !strings.Contains(testkit.Git(t, w.bare, "show", res.Branch+":tenants/ws-acme.yaml"), "state: hibernated") {
		t.Error("proposal lacks the change")
	}
	if len(w.pushed) != 0 {
		t.Error("a proposal triggered a fetch of the branch")
	}
}

func TestRateLimitAndMetricsScope(t *testing.T) {
	w := newWorld(t, 0, false)
	if r := w.do("", "GET", "/metrics", ""); r.code != 401 {
		t.Errorf("/metrics without token: %d", r.code)
	}
	if r := w.do("root", "GET", "/metrics", ""); r.code != 200 {
		t.Errorf("/metrics as admin: %d", r.code)
	}
	if r := w.do("dash", "GET", "/metrics", ""); r.code != 403 {
		t.Errorf("/metrics as dashboard: %d", r.code)
	}
	if r := w.do("", "GET", "/healthz", ""); r.code != 200 {
		t.Errorf("/healthz: %d", r.code)
	}
}
