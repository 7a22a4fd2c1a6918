package agentapi

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// fleetRow is workspace ws's fleet_status row as JSON ("" when none).
func (w *world) fleetRow(ws string) string {
	w.t.Helper()
	var row string
	err := w.st.Pool().QueryRow(context.Background(), `SELECT to_jsonb(f)::text FROM fleet_status f WHERE workspace = $1`, ws).Scan(&row)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		w.t.Fatal(err)
	}
	return row
}

// act journals a and finishes it with out, as the executor does.
func (w *world) act(a plan.Action, desired schema.State, out store.Outcome) {
	w.t.Helper()
	ctx := context.Background()
	id, err := w.st.Begin(ctx, a, desired, commitA)
	if err != nil {
		w.t.Fatal(err)
	}
	out.Desired = desired
	if err := w.st.Finish(ctx, id, a, out, nil); err != nil {
		w.t.Fatalf("finish %s: %v", a, err)
	}
}

// enrollAs enrolls a new agent for droplet (not yet recorded by its
// action: the new droplet of a wake, rebuild or resize may enroll before
// the action finishes).
func (w *world) enrollAs(ws string, gen, droplet int) *agent {
	w.t.Helper()
	a := newAgent(w.t)
	name := plan.DropletName(ws, gen)
	// Bound to the droplet as store.Created binds it when the create
	// returns, before the action that made the droplet finishes.
	tok := w.unboundToken(ws, name)
	h := hash(tok)
	if _, err := w.st.Pool().Exec(context.Background(), `UPDATE enrollment_tokens SET droplet_id = $2 WHERE token_hash = $1`, h[:], droplet); err != nil {
		w.t.Fatal(err)
	}
	if code := w.enroll(a, a.request(tok, ws, fmt.Sprint(droplet), name)); code != http.StatusOK {
		w.t.Fatalf("enroll %s droplet %d: %d", ws, droplet, code)
	}
	return a
}

// statusOf sends a request with cred and returns its status.
func statusOf(t testing.TB, method, url, cred, body string) int {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+cred)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// manifestCode is the status GET /v1/manifest answers cred at base.
func manifestCode(t testing.TB, base, cred string) int {
	t.Helper()
	return statusOf(t, "GET", base+"/v1/manifest", cred, "")
}

// TestRevocationPaths: for every way the reconciler destroys or replaces a
// droplet, recorded through the store functions its executor calls, the
// old droplet's credential is refused afterwards (401 on the manifest and
// the heartbeat, on this replica and on a second one that had it cached
// and learns of the revocation through NOTIFY), a heartbeat of it that was
// queued before the revocation changes nothing in fleet_status, and the
// droplet that took over keeps working.
func TestRevocationPaths(t *testing.T) {
	w := newWorld(t)
	_, rsrv := w.replica()
	ctx := context.Background()
	acct := func(ws string, gen int) plan.Action {
		return plan.Action{Workspace: ws, Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Droplet: plan.DropletName(ws, gen), Gen: gen}
	}
	hibernate := func(ws string, droplet int) {
		a := acct(ws, 1)
		a.Kind, a.DropletID = plan.Hibernate, droplet
		w.act(a, schema.StateHibernated, store.Outcome{SnapshotID: "snap-" + ws, SnapshotGB: 1})
	}
	replace := func(kind plan.Kind) func(ws string, old int) (string, int, *agent) {
		return func(ws string, old int) (string, int, *agent) {
			a := acct(ws, 2)
			a.Kind = kind
			if kind == plan.Wake {
				hibernate(ws, old)
			}
			if kind == plan.Rebuild || kind == plan.Resize {
				a.DropletID = old
			}
			next := old + 1
			// The new droplet's agent enrolls while the action runs.
			fresh := w.enrollAs(ws, 2, next)
			w.act(a, schema.StateRunning, store.Outcome{Account: "acct-a", DropletID: next, DropletName: a.Droplet, IP: "203.0.113.99"})
			return ws, next, fresh
		}
	}
	for i, tc := range []struct {
		name string
		// run destroys or replaces droplet old of ws; it returns the
		// workspace and droplet that took over (if any) and its agent.
		run func(ws string, old int) (string, int, *agent)
	}{
		{"absent destroy", func(ws string, old int) (string, int, *agent) {
			a := acct(ws, 1)
			a.Kind, a.DropletID = plan.Destroy, old
			w.act(a, schema.StateAbsent, store.Outcome{})
			return "", 0, nil
		}},
		{"hibernate", func(ws string, old int) (string, int, *agent) {
			hibernate(ws, old)
			return "", 0, nil
		}},
		// The woken droplet is made from the snapshot: its disk holds the
		// old droplet's agent state and credential.
		{"wake", replace(plan.Wake)},
		{"rebuild", replace(plan.Rebuild)},
		{"resize", replace(plan.Resize)},
		{"spare assignment", func(ws string, old int) (string, int, *agent) {
			spare := fmt.Sprintf("spare-nyc3-%d", old)
			sparedrop := old + 1
			s := w.mustEnroll(spare, 1, sparedrop, "203.0.113.98")
			a := acct(ws, 2)
			a.Kind, a.Spare, a.DropletID = plan.AssignSpare, spare, sparedrop
			if err := w.st.MoveSpare(ctx, a, "203.0.113.98", schema.StateRunning); err != nil {
				t.Fatal(err)
			}
			return ws, sparedrop, s
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ws := fmt.Sprintf("ws-revoke-%d", i)
			old := 5000 + 10*i
			w.setTenant(ws, "blob", tenantSpec{})
			a := w.mustEnroll(ws, 1, old, "203.0.113.7")
			// The other replica learns of the enrollment through NOTIFY.
			for _, base := range []string{w.srv.URL, rsrv.URL} {
				poll.Until(t, "manifest before", func() bool { return manifestCode(t, base, a.cred) == http.StatusOK })
			}

			nws, next, fresh := tc.run(ws, old)

			for name, base := range map[string]string{"this replica": w.srv.URL, "other replica": rsrv.URL} {
				poll.Until(t, "old credential refused on "+name, func() bool { return manifestCode(t, base, a.cred) == http.StatusUnauthorized })
			}
			if n := w.count(`SELECT count(*) FROM agents WHERE droplet_id = $1 AND revoked_at IS NULL`, old); n != 0 {
				t.Errorf("agents row of droplet %d not revoked", old)
			}
			before := w.fleetRow(ws)
			beat := hb(ws, fmt.Sprint(old), 99, 9, true)
			beat.LastActivity = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
			if got := w.beat(a.cred, beat); got != http.StatusUnauthorized {
				t.Errorf("heartbeat with the old credential: %d, want 401", got)
			}
			// One accepted just before the revocation, written after it.
			future := beat.LastActivity
			err := w.svc.writeBatch(ctx, []store.Heartbeat{{Droplet: int64(old), Workspace: ws, Seq: 100, At: w.now(), Body: []byte(`{}`),
				Applied: 9, Activity: &future, AgentVersion: "evil", OK: true}})
			if err != nil {
				t.Fatal(err)
			}
			if after := w.fleetRow(ws); after != before {
				t.Errorf("fleet_status changed by the revoked droplet's heartbeat:\nbefore %s\nafter  %s", before, after)
			}
			if fresh != nil {
				for _, base := range []string{w.srv.URL, rsrv.URL} {
					if got := manifestCode(t, base, fresh.cred); got == http.StatusUnauthorized {
						t.Errorf("droplet %d of %s that took over: manifest %d", next, nws, got)
					}
				}
				if got := w.beat(fresh.cred, hb(nws, fmt.Sprint(next), 1, 0, true)); got != http.StatusAccepted {
					t.Errorf("droplet %d that took over: heartbeat %d, want 202", next, got)
				}
			}
		})
	}
}

// TestRevokedDropletCannotEnrollAgain: a revoked droplet holding a valid
// token (one minted for its name, as a snapshot of it would) gets no new
// credential, and nothing changes.
func TestRevokedDropletCannotEnrollAgain(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-zombie", "blob", tenantSpec{})
	w.mustEnroll("ws-zombie", 1, 6001, "203.0.113.7")
	a := plan.Action{Kind: plan.Hibernate, Workspace: "ws-zombie", Account: "acct-a", Droplet: plan.DropletName("ws-zombie", 1), DropletID: 6001}
	w.act(a, schema.StateHibernated, store.Outcome{SnapshotID: "snap-z", SnapshotGB: 1})
	before := w.count(`SELECT count(*) FROM agents WHERE droplet_id = 6001 AND revoked_at IS NOT NULL`)
	z := newAgent(t)
	name := plan.DropletName("ws-zombie", 1)
	// Its record is gone, so a new token for its name would never be bound
	// (503 "not yet" forever); bind one anyway, as a token minted before
	// the hibernation could have been.
	tok := w.unboundToken("ws-zombie", name)
	h := hash(tok)
	if _, err := w.st.Pool().Exec(context.Background(), `UPDATE enrollment_tokens SET droplet_id = 6001 WHERE token_hash = $1`, h[:]); err != nil {
		t.Fatal(err)
	}
	if code := w.enroll(z, z.request(tok, "ws-zombie", "6001", name)); code != http.StatusForbidden {
		t.Fatalf("a revoked droplet enrolling again: %d, want 403 (credential works: %d)", code, manifestCode(t, w.srv.URL, z.cred))
	}
	if got := w.count(`SELECT count(*) FROM agents WHERE droplet_id = 6001 AND revoked_at IS NOT NULL`); got != before || got != 1 {
		t.Errorf("revoked agents rows = %d, want 1", got)
	}
}

// TestDestroySpareRevokes: a spare's row goes with its droplet; the agent
// row goes by cascade and every replica drops the credential.
func TestDestroySpareRevokes(t *testing.T) {
	w := newWorld(t)
	_, rsrv := w.replica()
	s := w.mustEnroll("spare-nyc3-0", 1, 7001, "203.0.113.7")
	poll.Until(t, "manifest before", func() bool { return manifestCode(t, rsrv.URL, s.cred) == http.StatusOK })
	a := plan.Action{Kind: plan.DestroySpare, Workspace: "spare-nyc3-0", Account: "acct-a", Droplet: plan.DropletName("spare-nyc3-0", 1), DropletID: 7001}
	w.act(a, schema.StateAbsent, store.Outcome{})
	for _, base := range []string{w.srv.URL, rsrv.URL} {
		poll.Until(t, "spare credential refused", func() bool { return manifestCode(t, base, s.cred) == http.StatusUnauthorized })
	}
}

// TestReplicaReloadsAfterMissedNotifications: a replica that was not
// listening when a credential was revoked (its listener reconnects) loads
// the set again and refuses it.
func TestReplicaReloadsAfterMissedNotifications(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-deaf", "blob", tenantSpec{})
	a := w.mustEnroll("ws-deaf", 1, 8001, "203.0.113.7")
	// A replica that does not listen (no Run): it loads the set as its
	// listener does on every (re)connect.
	cfg := w.cfg
	cfg.Registerer = nil
	deaf := New(cfg)
	ctx := context.Background()
	if err := deaf.loadCredentials(ctx); err != nil {
		t.Fatal(err)
	}
	req := func() *http.Request {
		r, _ := http.NewRequest("GET", "/v1/manifest", nil)
		r.Header.Set("Authorization", "Bearer "+a.cred)
		return r
	}
	if ref, err := deaf.authenticate(req()); ref == nil || err != nil {
		t.Fatalf("before: %v %v", ref, err)
	}
	h := plan.Action{Kind: plan.Hibernate, Workspace: "ws-deaf", Account: "acct-a", Droplet: plan.DropletName("ws-deaf", 1), DropletID: 8001}
	w.act(h, schema.StateHibernated, store.Outcome{SnapshotID: "snap-d", SnapshotGB: 1})
	// What the listener does when it reconnects.
	deaf.flush()
	if ref, err := deaf.authenticate(req()); ref != nil || err != nil {
		t.Errorf("while reloading: %v %v, want refused from Postgres", ref, err)
	}
	if err := deaf.loadCredentials(ctx); err != nil {
		t.Fatal(err)
	}
	if ref, err := deaf.authenticate(req()); ref != nil || err != nil {
		t.Errorf("after reload: %v %v, want refused", ref, err)
	}

	// The real listener: its connection is killed, it reconnects and
	// loads again.
	poll.Until(t, "listener connected", func() bool {
		return w.count(`SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN genesis_agents'`) > 0
	})
	w.count(`SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN genesis_agents') t`)
	poll.Until(t, "listener back with the set loaded", func() bool { return credentialsLoaded(w.svc) })
	if got := manifestCode(t, w.srv.URL, a.cred); got != http.StatusUnauthorized {
		t.Errorf("after reconnect: %d, want 401", got)
	}
}

// TestHeartbeatTimesClamped: reported times later than the server's clock
// plus MaxClockSkew are stored as that; an old last_activity does not
// lower the stored one.
func TestHeartbeatTimesClamped(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-clock", "blob", tenantSpec{})
	a := w.mustEnroll("ws-clock", 1, 9001, "203.0.113.7")
	recent := w.now().Add(-time.Hour).UTC().Truncate(time.Second)
	for i, tc := range []struct {
		name     string
		activity time.Time
		// want is the stored last activity: the reported time, or,
		// when later, the server's clock plus MaxClockSkew (wantClamp).
		want      time.Time
		wantClamp bool
	}{
		{"recent", recent, recent, false},
		{"year 2099", time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}, true},
		{"1990 does not lower it", time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC), time.Time{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			beat := hb("ws-clock", "9001", int64(i+1), 0, true)
			beat.LastActivity = tc.activity
			beat.SentAt = tc.activity
			sent := w.now()
			if code := w.beat(a.cred, beat); code != http.StatusAccepted {
				t.Fatalf("heartbeat: %d", code)
			}
			poll.Until(t, "written", func() bool { return w.status("ws-clock", 9001).LastSeq == int64(i+1) })
			got := w.status("ws-clock", 9001).Activity
			var stored time.Time
			if err := w.st.Pool().QueryRow(context.Background(), `SELECT (heartbeat->>'sent_at')::timestamptz FROM fleet_status WHERE workspace = 'ws-clock'`).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			if tc.wantClamp {
				limit := w.now().Add(MaxClockSkew)
				if got.After(limit) || got.Before(sent.Add(MaxClockSkew).Add(-time.Second)) {
					t.Errorf("last_activity_at = %v, want now + %v (%v)", got, MaxClockSkew, limit)
				}
				if stored.After(limit) {
					t.Errorf("stored sent_at = %v, later than %v", stored, limit)
				}
				return
			}
			if !got.Equal(tc.want) {
				t.Errorf("last_activity_at = %v, want %v", got, tc.want)
			}
		})
	}
}

// queryCounter counts the queries a pool sends, and among them the
// credential lookups.
type queryCounter struct{ all, auth atomic.Int64 }

func (q *queryCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	q.all.Add(1)
	if strings.Contains(d.SQL, "WHERE credential_hash = $1") {
		q.auth.Add(1)
	}
	return ctx
}

func (q *queryCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// countedReplica is a replica whose pool counts its queries.
func (w *world) countedReplica() (*Service, string, *queryCounter) {
	w.t.Helper()
	pc, err := pgxpool.ParseConfig(w.st.Pool().Config().ConnString())
	if err != nil {
		w.t.Fatal(err)
	}
	qc := &queryCounter{}
	pc.ConnConfig.Tracer = qc
	pool, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(pool.Close)
	svc, srv := w.replica(func(c *Config) { c.Store = store.New(pool, c.Logger) })
	return svc, srv.URL, qc
}

func randomCredential(t testing.TB) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// sendBogus sends request i of a series with random credentials (even: GET
// /v1/manifest, odd: POST /v1/heartbeat) and returns its status.
func sendBogus(t testing.TB, base string, i int) int {
	t.Helper()
	if i%2 == 1 {
		return statusOf(t, "POST", base+"/v1/heartbeat", randomCredential(t), `{}`)
	}
	return manifestCode(t, base, randomCredential(t))
}

// TestBogusCredentialsCostNoQuery: 1,000 requests with random credentials
// (manifest and heartbeat) are refused from memory: not one credential
// lookup reaches Postgres. A valid credential still is looked up once.
func TestBogusCredentialsCostNoQuery(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-real", "blob", tenantSpec{})
	a := w.mustEnroll("ws-real", 1, 9101, "203.0.113.7")
	svc, base, qc := w.countedReplica()
	poll.Until(t, "credential set loaded", func() bool { return credentialsLoaded(svc) })
	all0 := qc.all.Load()
	for i := range 1000 {
		if got := sendBogus(t, base, i); got != http.StatusUnauthorized {
			t.Fatalf("bogus credential %d: %d, want 401", i, got)
		}
	}
	if got := qc.auth.Load(); got != 0 {
		t.Errorf("credential lookups for 1,000 bogus credentials = %d, want 0", got)
	}
	t.Logf("queries during 1,000 bogus requests: %d (background work included)", qc.all.Load()-all0)
	if got := manifestCode(t, base, a.cred); got != http.StatusOK {
		t.Errorf("valid credential: %d", got)
	}
	if got := qc.auth.Load(); got != 1 {
		t.Errorf("credential lookups for one valid credential = %d, want 1", got)
	}
}

// TestCredentialSetMemory measures the set of valid credentials at
// 1,000,000 agents: bytes per agent, for the 8-byte keys used and, for
// comparison, full 32-byte hashes.
func TestCredentialSetMemory(t *testing.T) {
	const n = 1_000_000
	measure := func(build func() any) float64 {
		runtime.GC()
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		v := build()
		runtime.GC()
		runtime.ReadMemStats(&m1)
		runtime.KeepAlive(v)
		return float64(m1.HeapAlloc-m0.HeapAlloc) / n
	}
	var seed [32]byte
	key := func(i int) [32]byte {
		binary.BigEndian.PutUint64(seed[:8], uint64(i)*0x9e3779b97f4a7c15)
		return seed
	}
	prefix := measure(func() any {
		// As loadCredentials builds it, then a day of churn: 1% of the
		// agents replaced.
		keys := make([]uint64, 0, n)
		for i := range n {
			keys = append(keys, credKey(key(i)))
		}
		set := newCredSet(keys)
		for i := range n / 100 {
			set.remove(credKey(key(i)))
			set.add(credKey(key(n + i)))
		}
		if !set.has(credKey(key(n+1))) || set.has(credKey(key(1))) || !set.has(credKey(key(n-1))) || set.len() != n {
			t.Fatalf("set after churn: len %d", set.len())
		}
		return set
	})
	full := measure(func() any {
		keys := make(map[[32]byte]struct{}, n)
		for i := range n {
			keys[key(i)] = struct{}{}
		}
		return keys
	})
	t.Logf("valid credential set at %d agents: %.1f bytes/agent (%.0f MB); a map of full hashes would take %.1f", n, prefix, prefix*n/1e6, full)
	if prefix > 16 {
		t.Errorf("%.1f bytes per agent, want at most 16", prefix)
	}
}

// credentialsLoaded reports whether s holds the set of valid credentials.
func credentialsLoaded(s *Service) bool {
	s.authMu.RLock()
	defer s.authMu.RUnlock()
	return s.creds.loaded
}

// FuzzNotified: any notification payload is applied or ignored, never a
// panic; a credential is in the set after its "k" and out after its "r".
func FuzzNotified(f *testing.F) {
	for _, p := range []string{"k 1 " + strings.Repeat("ab", 32), "r 1 " + strings.Repeat("ab", 32), "a 7", "m 7 3", "k 1 zz", "r", "k 1 " + strings.Repeat("a", 63), ""} {
		f.Add(p)
	}
	s := New(Config{Logger: slog.New(slog.DiscardHandler)})
	f.Fuzz(func(t *testing.T, payload string) {
		s.notified(context.Background(), payload)
		fs := strings.Fields(payload)
		if len(fs) != 3 || (fs[0] != "k" && fs[0] != "r") {
			return
		}
		var key [32]byte
		if _, err := strconv.ParseInt(fs[1], 10, 64); err != nil || len(fs[2]) != 64 {
			return
		}
		if _, err := hex.Decode(key[:], []byte(fs[2])); err != nil {
			return
		}
		s.authMu.RLock()
		defer s.authMu.RUnlock()
		if got := s.creds.keys.has(credKey(key)); got != (fs[0] == "k") {
			t.Errorf("after %q: in the set = %v", payload, got)
		}
	})
}
