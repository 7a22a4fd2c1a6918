package agentapi

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	fleetagent "genesis.dev/fleet/agent"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// runAgent runs the real agent of d against url until the test ends.
func (w *world) runAgent(t *testing.T, d *stateDroplet, url string, rotate func(context.Context, int64) error) {
	t.Helper()
	if err := d.state.SaveCredential(d.ws, d.id, d.cred); err != nil {
		t.Fatal(err)
	}
	a, err := fleetagent.New(fleetagent.Config{
		Bootstrap: schema.AgentConfig{ReconcilerURL: url, Workspace: d.ws,
			SigningKeys: []string{string(dsse.MarshalPublicKeyPEM(w.signer.Public()))}},
		DropletID: d.id, State: d.state, HeartbeatInterval: 200 * time.Millisecond, PollWait: time.Second,
		RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond, RotateSecrets: rotate,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// heartbeatStatus posts a heartbeat of d with cred and returns the status.
func heartbeatStatus(t *testing.T, url string, d *stateDroplet, cred string, seq int64) int {
	t.Helper()
	_, err := (&fleetagent.Client{BaseURL: url}).Heartbeat(context.Background(), cred,
		schema.Heartbeat{Workspace: d.ws, Droplet: d.id, Seq: seq, SentAt: time.Now()})
	var se *fleetagent.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	if err != nil {
		t.Fatal(err)
	}
	return http.StatusAccepted
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRotateSecrets: an operator's rotation reaches a real agent through
// its manifest; the agent's n8n part runs, it re-enrolls new keys, and its
// first heartbeat with the new credential revokes the old one and finishes
// the rotation (audited). A second request while one runs is refused, and
// the fleet's budget per minute holds.
func TestRotateSecrets(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t, func(c *Config) { c.RotationsPerMinute = 2 })
	bootstrap := dsse.Trusted{}
	bootstrap.Add(w.signer.Public())
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.setTenant("ws-beta", "blob2", tenantSpec{})
	w.setTenant("ws-gamma", "blob3", tenantSpec{})
	d := w.enrollState("ws-acme", 1001, "203.0.113.7", bootstrap)
	oldCred, oldRecipient := d.cred, d.state.Keys().Recipient()
	var n8nRotated atomic.Int64
	w.runAgent(t, d, w.srv.URL, func(_ context.Context, gen int64) error { n8nRotated.Store(gen); return nil })
	waitFor(t, "the first manifest applied", func() bool { return d.state.Applied().Version >= 1 })
	w.healthy()

	rot, err := w.svc.RequestRotation(ctx, "ws-acme", "token:ops", "leaked key, ticket 4711")
	if err != nil || rot.Generation != 1 {
		t.Fatalf("request rotation: %+v %v", rot, err)
	}
	if _, err := w.svc.RequestRotation(ctx, "ws-acme", "token:ops", "again"); !errors.Is(err, store.ErrRotationRunning) {
		t.Errorf("second request while one runs: %v, want ErrRotationRunning", err)
	}
	waitFor(t, "the rotation to succeed", func() bool {
		r, ok, err := w.st.RotationOf(ctx, "ws-acme")
		return err == nil && ok && r.State == "succeeded"
	})
	// The server records success at the first heartbeat with the new
	// credential, which the agent sends before it finishes its own
	// switch: wait for the agent's side too (a CI run read its keys in
	// between).
	waitFor(t, "the agent to finish its switch", func() bool {
		r := d.state.RotationReport()
		return r != nil && r.Done == 1 && r.Working == 0
	})
	if got := n8nRotated.Load(); got != 1 {
		t.Errorf("n8n part ran for generation %d, want 1", got)
	}
	newRecipient := d.state.Keys().Recipient()
	if newRecipient == oldRecipient {
		t.Error("the agent's age identity did not change")
	}
	newCred, ok, err := d.state.Credential(d.id)
	if err != nil || !ok || newCred == oldCred {
		t.Fatalf("stored credential after rotation: changed %v, %v", newCred != oldCred, err)
	}
	if code := heartbeatStatus(t, w.srv.URL, d, oldCred, 1<<40); code != http.StatusUnauthorized {
		t.Errorf("old credential: heartbeat answered %d, want 401", code)
	}
	if code := heartbeatStatus(t, w.srv.URL, d, newCred, 1<<41); code != http.StatusAccepted {
		t.Errorf("new credential: heartbeat answered %d, want 202", code)
	}
	if n := w.count(`SELECT count(*) FROM agents WHERE droplet_id = 1001 AND age_recipient = $1 AND next_credential_hash IS NULL`, newRecipient); n != 1 {
		t.Errorf("agents row does not hold the new recipient")
	}
	for _, action := range []string{"operator.rotate_secrets.requested", "agent.reenrolled", "agent.credential.revoked", "operator.rotate_secrets.succeeded"} {
		if n := w.count(`SELECT count(*) FROM audit_log WHERE workspace = 'ws-acme' AND action = $1`, action); n != 1 {
			t.Errorf("audit %s: %d entries, want 1", action, n)
		}
	}
	// The next manifest is sealed to the new recipient and carries no
	// rotation; the agent accepts it.
	waitFor(t, "a manifest without the rotation", func() bool {
		m, err := appliedOf(d.state)
		return err == nil && m.Rotate == nil && m.Version > 2
	})

	// The budget: 2 per minute across the fleet (one used above).
	w.enrollState("ws-beta", 1002, "203.0.113.8", bootstrap)
	w.enrollState("ws-gamma", 1003, "203.0.113.9", bootstrap)
	w.healthy()
	if _, err := w.svc.RequestRotation(ctx, "ws-beta", "token:ops", "routine"); err != nil {
		t.Fatalf("rotation within the budget: %v", err)
	}
	if _, err := w.svc.RequestRotation(ctx, "ws-gamma", "token:ops", "routine"); !errors.Is(err, store.ErrRotationBudget) {
		t.Errorf("rotation past the budget: %v, want ErrRotationBudget", err)
	}
}

// healthy moves every tenant with a droplet to ACTIVE_HEALTHY (the
// watchdog's part, which this package's world does not run).
func (w *world) healthy() {
	w.t.Helper()
	if _, err := w.st.Pool().Exec(context.Background(), `UPDATE fleet_status SET state = 'ACTIVE_HEALTHY' WHERE droplet_id IS NOT NULL`); err != nil {
		w.t.Fatal(err)
	}
}

// appliedOf decodes the state's applied manifest.
func appliedOf(st *fleetagent.State) (schema.Manifest, error) {
	var m schema.Manifest
	err := schema.DecodeStrict(payloadOfEnv(st.Applied().Envelope), &m)
	return m, err
}

func payloadOfEnv(env []byte) []byte {
	var e dsse.Envelope
	if schema.DecodeStrict(env, &e) != nil {
		return nil
	}
	p, _ := e.DecodedPayload()
	return p
}

// TestRotateSecretsReenrollRefused: while re-enrollment is refused (a
// proxy answers 403 in the reconciler's place), the old credential keeps
// working, nothing is revoked, and the agent reports the error; once it
// goes through, the rotation finishes.
func TestRotateSecretsReenrollRefused(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	bootstrap := dsse.Trusted{}
	bootstrap.Add(w.signer.Public())
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	d := w.enrollState("ws-acme", 1001, "203.0.113.7", bootstrap)
	oldCred := d.cred
	var refuse atomic.Bool
	refuse.Store(true)
	target, _ := url.Parse(w.srv.URL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if refuse.Load() && strings.HasSuffix(r.URL.Path, "/v1/agent/reenroll") {
			http.Error(rw, "refused by the test", http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(rw, r)
	}))
	t.Cleanup(front.Close)
	w.runAgent(t, d, front.URL, nil)
	waitFor(t, "the first manifest applied", func() bool { return d.state.Applied().Version >= 1 })
	w.healthy()
	if _, err := w.svc.RequestRotation(ctx, "ws-acme", "token:ops", "test"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to report the refusal", func() bool {
		r, _, _ := w.st.RotationOf(ctx, "ws-acme")
		return strings.Contains(r.Error, "re-enroll")
	})
	if r, _, _ := w.st.RotationOf(ctx, "ws-acme"); r.State != "running" || r.Step != "requested" {
		t.Errorf("rotation %s/%s, want running/requested", r.State, r.Step)
	}
	if code := heartbeatStatus(t, w.srv.URL, d, oldCred, 1<<40); code != http.StatusAccepted {
		t.Errorf("old credential during a refused re-enrollment: %d, want 202", code)
	}
	refuse.Store(false)
	waitFor(t, "the rotation to succeed", func() bool {
		r, _, _ := w.st.RotationOf(ctx, "ws-acme")
		return r.State == "succeeded"
	})
	if code := heartbeatStatus(t, w.srv.URL, d, oldCred, 1<<41); code != http.StatusUnauthorized {
		t.Errorf("old credential after the rotation: %d, want 401", code)
	}
}
