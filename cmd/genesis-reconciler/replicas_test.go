package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// planCmd runs genesis plan --format json against the reconciler at url and
// returns its exit status, its plan and its stderr.
func planCmd(t *testing.T, state, url, token string) (int, json.RawMessage, string) {
	t.Helper()
	cmd := exec.Command(cliBuild.get(t, "genesis"), "plan", "--state", state, "--reconciler", url, "--format", "json")
	cmd.Env = append(os.Environ(), "GENESIS_TOKEN="+token)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, _ := cmd.Output()
	var doc struct {
		Plan json.RawMessage `json:"plan"`
	}
	json.Unmarshal(out, &doc)
	return cmd.ProcessState.ExitCode(), doc.Plan, stderr.String()
}

// TestEveryReplicaEqual runs two reconciler replicas on one Postgres and one
// bare state repository, polling and resyncing hourly, so that only the
// notification on channel genesis_reconciler can explain a prompt reaction.
// A signed push webhook, a dashboard PATCH, a retry and a wake are each sent
// once to the leader and once to the follower; each reaches DigitalOcean (the
// simulator) in about the same time (both latencies are logged). Then
// genesis plan --reconciler against the follower prints the leader's plan,
// and refuses once the stored observation is stale. The follower is run
// twice: a full replica (which could lead) and a --role serve one (which
// never does, and holds no DigitalOcean token): either way the leader acts
// on what reached it.
func TestEveryReplicaEqual(t *testing.T) {
	for _, role := range []string{"full", "serve"} {
		t.Run("follower "+role, func(t *testing.T) { testEveryReplicaEqual(t, role) })
	}
}

func testEveryReplicaEqual(t *testing.T, followerRole string) {
	w := newWorld(t, 1, 0)
	// ws-pl, ws-pf: declared hibernated, never created (a PATCH runs them);
	// ws-wl, ws-wf: running, hibernated below, then woken; ws-rl, ws-rf:
	// FAILED before any droplet (a retry creates them).
	for id, state := range map[string]string{"ws-pl": "hibernated", "ws-pf": "hibernated", "ws-wl": "running", "ws-wf": "running", "ws-rl": "running", "ws-rf": "running"} {
		os.WriteFile(filepath.Join(w.repo, "tenants", id+".yaml"), []byte(testkit.TenantYAML(tenant(id, schema.State(state)))), 0o644)
	}
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "replicas fleet")
	bare := filepath.Join(t.TempDir(), "state.git")
	w.state.Git("clone", "-q", "--bare", w.repo, bare)
	admin := filepath.Join(t.TempDir(), "admin")
	gitOut(t, filepath.Dir(admin), "clone", "-q", bare, admin)
	toks := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(toks, []byte(`{"name":"ops","sha256":"`+auth.Hash("tok-ops")+`","scopes":["admin"]}`+"\n"), 0o600)

	// The schema, and the two FAILED tenants, before any replica runs.
	st, err := store.Open(t.Context(), w.db, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	w.exec(`INSERT INTO fleet_status (workspace, state, desired_state, last_error) VALUES
		('ws-rl', 'FAILED', 'running', 'test: gave up'), ('ws-rf', 'FAILED', 'running', 'test: gave up')`)

	replica := func(name, role string, extra ...string) *proc {
		return w.start(append([]string{"--state-repo", "file://" + bare, "--cache-dir", t.TempDir(), "--tokens", toks, "--replica-id", name,
			"--poll-interval", "1h", "--resync", "1h", "--role", role}, extra...)...)
	}
	leader := replica("replica-leader", "full")
	testkit.WaitFor(t, "the leader to create the running tenants", func() bool {
		n := w.dropletsByName()
		return n["genesis-ws-000-1"] == 1 && n["genesis-ws-wl-1"] == 1 && n["genesis-ws-wf-1"] == 1
	})
	var follower *proc
	if followerRole == "serve" {
		// No DigitalOcean at all: whatever reaches the serve replica is
		// done by the leader.
		follower = replica("replica-follower", "serve", "--do-api-url", "http://127.0.0.1:1/")
	} else {
		follower = replica("replica-follower", "full")
	}
	call := map[string]func(method, path, token, body string, hdr ...string) (*http.Response, []byte){
		"leader": apiClient(t, leader.url), "follower": apiClient(t, follower.url)}
	testkit.WaitFor(t, "the follower's tenant API", func() bool {
		resp, _ := call["follower"]("GET", "/v1/tenants/ws-pf", "tok-ops", "")
		return resp.StatusCode == 200
	})
	for _, name := range []string{"leader", "follower"} {
		resp, body := call[name]("GET", "/v1/fleet", "tok-ops", "")
		var doc api.Fleet
		json.Unmarshal(body, &doc)
		if resp.StatusCode != 200 || doc.Leader != (name == "leader") {
			t.Fatalf("%s: /v1/fleet %d, leader %v", name, resp.StatusCode, doc.Leader)
		}
	}

	// The load balancer: a round-robin proxy over both replicas that
	// says which one served each request.
	lb := newRoundRobin(t, map[string]string{"leader": leader.url, "follower": follower.url})
	viaLB := apiClient(t, lb.url)
	var servedBy string
	call["lb"] = func(method, path, token, body string, hdr ...string) (*http.Response, []byte) {
		t.Helper()
		resp, b := viaLB(method, path, token, body, hdr...)
		servedBy = resp.Header.Get(servedByHeader)
		return resp, b
	}

	type latency struct{ leader, follower time.Duration }
	measured := map[string]*latency{}
	// react sends the call of what twice through the load balancer (the
	// round robin hands one to each replica) and times how long until done
	// says DigitalOcean changed, by the replica that served it.
	react := func(what string, send func(suffix string), done func(suffix string) bool) {
		t.Helper()
		l := &latency{}
		measured[what] = l
		served := map[string]bool{}
		for _, suffix := range []string{"l", "f"} { // two tenants: ws-?l, ws-?f
			start := time.Now()
			send(suffix)
			by := servedBy
			testkit.WaitForFast(t, what+" served by the "+by, func() bool { return done(suffix) })
			served[by] = true
			switch by {
			case "leader":
				l.leader = time.Since(start)
			case "follower":
				l.follower = time.Since(start)
			}
		}
		if !served["leader"] || !served["follower"] {
			t.Fatalf("%s: the round robin did not hand one call to each replica: %v", what, served)
		}
		t.Logf("%-18s leader %8v   follower %8v", what, l.leader.Round(time.Millisecond), l.follower.Round(time.Millisecond))
	}
	created := func(name string) bool { return w.dropletsByName()[name] == 1 }
	push := func(msg string, files map[string]string) {
		gitOut(t, admin, "pull", "-q", "--rebase", "origin", "main")
		for id, body := range files {
			os.WriteFile(filepath.Join(admin, "tenants", id+".yaml"), []byte(body), 0o644)
		}
		gitOut(t, admin, "add", "-A")
		gitOut(t, admin, "commit", "-q", "-m", msg)
		gitOut(t, admin, "push", "-q", "origin", "main")
	}
	hook := func(r string) {
		body := `{"ref":"refs/heads/main"}`
		if resp, b := call[r]("POST", "/hooks/git", "", body, tenants.SignatureHeader, tenants.Sign([]byte("s3cret"), []byte(body))); resp.StatusCode != 202 {
			t.Fatalf("webhook to the %s: %d %s", r, resp.StatusCode, b)
		}
	}

	react("push webhook", func(s string) {
		push("onboard ws-h"+s, map[string]string{"ws-h" + s: testkit.TenantYAML(tenant("ws-h"+s, schema.StateRunning))})
		hook("lb")
	}, func(s string) bool { return created("genesis-ws-h" + s + "-1") })

	react("dashboard PATCH", func(s string) {
		id := "ws-p" + s
		// The ETag straight from the leader, so the round robin hands the
		// two PATCHes to different replicas.
		resp, _ := call["leader"]("GET", "/v1/tenants/"+id, "tok-ops", "")
		if resp, body := call["lb"]("PATCH", "/v1/tenants/"+id, "tok-ops", `{"spec":{"state":"running"}}`, "If-Match", resp.Header.Get("ETag")); resp.StatusCode != 200 {
			t.Fatalf("PATCH %s on the %s: %d %s", id, servedBy, resp.StatusCode, body)
		}
	}, func(s string) bool { return created("genesis-ws-p" + s + "-1") })

	react("retry", func(s string) {
		if resp, body := call["lb"]("POST", "/v1/tenants/ws-r"+s+"/retry", "tok-ops", ""); resp.StatusCode != 202 {
			t.Fatalf("retry on the %s: %d %s", servedBy, resp.StatusCode, body)
		}
	}, func(s string) bool { return created("genesis-ws-r" + s + "-1") })

	// Wake: hibernate ws-wl and ws-wf by commit, make it look as if the
	// idle policy had done it, then declare them running again (which by
	// itself wakes nothing).
	push("hibernate ws-wl and ws-wf", map[string]string{"ws-wl": testkit.TenantYAML(tenant("ws-wl", schema.StateHibernated)),
		"ws-wf": testkit.TenantYAML(tenant("ws-wf", schema.StateHibernated))})
	hook("follower")
	testkit.WaitFor(t, "ws-wl and ws-wf hibernated", func() bool {
		var n int
		w.query(`SELECT count(*) FROM fleet_status WHERE workspace IN ('ws-wl', 'ws-wf') AND state = 'HIBERNATED'`).Scan(&n)
		return n == 2
	})
	w.exec(`UPDATE fleet_status SET hibernated_by_policy = true WHERE workspace IN ('ws-wl', 'ws-wf')`)
	push("ws-wl and ws-wf running", map[string]string{"ws-wl": testkit.TenantYAML(tenant("ws-wl", schema.StateRunning)), "ws-wf": testkit.TenantYAML(tenant("ws-wf", schema.StateRunning))})
	hook("follower")
	head := gitOut(t, bare, "rev-parse", "main")
	testkit.WaitFor(t, "both replicas at the running commit", func() bool {
		for _, r := range []string{"leader", "follower"} {
			_, body := call[r]("GET", "/v1/fleet", "tok-ops", "")
			var doc api.Fleet
			json.Unmarshal(body, &doc)
			if doc.Commit != head {
				return false
			}
		}
		return true
	})
	// An earlier wake of each backs off for an hour: a wake is new input
	// and goes ahead at once anyway.
	w.exec(`INSERT INTO tenant_retries (workspace, attempts, last_error_kind, action, retry_after)
		SELECT ws, 3, 'transient', 'wake', now() + interval '1 hour' FROM unnest(ARRAY['ws-wl', 'ws-wf']) AS ws`)
	react("wake", func(s string) {
		if resp, body := call["lb"]("POST", "/v1/tenants/ws-w"+s+"/wake", "tok-ops", ""); resp.StatusCode != 202 {
			t.Fatalf("wake on the %s: %d %s", servedBy, resp.StatusCode, body)
		}
	}, func(s string) bool { return created("genesis-ws-w" + s + "-2") })

	for what, l := range measured {
		// Well under the hourly poll and resync: only the notification
		// explains it.
		if l.follower > 30*time.Second {
			t.Errorf("%s sent to the follower took %v", what, l.follower)
		}
	}

	// genesis plan against the follower: the leader's stored observation,
	// the same plan as against the leader, nothing to do once converged.
	gitOut(t, admin, "pull", "-q", "--rebase", "origin", "main")
	var fromLeader json.RawMessage
	testkit.WaitFor(t, "an empty plan against the leader", func() bool {
		code, p, _ := planCmd(t, admin, leader.url, "tok-ops")
		fromLeader = p
		return code == 0 && strings.Contains(string(p), `"actions": null`)
	})
	code, fromFollower, stderr := planCmd(t, admin, follower.url, "tok-ops")
	if code != 0 {
		t.Fatalf("plan against the follower: exit %d: %s", code, stderr)
	}
	if diff := cmp.Diff(string(fromFollower), string(fromLeader)); diff != "" {
		t.Errorf("plan against the follower (-) vs the leader (+):\n%s", diff)
	}

	// A stale observation: refused by genesis plan (--max-observed-age
	// 10m), and past the reconciler's own bound (5 × --resync) by every
	// replica.
	for _, tc := range []struct {
		name, age, want string
	}{
		{"older than --max-observed-age", "1 hour", "observation is stale: observed_at"},
		{"older than the reconciler's bound", "6 hours", "GET /v1/observed: 503 Service Unavailable: observation too old: the stored observation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w.exec(`UPDATE observation SET observed_at = now() - $1::interval`, tc.age)
			code, p, stderr := planCmd(t, admin, follower.url, "tok-ops")
			if code != 1 || !strings.Contains(stderr, tc.want) || p != nil {
				t.Errorf("exit %d, plan %s, stderr %q; want exit 1 and %q", code, p, stderr, tc.want)
			}
		})
	}
}

// TestObservedBeforeAnyLeader: a replica that has never led, on a database
// where no observation was stored (another session holds the leader lock),
// answers /v1/observed 503 instead of an empty observation, and genesis plan
// refuses it.
func TestObservedBeforeAnyLeader(t *testing.T) {
	w := newWorld(t, 2, 0)
	lock, err := pgx.Connect(t.Context(), w.db)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(context.Background())
	if _, err := lock.Exec(t.Context(), `SELECT pg_advisory_lock($1)`, store.LeaderLockKey); err != nil {
		t.Fatal(err)
	}
	p := w.start()
	testkit.WaitFor(t, "readiness", func() bool {
		resp, err := http.Get(p.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	resp, err := http.Get(p.url + "/v1/observed")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "no observation stored yet") {
		t.Errorf("/v1/observed: %d %s, want 503", resp.StatusCode, body)
	}
	code, plan, stderr := planCmd(t, w.repo, p.url, "")
	if code != 1 || plan != nil || !strings.Contains(stderr, "no observation stored yet") {
		t.Errorf("plan: exit %d, plan %s, stderr %q", code, plan, stderr)
	}
	if n := len(w.dropletsByName()); n != 0 {
		t.Errorf("%d droplets made without a leader", n)
	}
}

// servedByHeader names the replica that answered through a roundRobin.
const servedByHeader = "X-Test-Served-By"

// roundRobin is a load balancer in front of replicas: each request goes to
// the next one in turn, and the answer says which (servedByHeader).
type roundRobin struct {
	url  string
	next atomic.Uint64
}

func newRoundRobin(t *testing.T, backends map[string]string) *roundRobin {
	t.Helper()
	names := slices.Sorted(maps.Keys(backends))
	rr := &roundRobin{}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			name := names[int(rr.next.Add(1)-1)%len(names)]
			u, _ := url.Parse(backends[name])
			r.SetURL(u)
			r.Out.Header.Set(servedByHeader, name)
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Set(servedByHeader, resp.Request.Header.Get(servedByHeader))
			return nil
		},
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	rr.url = srv.URL
	return rr
}
