package agentapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"

	fleetagent "genesis.dev/fleet/agent"
	"genesis.dev/fleet/reconciler"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/fleetapi"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// startAgent runs the real agent of d on state against url (its stored
// credential as it is) and returns how to stop it, as a process exit
// would: nothing after the stop runs.
func (w *world) startAgent(t *testing.T, d *stateDroplet, state *fleetagent.State, url string) (stop func()) {
	t.Helper()
	a, err := fleetagent.New(fleetagent.Config{
		Bootstrap: schema.AgentConfig{ReconcilerURL: url, Workspace: d.ws,
			SigningKeys: []string{string(dsse.MarshalPublicKeyPEM(w.signer.Public()))}},
		DropletID: d.id, State: state, HeartbeatInterval: 200 * time.Millisecond, PollWait: time.Second,
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	var once atomic.Bool
	stop = func() {
		if once.CompareAndSwap(false, true) {
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// TestRotateSecretsThroughFleetAPI: POST /v1/tenants/{id}/actions
// {"action":"rotate_secrets"} through the replica's real handler (tokens,
// scopes, the reconciler's Operate): refused without a token (401) and
// with a dashboard token (403), nothing recorded; accepted with an admin
// token (202), audited with the token's name and the reason; the agent,
// served by the same handler, re-enrolls through POST /v1/agent/reenroll
// and the rotation succeeds.
func TestRotateSecretsThroughFleetAPI(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	bootstrap := dsse.Trusted{}
	bootstrap.Add(w.signer.Public())
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	d := w.enrollState("ws-acme", 1001, "203.0.113.7", bootstrap)
	adminTok, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	readTok, err := auth.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	a := auth.New(auth.Config{Tokens: []auth.Token{
		{Name: "ops-admin", SHA256: auth.Hash(adminTok), Scopes: []auth.Scope{auth.Admin}},
		{Name: "dash", SHA256: auth.Hash(readTok), Scopes: []auth.Scope{auth.Dashboard}},
	}})
	rec := reconciler.New(reconciler.Config{Store: w.st, Logger: slog.New(slog.DiscardHandler), RotateSecrets: w.svc.RequestRotation})
	// The agent's re-enrollment waits until the test has asked for a
	// second rotation: without the gate a fast agent finishes the first
	// one before that request, and "while one runs" would not hold.
	release := make(chan struct{})
	agents := w.svc.Handler()
	gated := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/agent/reenroll" {
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		agents.ServeHTTP(rw, r)
	})
	srv := httptest.NewServer(fleetapi.Handler(fleetapi.HandlerConfig{Reconciler: rec, Store: w.st, Gatherer: prometheus.NewRegistry(),
		Agents: gated, Auth: a}))
	t.Cleanup(srv.Close)
	oldCred := d.cred
	if err := d.state.SaveCredential(d.ws, d.id, d.cred); err != nil {
		t.Fatal(err)
	}
	w.startAgent(t, d, d.state, srv.URL)
	waitFor(t, "the first manifest applied", func() bool { return d.state.Applied().Version >= 1 })
	w.healthy()

	post := func(token, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/tenants/ws-acme/actions", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(data)
	}
	const ask = `{"action":"rotate_secrets","reason":"leaked key, ticket 4711"}`
	for _, c := range []struct {
		name, token, body string
		code              int
	}{
		{"no token", "", ask, http.StatusUnauthorized},
		{"unknown token", "not-a-token", ask, http.StatusUnauthorized},
		{"dashboard token", readTok, ask, http.StatusForbidden},
		{"admin without a reason", adminTok, `{"action":"rotate_secrets","reason":""}`, http.StatusBadRequest},
	} {
		if code, body := post(c.token, c.body); code != c.code {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.code)
		}
	}
	if n := w.count(`SELECT count(*) FROM secret_rotations WHERE workspace = 'ws-acme'`); n != 0 {
		t.Fatalf("refused requests recorded %d rotations", n)
	}
	code, body := post(adminTok, ask)
	if code != http.StatusAccepted || !strings.Contains(body, `"rotate_secrets"`) || !strings.Contains(body, `"requested"`) {
		t.Fatalf("admin: %d %s, want 202 requested", code, body)
	}
	if n := w.count(`SELECT count(*) FROM audit_log WHERE workspace = 'ws-acme' AND action = 'operator.rotate_secrets.requested'
		AND actor = 'ops-admin' AND detail->>'reason' = 'leaked key, ticket 4711'`); n != 1 {
		t.Errorf("audit entries naming the token and reason: %d, want 1", n)
	}
	if code, body := post(adminTok, ask); code != http.StatusConflict {
		t.Errorf("a second rotation while one runs: %d %s, want 409", code, body)
	}
	close(release)
	waitFor(t, "the rotation to succeed", func() bool {
		r, ok, err := w.st.RotationOf(ctx, "ws-acme")
		return err == nil && ok && r.State == "succeeded"
	})
	// The reconciler records success when it accepts the heartbeat with
	// the new credential; the agent switches its stored one right after
	// that answer (it kept the new one as "next" before sending it).
	var newCred string
	waitFor(t, "the agent to switch to its new credential", func() bool {
		c, ok, err := d.state.Credential(d.id)
		newCred = c
		return err == nil && ok && c != oldCred
	})
	if code := heartbeatStatus(t, srv.URL, d, oldCred, 1<<40); code != http.StatusUnauthorized {
		t.Errorf("old credential: heartbeat answered %d, want 401", code)
	}
	if code := heartbeatStatus(t, srv.URL, d, newCred, 1<<41); code != http.StatusAccepted {
		t.Errorf("new credential: heartbeat answered %d, want 202", code)
	}
}

// TestRotateSecretsCrashAfterSwitch: the agent is stopped after the
// reconciler accepted the heartbeat with its new credential (which revoked
// the old one) but before the agent recorded the switch (the answer never
// reached it). Started again on the same state directory, it finds its old
// credential refused and the next one kept, switches and runs on with the
// new keys.
func TestRotateSecretsCrashAfterSwitch(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	bootstrap := dsse.Trusted{}
	bootstrap.Add(w.signer.Public())
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	d := w.enrollState("ws-acme", 1001, "203.0.113.7", bootstrap)
	oldCred, oldRecipient := d.cred, d.state.Keys().Recipient()
	if err := d.state.SaveCredential(d.ws, d.id, d.cred); err != nil {
		t.Fatal(err)
	}
	// The agent talks to the reconciler through a proxy that, once the
	// switch heartbeat went through, answers nothing more: the agent
	// "dies" waiting.
	var tripped atomic.Bool
	switched := make(chan struct{})
	proxy := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if tripped.Load() {
			<-r.Context().Done()
			return
		}
		body, _ := io.ReadAll(r.Body)
		req, err := http.NewRequestWithContext(r.Context(), r.Method, w.srv.URL+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(rw, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		isSwitch := r.URL.Path == "/v1/heartbeat" && r.Header.Get("Authorization") != "Bearer "+oldCred &&
			bytes.Contains(body, []byte(`"rotation":{"done":1}`))
		if isSwitch && resp.StatusCode == http.StatusAccepted && tripped.CompareAndSwap(false, true) {
			close(switched)
			<-r.Context().Done()
			return
		}
		for k, v := range resp.Header {
			rw.Header()[k] = v
		}
		rw.WriteHeader(resp.StatusCode)
		io.Copy(rw, resp.Body)
	}))
	t.Cleanup(proxy.Close)
	stop := w.startAgent(t, d, d.state, proxy.URL)
	waitFor(t, "the first manifest applied", func() bool { return d.state.Applied().Version >= 1 })
	w.healthy()
	if _, err := w.svc.RequestRotation(ctx, "ws-acme", "token:ops", "crash test"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-switched:
	case <-time.After(30 * time.Second):
		t.Fatal("the agent never sent its switch heartbeat")
	}
	stop()

	// The reconciler switched; the agent did not.
	if code := heartbeatStatus(t, w.srv.URL, d, oldCred, 1<<40); code != http.StatusUnauthorized {
		t.Errorf("old credential after the accepted switch: %d, want 401", code)
	}
	if cred, _, _ := d.state.Credential(d.id); cred != oldCred {
		t.Fatal("the agent recorded the switch before it was stopped: the test checks nothing")
	}
	dir := d.state.Dir()
	if _, err := os.Stat(filepath.Join(dir, "credential.next.json")); err != nil {
		t.Fatalf("no next credential kept: %v", err)
	}
	if r := d.state.RotationReport(); r == nil || r.Done != 0 {
		t.Fatalf("rotation report before the restart %+v, want not done", r)
	}
	if err := d.state.Close(); err != nil {
		t.Fatal(err)
	}

	// The agent starts again on the same directory.
	st, err := fleetagent.OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w.startAgent(t, d, st, w.srv.URL)
	waitFor(t, "the switch finished at the restart", func() bool {
		r := st.RotationReport()
		return r != nil && r.Done == 1 && r.Working == 0
	})
	newCred, ok, err := st.Credential(d.id)
	if err != nil || !ok || newCred == oldCred {
		t.Fatalf("stored credential after the restart: changed %v, %v", newCred != oldCred, err)
	}
	if st.Keys().Recipient() == oldRecipient {
		t.Error("the agent's age identity did not change")
	}
	if _, err := os.Stat(filepath.Join(dir, "credential.next.json")); err == nil {
		t.Error("credential.next.json left behind")
	}
	if code := heartbeatStatus(t, w.srv.URL, d, newCred, 1<<41); code != http.StatusAccepted {
		t.Errorf("new credential: %d, want 202", code)
	}
	if r, ok, err := w.st.RotationOf(ctx, "ws-acme"); err != nil || !ok || r.State != "succeeded" {
		t.Errorf("rotation %+v %v, want succeeded", r, err)
	}
	// It runs on: a manifest sealed to the new recipient, without the
	// rotation, is accepted.
	waitFor(t, "a manifest without the rotation", func() bool {
		m, err := appliedOf(st)
		return err == nil && m.Rotate == nil && m.Version > 2
	})
}

// FuzzDecodeReenroll: any body is refused with an error naming the field
// (or saying it is malformed) or yields a request whose keys parse.
func FuzzDecodeReenroll(f *testing.F) {
	id, _ := age.GenerateX25519Identity()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	pem := string(dsse.MarshalPublicKeyPEM(pub))
	good, _ := json.Marshal(schema.ReenrollRequest{Token: "t0k3n", Generation: 1, AgeRecipient: id.Recipient().String(), SigningKey: pem})
	f.Add(good)
	for _, s := range []string{
		`{"token":"","generation":1}`, `{"token":"t","generation":0}`, `{"token":"t","generation":-5}`,
		`{"token":"t","generation":"1"}`, `{"token":"t","generation":1,"age_recipient":"age1xyz"}`,
		`{"token":"t","generation":1,"age_recipient":"` + id.Recipient().String() + `","signing_key":"nope"}`,
		`{"token":"t","generation":1,"extra":true}`, `{"token":"t","token":"u"}`, `[]`, `null`, ``,
		`{"token":"` + strings.Repeat("x", 300) + `","generation":1}`,
	} {
		f.Add([]byte(s))
	}
	fields := []string{"token", "generation", "age_recipient", "signing_key", "malformed re-enrollment"}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeReenroll(body)
		if err != nil {
			for _, name := range fields {
				if strings.Contains(err.Error(), name) {
					return
				}
			}
			t.Fatalf("error names no field: %v", err)
		}
		if r.Token == "" || len(r.Token) > 256 || r.Generation <= 0 || len(r.pub) != ed25519.PublicKeySize {
			t.Fatalf("accepted a re-enrollment that breaks the checks: %+v", r.ReenrollRequest)
		}
		if _, err := age.ParseX25519Recipient(r.recipient); err != nil {
			t.Fatalf("accepted recipient %q: %v", r.recipient, err)
		}
	})
}

// FuzzHeartbeatRotation: a heartbeat's rotation report with negative
// generations or an oversized error is refused with an error naming
// rotation; any other is kept as sent.
func FuzzHeartbeatRotation(f *testing.F) {
	f.Add(int64(1), int64(0), "")
	f.Add(int64(0), int64(2), "re-enroll new keys: 403")
	f.Add(int64(-1), int64(0), "")
	f.Add(int64(0), int64(-7), "")
	f.Add(int64(3), int64(4), strings.Repeat("e", 1001))
	f.Add(int64(1)<<62, int64(0), "\xff\xfe")
	f.Fuzz(func(t *testing.T, done, working int64, errText string) {
		body, err := json.Marshal(schema.Heartbeat{Workspace: "ws-acme", Droplet: "1001", Seq: 1, SentAt: time.Unix(1700000000, 0).UTC(),
			Rotation: &schema.RotationReport{Done: done, Working: working, Error: errText}})
		if err != nil {
			t.Fatal(err)
		}
		// What the reconciler receives (invalid UTF-8 becomes U+FFFD).
		var sent struct{ Rotation schema.RotationReport }
		if err := json.Unmarshal(body, &sent); err != nil {
			t.Fatal(err)
		}
		bad := done < 0 || working < 0 || len(sent.Rotation.Error) > 1000
		hb, err := decodeHeartbeat(body)
		switch {
		case bad && err == nil:
			t.Fatalf("accepted rotation %+v", sent.Rotation)
		case err != nil && !strings.Contains(err.Error(), "rotation"):
			t.Fatalf("error names no field: %v", err)
		case !bad && err != nil:
			t.Fatalf("refused a good rotation report %+v: %v", sent.Rotation, err)
		case err == nil && (hb.Rotation == nil || *hb.Rotation != sent.Rotation):
			t.Fatalf("rotation %+v, sent %+v", hb.Rotation, sent.Rotation)
		}
	})
}
