package agentapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	cloudinit "genesis.dev/fleet/deploy/cloud-init"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

func TestEnroll(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{domains: []string{"track.acme.com"}})
	w.setTenant("ws-beta", "blob2", tenantSpec{})
	w.provision("ws-acme", 1, 1001, "203.0.113.7")
	w.provision("ws-beta", 1, 2001, "203.0.113.8")
	nameA, nameB := plan.DropletName("ws-acme", 1), plan.DropletName("ws-beta", 1)

	used := w.token("ws-acme", nameA)
	if code := w.enroll(newAgent(t), newAgent(t).request(used, "ws-acme", "1001", nameA)); code != http.StatusOK {
		t.Fatalf("first enrollment: %d", code)
	}
	expired := w.token("ws-beta", nameB)
	w.advance(31 * time.Minute)
	foreign := w.token("ws-acme", nameA)

	tests := []struct {
		name   string
		req    func(a *agent) schema.EnrollRequest
		raw    string
		want   int
		result string
	}{
		{name: "reused token", req: func(a *agent) schema.EnrollRequest { return a.request(used, "ws-acme", "1001", nameA) },
			want: http.StatusUnauthorized, result: "unauthorized"},
		{name: "expired token", req: func(a *agent) schema.EnrollRequest { return a.request(expired, "ws-beta", "2001", nameB) },
			want: http.StatusUnauthorized, result: "unauthorized"},
		{name: "unknown token", req: func(a *agent) schema.EnrollRequest { return a.request("no-such-token", "ws-beta", "2001", nameB) },
			want: http.StatusUnauthorized, result: "unauthorized"},
		{name: "token of droplet A presented for droplet B", req: func(a *agent) schema.EnrollRequest { return a.request(foreign, "ws-beta", "2001", nameB) },
			want: http.StatusForbidden, result: "forbidden"},
		{name: "token for another droplet name of the workspace", req: func(a *agent) schema.EnrollRequest {
			return a.request(foreign, "ws-acme", "1002", plan.DropletName("ws-acme", 2))
		}, want: http.StatusForbidden, result: "forbidden"},
		{name: "droplet enrolled for another workspace", req: func(a *agent) schema.EnrollRequest {
			return a.request(w.token("ws-beta", nameB), "ws-beta", "1001", nameB)
		}, want: http.StatusForbidden, result: "forbidden"},
		{name: "bad recipient", req: func(a *agent) schema.EnrollRequest {
			r := a.request(foreign, "ws-acme", "1001", nameA)
			r.AgeRecipient = "age1notarecipient"
			return r
		}, want: http.StatusBadRequest, result: "bad_request"},
		{name: "bad signing key", req: func(a *agent) schema.EnrollRequest {
			r := a.request(foreign, "ws-acme", "1001", nameA)
			r.SigningKey = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
			return r
		}, want: http.StatusBadRequest, result: "bad_request"},
		{name: "droplet id not decimal", req: func(a *agent) schema.EnrollRequest { return a.request(foreign, "ws-acme", "0x3e9", nameA) },
			want: http.StatusBadRequest, result: "bad_request"},
		{name: "unknown field", raw: `{"token":"x","workspace":"ws-acme","droplet_id":"1","droplet_name":"n","age_recipient":"a","signing_key":"k","agent_version":"1","extra":1}`,
			want: http.StatusBadRequest, result: "bad_request"},
		{name: "duplicate key", raw: `{"token":"x","token":"y"}`, want: http.StatusBadRequest, result: "bad_request"},
		{name: "trailing data", raw: `{} {}`, want: http.StatusBadRequest, result: "bad_request"},
		{name: "too large", raw: `{"token":"` + strings.Repeat("x", maxEnrollBody) + `"}`, want: http.StatusRequestEntityTooLarge, result: "bad_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			agentsBefore := w.count(`SELECT count(*) FROM agents`)
			usedBefore := w.count(`SELECT count(*) FROM enrollment_tokens WHERE used_at IS NOT NULL`)
			before := testutilCount(t, w.svc.m.enrollments.WithLabelValues(tc.result))
			body := []byte(tc.raw)
			if tc.req != nil {
				body, _ = json.Marshal(tc.req(newAgent(t)))
			}
			code, _, resp := w.do("POST", "/v1/enroll", "", nil, body)
			if code != tc.want {
				t.Fatalf("status = %d (%s), want %d", code, resp, tc.want)
			}
			if got := w.count(`SELECT count(*) FROM agents`); got != agentsBefore {
				t.Errorf("agents: %d rows after a refused enrollment, want %d", got, agentsBefore)
			}
			if got := w.count(`SELECT count(*) FROM enrollment_tokens WHERE used_at IS NOT NULL`); got != usedBefore {
				t.Errorf("used tokens: %d after a refused enrollment, want %d", got, usedBefore)
			}
			if got := testutilCount(t, w.svc.m.enrollments.WithLabelValues(tc.result)); got != before+1 {
				t.Errorf("genesis_enrollments_total{result=%q} = %v, want %v", tc.result, got, before+1)
			}
		})
	}
	// The foreign attempt did not consume the token: droplet A can still
	// use it (a replacement droplet of the same name, enrolling again).
	a := newAgent(t)
	if code := w.enroll(a, a.request(foreign, "ws-acme", "1001", nameA)); code != http.StatusOK {
		t.Errorf("token after a foreign attempt: %d, want 200", code)
	}
	// Tokens are stored only as hashes.
	var n int
	if err := w.st.Pool().QueryRow(t.Context(), `SELECT count(*) FROM enrollment_tokens t WHERE strpos(t::text, $1) > 0 OR strpos(t::text, $2) > 0`,
		foreign, used).Scan(&n); err != nil || n != 0 {
		t.Errorf("a token appears in enrollment_tokens in plaintext (%d rows, %v)", n, err)
	}
}

// TestEnrollConcurrent: one token used at once by 8 requests for its
// droplet, half repeating one agent's request (retries racing), half with
// other keys (an attacker who read the token). Exactly one key set wins:
// all its requests get the same credential, every other request 401, one
// agents row.
func TestEnrollConcurrent(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.provision("ws-acme", 1, 1001, "203.0.113.7")
	name := plan.DropletName("ws-acme", 1)
	tok := w.token("ws-acme", name)
	const n = 8
	same := newAgent(t)
	type answer struct {
		code int
		keys string
		cred string
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		a := same
		if i%2 == 1 {
			a = newAgent(t)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, _ := json.Marshal(a.request(tok, "ws-acme", "1001", name))
			<-start
			code, _, b := w.do("POST", "/v1/enroll", "", nil, body)
			var resp schema.EnrollResponse
			json.Unmarshal(b, &resp)
			answers[i] = answer{code, a.id.Recipient().String(), resp.Credential}
		}()
	}
	close(start)
	wg.Wait()
	winners := map[string]string{} // keys -> credential
	for _, a := range answers {
		switch a.code {
		case http.StatusOK:
			if c, ok := winners[a.keys]; ok && c != a.cred {
				t.Errorf("one key set got two credentials")
			}
			winners[a.keys] = a.cred
		case http.StatusUnauthorized:
		default:
			t.Errorf("unexpected status %d", a.code)
		}
	}
	if len(winners) != 1 {
		t.Errorf("%d key sets enrolled with one token (%v), want exactly 1", len(winners), answers)
	}
	if got := w.count(`SELECT count(*) FROM agents`); got != 1 {
		t.Errorf("agents = %d, want 1", got)
	}
}

func TestEnrollDisabled(t *testing.T) {
	w := newWorld(t, func(c *Config) { c.Signer = nil })
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.provision("ws-acme", 1, 1001, "203.0.113.7")
	name := plan.DropletName("ws-acme", 1)
	tok := w.token("ws-acme", name)
	a := newAgent(t)
	if code := w.enroll(a, a.request(tok, "ws-acme", "1001", name)); code != http.StatusServiceUnavailable {
		t.Errorf("enroll without a signing key: %d, want 503", code)
	}
	if !strings.Contains(w.logs.String(), "enrollment refused: agent protocol disabled") {
		t.Error("no log line for the refused enrollment")
	}
	if _, err := w.svc.UserData(t.Context(), plan.Action{Kind: plan.Create, Workspace: "ws-acme", Droplet: name}); err == nil {
		t.Error("UserData without a signing key succeeded")
	}
}

// TestUserDataEnrolls follows a droplet from its user data to its first
// manifest, in the executor's order: journal the create, render the user
// data (a new token), create (the store records the id and binds the
// token), finish. An agent faster than the record is told "not yet" and
// enrolls after it.
func TestUserDataEnrolls(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	ctx := t.Context()
	create := plan.Action{Kind: plan.Create, Workspace: "ws-acme", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Droplet: plan.DropletName("ws-acme", 1), Gen: 1}
	op, err := w.st.Begin(ctx, create, schema.StateRunning, commitA)
	if err != nil {
		t.Fatal(err)
	}
	ud, err := w.svc.UserData(ctx, create)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		WriteFiles []cloudinit.File `yaml:"write_files"`
	}
	if err := yaml.Unmarshal([]byte(ud), &doc); err != nil {
		t.Fatal(err)
	}
	var cfg schema.AgentConfig
	for _, f := range doc.WriteFiles {
		if f.Path == schema.AgentConfigPath {
			if err := schema.DecodeStrict([]byte(f.Content), &cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	if cfg.ReconcilerURL != "http://reconciler.test" || cfg.Workspace != "ws-acme" || cfg.DropletName != "genesis-ws-acme-1" || len(cfg.SigningKeys) != 1 {
		t.Fatalf("agent config = %+v", cfg)
	}
	for _, secret := range []string{w.fleetID.String(), "PRIVATE KEY", secretValue} {
		if strings.Contains(ud, secret) {
			t.Errorf("user data contains %q", secret)
		}
	}
	a := newAgent(t)
	body, _ := json.Marshal(a.request(cfg.Token, cfg.Workspace, "1001", cfg.DropletName))
	code, hdr, resp := w.do("POST", "/v1/enroll", "", nil, body)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("enroll before the create is recorded: %d %s (Retry-After %q), want 503 with Retry-After", code, resp, hdr.Get("Retry-After"))
	}
	if n := w.count(`SELECT count(*) FROM enrollment_tokens WHERE droplet_id IS NOT NULL OR used_at IS NOT NULL`); n != 0 {
		t.Fatalf("%d tokens bound or used after a not-yet answer, want 0 (the caller's claim is never bound)", n)
	}
	if err := w.st.Created(ctx, op, "created", 1001, create.Droplet); err != nil {
		t.Fatal(err)
	}
	if code := w.enroll(a, a.request(cfg.Token, cfg.Workspace, "1001", cfg.DropletName)); code != http.StatusOK {
		t.Fatalf("enroll with the user data's token: %d", code)
	}
	out := store.Outcome{Account: "acct-a", DropletID: 1001, DropletName: create.Droplet, IP: "203.0.113.7", Desired: schema.StateRunning, Commit: commitA}
	if err := w.st.Finish(ctx, op, create, out, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.svc.RenderWorkspace(ctx, "ws-acme"); err != nil {
		t.Fatal(err)
	}
	m, _ := w.manifest(a)
	if m.Droplet != "1001" || m.Domains[len(m.Domains)-1] != "203.0.113.7.sslip.io" {
		t.Errorf("manifest: droplet %s domains %v, want 1001 with its address", m.Droplet, m.Domains)
	}
	var state string
	w.st.Pool().QueryRow(context.Background(), `SELECT state FROM fleet_status WHERE workspace = 'ws-acme'`).Scan(&state)
	if state != "HANDSHAKE" {
		t.Errorf("state after enrollment = %s, want HANDSHAKE", state)
	}
	// A resize names the new generation's droplet.
	ud, err = w.svc.UserData(t.Context(), plan.Action{Kind: plan.Resize, Workspace: "ws-acme", Droplet: plan.DropletName("ws-acme", 1), Gen: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ud, `"droplet_name": "genesis-ws-acme-2"`) {
		t.Error("resize user data does not name generation 2's droplet")
	}
}

// TestReenrollAfterWake: a droplet woken from a snapshot keeps the agent's
// keys, has a new droplet id and a new token; it gets a new agents row and
// its versions continue above the old droplet's.
func TestReenrollAfterWake(t *testing.T) {
	w := newWorld(t)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	w.setTenant("ws-acme", "blob2", tenantSpec{greeting: "Hi"})
	if err := w.svc.RenderWorkspace(t.Context(), "ws-acme"); err != nil {
		t.Fatal(err)
	}
	if m, _ := w.manifest(a); m.Version != 2 {
		t.Fatalf("version = %d, want 2", m.Version)
	}
	// Wake: new droplet, same agent keys.
	w.provision("ws-acme", 2, 1002, "203.0.113.9")
	old := a.cred
	name := plan.DropletName("ws-acme", 2)
	if code := w.enroll(a, a.request(w.token("ws-acme", name), "ws-acme", "1002", name)); code != http.StatusOK {
		t.Fatalf("re-enroll: %d", code)
	}
	if got := w.count(`SELECT count(*) FROM agents WHERE workspace = 'ws-acme'`); got != 2 {
		t.Errorf("agents rows = %d, want 2", got)
	}
	m, _ := w.manifest(a)
	if m.Droplet != "1002" || m.Version != 3 {
		t.Errorf("after wake: droplet %s version %d, want 1002 and 3", m.Droplet, m.Version)
	}
	if len(m.Domains) == 0 || m.Domains[len(m.Domains)-1] != "203.0.113.9.sslip.io" {
		t.Errorf("domains = %v, want the new address", m.Domains)
	}
	// The old droplet was replaced: its credential (on the snapshot's
	// disk) is revoked.
	poll.Until(t, "old credential refused", func() bool {
		code, _, _ := w.do("GET", "/v1/manifest", old, nil, nil)
		return code == http.StatusUnauthorized
	})
}
