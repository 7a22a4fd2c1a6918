package agentapi

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	fleetagent "genesis.dev/fleet/agent"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// TestEnrollSquat: a provisioning token names a workspace and droplet name,
// and binds the droplet id the executor recorded for it. Tenant A's token
// presented with tenant B's not-yet-enrolled droplet id is refused, whether
// A's droplet is recorded already (403) or not yet (503: nothing is bound
// to the caller's claim); nothing is stored for the squatter, and B's own
// agent and A's own agent still enroll.
func TestEnrollSquat(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.setTenant("ws-beta", "blob2", tenantSpec{})
	nameA, nameB := plan.DropletName("ws-acme", 1), plan.DropletName("ws-beta", 1)
	w.provision("ws-acme", 1, 1001, "203.0.113.7")
	w.provision("ws-beta", 1, 2001, "203.0.113.8")
	boundA := w.token("ws-acme", nameA)
	// A token of A's next generation, whose create is not recorded yet.
	unboundA := w.unboundToken("ws-acme", plan.DropletName("ws-acme", 2))

	squatter := newAgent(t)
	tests := []struct {
		name   string
		req    schema.EnrollRequest
		want   int
		result string
	}{
		{"A's bound token claims B's droplet", squatter.request(boundA, "ws-acme", "2001", nameA), http.StatusForbidden, "forbidden"},
		{"A's bound token claims B's droplet and name", squatter.request(boundA, "ws-beta", "2001", nameB), http.StatusForbidden, "forbidden"},
		{"A's unbound token claims B's droplet", squatter.request(unboundA, "ws-acme", "2001", plan.DropletName("ws-acme", 2)), http.StatusServiceUnavailable, "not_yet"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := testutilCount(t, w.svc.m.enrollments.WithLabelValues(tc.result))
			body, _ := json.Marshal(tc.req)
			code, _, resp := w.do("POST", "/v1/enroll", "", nil, body)
			if code != tc.want {
				t.Fatalf("status = %d (%s), want %d", code, resp, tc.want)
			}
			if got := testutilCount(t, w.svc.m.enrollments.WithLabelValues(tc.result)); got != before+1 {
				t.Errorf("genesis_enrollments_total{result=%q} = %v, want %v", tc.result, got, before+1)
			}
			if got := w.count(`SELECT count(*) FROM agents`); got != 0 {
				t.Errorf("agents: %d rows after a squat, want 0", got)
			}
			if got := w.count(`SELECT count(*) FROM enrollment_tokens WHERE used_at IS NOT NULL OR droplet_id = 2001`); got != 0 {
				t.Errorf("tokens used or bound to the squatted droplet: %d, want 0", got)
			}
		})
	}
	b := newAgent(t)
	if code := w.enroll(b, b.request(w.token("ws-beta", nameB), "ws-beta", "2001", nameB)); code != http.StatusOK {
		t.Errorf("B's own agent after the squat attempts: %d, want 200", code)
	}
	a := newAgent(t)
	if code := w.enroll(a, a.request(boundA, "ws-acme", "1001", nameA)); code != http.StatusOK {
		t.Errorf("A's own agent with its token after the squat attempts: %d, want 200", code)
	}
	got := map[string]string{}
	rows, _ := w.st.Pool().Query(t.Context(), `SELECT droplet_id::text, workspace FROM agents`)
	for rows.Next() {
		var d, ws string
		rows.Scan(&d, &ws)
		got[d] = ws
	}
	if len(got) != 2 || got["1001"] != "ws-acme" || got["2001"] != "ws-beta" {
		t.Errorf("agents = %v, want 1001 ws-acme and 2001 ws-beta", got)
	}
}

// TestEnrollRetry: a retry of a completed enrollment within the token's
// lifetime, with the same token, droplet and keys, gets the same credential
// and changes nothing; anything else with a used token is refused.
func TestEnrollRetry(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.provision("ws-acme", 1, 1001, "203.0.113.7")
	name := plan.DropletName("ws-acme", 1)
	tok := w.token("ws-acme", name)
	a := newAgent(t)
	if code := w.enroll(a, a.request(tok, "ws-acme", "1001", name)); code != http.StatusOK {
		t.Fatalf("first enrollment: %d", code)
	}
	first := a.cred
	snapshot := func() string {
		var s string
		w.st.Pool().QueryRow(t.Context(), `SELECT concat_ws(' ', droplet_id, encode(credential_hash, 'hex'), enrolled_at, age_recipient, state)
			FROM agents JOIN fleet_status USING (workspace)`).Scan(&s)
		return s
	}
	stored := snapshot()

	other := newAgent(t)
	tests := []struct {
		name    string
		advance time.Duration
		req     schema.EnrollRequest
		want    int
		result  string
	}{
		{name: "same token, same keys", req: a.request(tok, "ws-acme", "1001", name), want: http.StatusOK, result: "repeated"},
		{name: "same keys, PEM spelt differently", req: func() schema.EnrollRequest {
			r := a.request(tok, "ws-acme", "1001", name)
			r.SigningKey = strings.ReplaceAll(r.SigningKey, "\n", "\r\n")
			return r
		}(), want: http.StatusOK, result: "repeated"},
		{name: "same token, other keys", req: other.request(tok, "ws-acme", "1001", name), want: http.StatusUnauthorized, result: "unauthorized"},
		{name: "same token, same age key, other signing key", req: func() schema.EnrollRequest {
			r := a.request(tok, "ws-acme", "1001", name)
			r.SigningKey = other.request(tok, "ws-acme", "1001", name).SigningKey
			return r
		}(), want: http.StatusUnauthorized, result: "unauthorized"},
		{name: "same token and keys, other droplet", req: a.request(tok, "ws-acme", "1002", name), want: http.StatusUnauthorized, result: "unauthorized"},
		{name: "same token and keys after the token expired", advance: DefaultTokenTTL, req: a.request(tok, "ws-acme", "1001", name), want: http.StatusUnauthorized, result: "unauthorized"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w.advance(tc.advance)
			before := testutilCount(t, w.svc.m.enrollments.WithLabelValues(tc.result))
			body, _ := json.Marshal(tc.req)
			code, _, resp := w.do("POST", "/v1/enroll", "", nil, body)
			if code != tc.want {
				t.Fatalf("status = %d (%s), want %d", code, resp, tc.want)
			}
			if code == http.StatusOK {
				var er schema.EnrollResponse
				if err := schema.DecodeStrict(resp, &er); err != nil || er.Credential != first {
					t.Errorf("repeated enrollment: credential differs from the first (%v)", err)
				}
			}
			if got := testutilCount(t, w.svc.m.enrollments.WithLabelValues(tc.result)); got != before+1 {
				t.Errorf("genesis_enrollments_total{result=%q} = %v, want %v", tc.result, got, before+1)
			}
			if got := snapshot(); got != stored {
				t.Errorf("agent row changed:\n got %s\nwant %s", got, stored)
			}
			if code, _, _ := w.do("GET", "/v1/manifest", first, nil, nil); code != http.StatusOK {
				t.Errorf("the first credential after the retry: %d, want 200", code)
			}
		})
	}
}

// dropFirstResponse is a TCP proxy on 127.0.0.1 in front of backend that
// forwards the first connection's request, waits until the backend's
// response starts (the enrollment committed), and resets the client's
// connection instead of passing the response on. Later connections pass
// through. It stops when the test ends.
func dropFirstResponse(t *testing.T, backend string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			up, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			track(up)
			wg.Add(2)
			go func() {
				defer wg.Done()
				defer up.Close()
				io.Copy(up, c)
			}()
			go func() {
				defer wg.Done()
				defer c.Close()
				if n == 0 {
					var b [1]byte
					up.Read(b[:]) // the response has started: drop it
					c.(*net.TCPConn).SetLinger(0)
					return
				}
				io.Copy(c, up)
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestEnrollLostResponse: the first enrollment response is lost after the
// commit (the proxy resets the connection). The real agent, retrying in
// process or restarted on the same state directory after a crash (its keys
// were saved before the first try; the credential never was), sends the
// same token and keys again, gets the same credential, and runs: one agents
// row, the droplet past BOOTING/INITIALIZING, its credential serves its
// manifest.
func TestEnrollLostResponse(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "retry", true: "restart after a crash"}[crash], func(t *testing.T) {
			w := newWorld(t)
			w.setTenant("ws-acme", "blob1", tenantSpec{})
			w.provision("ws-acme", 1, 1001, "203.0.113.7")
			name := plan.DropletName("ws-acme", 1)
			proxy := dropFirstResponse(t, strings.TrimPrefix(w.srv.URL, "http://"))
			dir := t.TempDir()
			tok := w.token("ws-acme", name)
			logs := &syncio.Buffer{}
			// run starts the agent on dir; retryMin is its first backoff.
			run := func(retryMin time.Duration) (*fleetagent.State, context.CancelFunc, chan error) {
				st, err := fleetagent.OpenState(dir)
				if err != nil {
					t.Fatal(err)
				}
				ag, err := fleetagent.New(fleetagent.Config{
					Bootstrap: schema.AgentConfig{ReconcilerURL: proxy, Workspace: "ws-acme", DropletName: name, Token: tok,
						SigningKeys: []string{string(dsse.MarshalPublicKeyPEM(w.signer.Public()))}},
					DropletID: "1001", State: st, Logger: slog.New(slog.NewTextHandler(logs, nil)),
					RetryMin: retryMin, RetryMax: max(retryMin, 50*time.Millisecond), Version: "test",
				})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(t.Context())
				done := make(chan error, 1)
				go func() { done <- ag.Run(ctx) }()
				return st, cancel, done
			}
			stop := func(st *fleetagent.State, cancel context.CancelFunc, done chan error) {
				cancel()
				if err := <-done; err != nil {
					t.Fatalf("agent Run: %v", err)
				}
				st.Close()
			}
			if crash {
				// The first agent waits an hour after the lost response:
				// it is killed in that wait, before it stored anything.
				st, cancel, done := run(time.Hour)
				poll.Until(t, "the lost response", func() bool { return strings.Contains(logs.String(), "enroll failed, retrying") })
				stop(st, cancel, done)
				if _, err := fleetagent.ReadKeys(dir); err != nil {
					t.Fatalf("keys not on disk before the enrollment: %v", err)
				}
			}
			st, cancel, done := run(10 * time.Millisecond)
			poll.Until(t, "the agent's stored credential", func() bool {
				_, ok, _ := st.Credential("1001")
				return ok
			})
			poll.Until(t, "the droplet's first manifest", func() bool { return w.count(`SELECT count(*) FROM manifests WHERE droplet_id = 1001`) > 0 })
			cred, _, _ := st.Credential("1001")
			stop(st, cancel, done)
			if !strings.Contains(logs.String(), "enroll failed, retrying") {
				t.Errorf("the agent did not see the lost response:\n%s", logs)
			}
			if got := testutilCount(t, w.svc.m.enrollments.WithLabelValues("repeated")); got != 1 {
				t.Errorf(`genesis_enrollments_total{result="repeated"} = %v, want 1 (the retry after the lost response)`, got)
			}
			if got := w.count(`SELECT count(*) FROM agents`); got != 1 {
				t.Errorf("agents = %d, want 1", got)
			}
			h := hash(cred)
			if got := w.count(`SELECT count(*) FROM agents WHERE credential_hash = $1`, h[:]); got != 1 {
				t.Error("the agent's credential is not the stored one")
			}
			var state string
			w.st.Pool().QueryRow(t.Context(), `SELECT state FROM fleet_status WHERE workspace = 'ws-acme'`).Scan(&state)
			if state == "INITIALIZING" || state == "BOOTING" {
				t.Errorf("state = %s, want HANDSHAKE or later", state)
			}
			if code, _, _ := w.do("GET", "/v1/manifest", cred, nil, nil); code != http.StatusOK {
				t.Errorf("manifest with the agent's credential: %d, want 200", code)
			}
		})
	}
}

// TestEnrollRefusalLogsLimited: a flood of refused enrollments writes a
// bounded number of log lines (the first few per window, then one summary
// with the count), while the metric counts every refusal.
func TestEnrollRefusalLogsLimited(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.provision("ws-acme", 1, 1001, "203.0.113.7")
	name := plan.DropletName("ws-acme", 1)
	const flood = 200
	body, _ := json.Marshal(newAgent(t).request("no-such-token", "ws-acme", "1001", name))
	for range flood {
		if code, _, _ := w.do("POST", "/v1/enroll", "", nil, body); code != http.StatusUnauthorized {
			t.Fatalf("status %d, want 401", code)
		}
	}
	if got := testutilCount(t, w.svc.m.enrollments.WithLabelValues("unauthorized")); got != flood {
		t.Errorf(`genesis_enrollments_total{result="unauthorized"} = %v, want %d`, got, flood)
	}
	if got := strings.Count(w.logs.String(), `"msg":"enrollment refused"`); got != refusalBurst {
		t.Errorf("%d refusal log lines for %d refusals in one window, want %d", got, flood, refusalBurst)
	}
	// The next window starts with one summary of what was not logged.
	w.advance(refusalWindow)
	w.do("POST", "/v1/enroll", "", nil, body)
	want := `"msg":"enrollment refusals not logged","component":"agentapi","result":"unauthorized","suppressed":195`
	if !strings.Contains(w.logs.String(), want) {
		t.Errorf("no summary line %s in\n%s", want, lastLines(w.logs.String(), 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
