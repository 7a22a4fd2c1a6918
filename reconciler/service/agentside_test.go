package service

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
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
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(parkServerEnv); mode != "" {
		os.Exit(parkServer(mode)) // BenchmarkParkedConnMemory's server process
	}
	pgtest.Main(m)
}

const welcomeJSON = `{"name":"Welcome","nodes":[{"name":"Gmail","type":"n8n-nodes-base.gmail","parameters":{"subject":"{{param.greeting}}"},"credentials":{"gmailOAuth2":{"id":"TEMPLATE_GMAIL_UUID","name":"gmail"}}}],"connections":{}}`

// TestAgentSideOnly: a replica with AgentSideOnly, no DigitalOcean token in
// its environment and a DigitalOcean API that fails the test if called,
// serves the agent protocol end to end (enrollment, first manifest,
// heartbeat, a pushed commit's manifest on a waiting long-poll), /metrics
// and the signed push webhook, and records genesis.yaml's accounts.
func TestAgentSideOnly(t *testing.T) {
	dir := t.TempDir()
	fleetID, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	idFile, keyFile := filepath.Join(dir, "fleet.agekey"), filepath.Join(dir, "signing.pem")
	os.WriteFile(idFile, []byte(fleetID.String()+"\n"), 0o600)
	os.WriteFile(keyFile, dsse.MarshalPrivateKeyPEM(key), 0o600)

	repo := testkit.NewStateRepo(t)
	fleet := testkit.Fleet()
	fleet.Spec.Recipients = []string{fleetID.Recipient().String()}
	repo.WriteFleet(fleet)
	repo.Write("templates/workflows/welcome.json", welcomeJSON)
	writeTenant := func(greeting string) {
		tn := testkit.Tenant("acme", "nyc3")
		tn.Spec.Credentials = []schema.Credential{{Name: "gmail", Type: "gmailOAuth2",
			Sealed: testkit.Seal(t, fleetID.Recipient(), `{"clientId":"id","clientSecret":"secret"}`)}}
		tn.Spec.Workflows = []schema.Workflow{{Template: "welcome", Credentials: map[string]string{"TEMPLATE_GMAIL_UUID": "gmail"},
			Params: map[string]string{"greeting": greeting}}}
		repo.WriteTenant(tn)
	}
	writeTenant("Hello")
	repo.Commit("acme")
	repo.Push()

	var doCalls atomic.Int64
	do := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doCalls.Add(1)
		http.Error(w, "no DigitalOcean here", http.StatusTeapot)
	}))
	defer do.Close()

	const secret = "push-secret"
	dbURL := pgtest.New(t)
	logs := &syncio.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := New(t.Context(), Config{
		AgentSideOnly: true,
		// A URL, not the work tree: only the webhook (or an hour's poll)
		// makes it fetch.
		StateRepo: repo.URL(), Branch: tenants.DefaultBranch, CacheDir: filepath.Join(dir, "cache"),
		DatabaseURL: dbURL, DOAPIURL: do.URL + "/", Listen: "127.0.0.1:0",
		AgeIdentity: idFile, SigningKey: keyFile, WebhookSecret: secret, AgentInsecureHTTP: true,
		PollInterval: time.Hour, Resync: 10 * time.Millisecond, WatchdogEvery: 10 * time.Millisecond,
		InsecureNoAuth: true, APIRate: 20,
		HTTP:       ServerTimeouts{ReadHeader: DefaultReadHeaderTimeout, Read: DefaultReadTimeout, Write: DefaultWriteTimeout, Idle: DefaultIdleTimeout},
		UnauthRate: auth.DefaultFailureRate, UnauthBurst: auth.DefaultFailureBurst,
		ReplicaID: "agent-side", ObservedMaxAge: time.Minute,
		Getenv: func(string) string { return "" }, // no token for acct-a's TOKEN_A
	}, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, svc, logs)
	get := func(path string) (int, string) {
		resp, err := http.Get(svc.URL() + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	testkit.WaitFor(t, "/readyz", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })

	// The accounts are recorded before the snapshot is: a droplet can be
	// journaled under acct-a, as the loop's create would.
	st, err := store.Open(t.Context(), dbURL, log)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	act := plan.Action{Kind: plan.Create, Workspace: "acme", Account: "acct-a", Region: "nyc3", Size: "s-1vcpu-1gb", Droplet: plan.DropletName("acme", 1), Gen: 1}
	opID, err := st.Begin(t.Context(), act, schema.StateRunning, "")
	if err != nil {
		t.Fatal(err)
	}
	token, err := agentapi.New(agentapi.Config{Store: st, Logger: log}).MintToken(t.Context(), act.Workspace, act.Droplet)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Finish(t.Context(), opID, act, store.Outcome{Account: "acct-a", DropletID: 4242, DropletName: act.Droplet, IP: "100.64.0.1",
		Desired: schema.StateRunning}, nil); err != nil {
		t.Fatal(err)
	}

	cl := &fleetagent.Client{BaseURL: svc.URL()}
	agentID, _ := age.GenerateX25519Identity()
	agentPub, _, _ := ed25519.GenerateKey(rand.Reader)
	enrolled, err := cl.Enroll(t.Context(), schema.EnrollRequest{Token: token, Workspace: "acme", DropletID: "4242", DropletName: act.Droplet,
		AgeRecipient: agentID.Recipient().String(), SigningKey: string(dsse.MarshalPublicKeyPEM(agentPub)), AgentVersion: "test"})
	if err != nil {
		t.Fatalf("enroll: %v", err)
	}
	var first fleetagent.ManifestResponse
	testkit.WaitFor(t, "the first manifest", func() bool {
		first, err = cl.Manifest(t.Context(), enrolled.Credential, "", 0)
		return err == nil && len(first.Envelope) > 0
	})
	if _, err := cl.Heartbeat(t.Context(), enrolled.Credential, schema.Heartbeat{Workspace: "acme", Droplet: "4242", Seq: 1, SentAt: time.Now(),
		AgentVersion: "test"}); err != nil {
		t.Fatalf("heartbeat: %v", err)
	}

	// A pushed commit, announced by the signed webhook, reaches the
	// waiting long-poll: the sweep runs without a leading loop.
	writeTenant("Bonjour")
	repo.Commit("acme: bonjour")
	repo.Push()
	got := make(chan fleetagent.ManifestResponse, 1)
	go func() {
		mr, err := cl.Manifest(t.Context(), enrolled.Credential, first.ETag, 50*time.Second)
		if err != nil {
			t.Errorf("long-poll: %v", err)
		}
		got <- mr
	}()
	testkit.WaitFor(t, "the long-poll parked", func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, "genesis_manifest_longpolls_waiting 1")
	})
	body := []byte(`{"ref":"refs/heads/main"}`)
	for _, tc := range []struct {
		name, sig string
		want      int
	}{
		{"unsigned", "", http.StatusUnauthorized},
		{"signed", tenants.Sign([]byte(secret), body), http.StatusAccepted},
	} {
		req, _ := http.NewRequest(http.MethodPost, svc.URL()+"/hooks/git", bytes.NewReader(body))
		if tc.sig != "" {
			req.Header.Set(tenants.SignatureHeader, tc.sig)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s webhook: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	if mr := <-got; mr.NotModified || len(mr.Envelope) == 0 || mr.ETag == first.ETag {
		t.Errorf("long-poll after the push: %+v, want a new manifest", mr)
	}

	// The issued counter moves after the manifest is stored and announced,
	// so the long-poll can answer before it: wait for the counts.
	for _, want := range []string{`genesis_enrollments_total{result="ok"} 1`, `genesis_heartbeats_total{result="queued"} 1`, "genesis_manifests_issued_total 2"} {
		testkit.WaitFor(t, "/metrics to show "+want, func() bool {
			code, metrics := get("/metrics")
			return code == http.StatusOK && strings.Contains(metrics, want)
		})
	}
	if n := doCalls.Load(); n != 0 {
		t.Errorf("%d calls to the DigitalOcean API, want none", n)
	}
}

// runUntilCleanup runs svc until the test ends, then stops and closes it;
// its logs are printed when the test failed.
func runUntilCleanup(t *testing.T, svc *Service, logs *syncio.Buffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		svc.Close()
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
}
