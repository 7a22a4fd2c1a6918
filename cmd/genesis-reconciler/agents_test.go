package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"gopkg.in/yaml.v3"

	cloudinit "genesis.dev/fleet/deploy/cloud-init"
	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/schema/sealing"
)

// TestAgentProtocol runs the real binary with keys: a tenant's droplet gets
// user data with a one-time token; an agent (this test) enrolls with it,
// pulls and verifies its manifest, opens its credential, long-polls while a
// commit changes the tenant, and heartbeats its way to ACTIVE_HEALTHY.
func TestAgentProtocol(t *testing.T) {
	work := t.TempDir()
	keys := t.TempDir()
	fleetID, _ := age.GenerateX25519Identity()
	os.WriteFile(filepath.Join(keys, "age.key"), []byte("# fleet identity\n"+fleetID.String()+"\n"), 0o600)
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	os.WriteFile(filepath.Join(keys, "signing.pem"), dsse.MarshalPrivateKeyPEM(priv), 0o600)
	trusted := dsse.Trusted{}
	trusted.Add(priv.Public().(ed25519.PublicKey))
	// A key announced for rotation (the next signing key).
	nextPub, _, _ := ed25519.GenerateKey(rand.Reader)
	nextPEM := string(dsse.MarshalPublicKeyPEM(nextPub))
	os.WriteFile(filepath.Join(keys, "next.pub"), []byte(nextPEM), 0o644)

	repo := testkit.NewStateRepo(t)
	w := &world{t: t, state: repo, repo: repo.Dir, db: pgtest.New(t)}
	f := testFleet()
	f.Spec.Recipients = []string{fleetID.Recipient().String()}
	fleet := testkit.FleetYAML(f)
	os.WriteFile(filepath.Join(w.repo, "genesis.yaml"), []byte(fleet), 0o644)
	os.MkdirAll(filepath.Join(w.repo, "tenants"), 0o755)
	sealed := testkit.Seal(t, fleetID.Recipient(), `{"apiKey":"SECRET-e2e-0042"}`)
	tenant := func(domain string) string {
		tn := testkit.Tenant("ws-acme", "nyc3")
		tn.Spec.Domains = []string{domain}
		tn.Spec.Credentials = []schema.Credential{{Name: "api", Type: "httpHeaderAuth", Sealed: sealed}}
		return testkit.TenantYAML(tn)
	}
	os.WriteFile(filepath.Join(w.repo, "tenants", "ws-acme.yaml"), []byte(tenant("a.acme.com")), 0o644)
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "fleet")
	w.sim = dosimtest.Start(t, dosim.Config{WorkDir: work,
		Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 100}, {Name: "acct-b", Token: "tok-b", DropletLimit: 100}}})
	p := w.start("--signing-key", filepath.Join(keys, "signing.pem"), "--age-identity", filepath.Join(keys, "age.key"), "--public-url", "https://fleet.example.com/",
		"--announce-signing-key", filepath.Join(keys, "next.pub"))

	// The droplet's user data carries the agent config.
	var userData []byte
	var dropletID string
	testkit.WaitFor(t, "the droplet's user data", func() bool {
		files, _ := filepath.Glob(filepath.Join(work, "userdata", "*"))
		if len(files) == 0 {
			return false
		}
		userData, _ = os.ReadFile(files[0])
		dropletID = filepath.Base(files[0])
		return len(userData) > 0
	})
	var doc struct {
		WriteFiles []cloudinit.File `yaml:"write_files"`
	}
	if err := yaml.Unmarshal(userData, &doc); err != nil {
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
	if cfg.ReconcilerURL != "https://fleet.example.com" || cfg.Workspace != "ws-acme" || cfg.DropletName != "genesis-ws-acme-1" || cfg.Token == "" ||
		len(cfg.SigningKeys) != 2 || cfg.SigningKeys[1] != nextPEM {
		t.Fatalf("agent config = %+v", cfg)
	}
	if bytes.Contains(userData, []byte("AGE-SECRET-KEY")) || bytes.Contains(userData, []byte("PRIVATE KEY")) || bytes.Contains(userData, []byte("tok-a")) {
		t.Fatal("user data holds a secret besides the token")
	}
	testkit.WaitFor(t, "the droplet to be recorded", func() bool { return allInitialized(t, p.url, 1) })

	// Enroll.
	agentID, _ := age.GenerateX25519Identity()
	agentPub, _, _ := ed25519.GenerateKey(rand.Reader)
	body, _ := json.Marshal(schema.EnrollRequest{Token: cfg.Token, Workspace: cfg.Workspace, DropletID: dropletID, DropletName: cfg.DropletName,
		AgeRecipient: agentID.Recipient().String(), SigningKey: string(dsse.MarshalPublicKeyPEM(agentPub)), AgentVersion: "test"})
	resp, err := http.Post(p.url+"/v1/enroll", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var er schema.EnrollResponse
	json.NewDecoder(resp.Body).Decode(&er)
	resp.Body.Close()
	if resp.StatusCode != 200 || er.Credential == "" {
		t.Fatalf("enroll: %d", resp.StatusCode)
	}
	get := func(etag, wait string) (int, string, schema.Manifest) {
		req, _ := http.NewRequest("GET", p.url+"/v1/manifest?wait="+wait, nil)
		req.Header.Set("Authorization", "Bearer "+er.Credential)
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		env, _ := io.ReadAll(resp.Body)
		var m schema.Manifest
		if resp.StatusCode == 200 {
			payload, _, err := dsse.Verify(env, schema.ManifestPayloadType, trusted)
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			if err := schema.DecodeStrict(payload, &m); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, resp.Header.Get("ETag"), m
	}
	// The first manifest is rendered just after the enrollment's answer.
	var (
		code int
		etag string
		m    schema.Manifest
	)
	testkit.WaitForFast(t, "the first manifest", func() bool { code, etag, m = get("", ""); return code != 404 })
	if code != 200 || m.Workspace != "ws-acme" || m.Droplet != dropletID || m.Version != 1 || len(m.Credentials) != 1 ||
		len(m.SigningKeys) != 1 || m.SigningKeys[0] != nextPEM {
		t.Fatalf("manifest: %d %+v", code, m)
	}
	data, err := sealing.Open(agentID, m.Credentials[0], "ws-acme", dropletID)
	if err != nil || !strings.Contains(string(data), "SECRET-e2e-0042") {
		t.Fatalf("open credential: %v", err)
	}

	// A commit reaches the waiting agent.
	done := make(chan schema.Manifest, 1)
	go func() {
		code, _, m := get(etag, "60s")
		if code != 200 {
			t.Errorf("long-poll: %d", code)
		}
		done <- m
	}()
	time.Sleep(100 * time.Millisecond)
	os.WriteFile(filepath.Join(w.repo, "tenants", "ws-acme.yaml"), []byte(tenant("b.acme.com")), 0o644)
	w.state.Git("add", "-A")
	w.state.Git("commit", "-q", "-m", "new domain")
	select {
	case m = <-done:
		if m.Version != 2 || m.Domains[0] != "b.acme.com" {
			t.Fatalf("after the commit: version %d domains %v", m.Version, m.Domains)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the long-poll did not see the commit")
	}

	// Heartbeats move the droplet to ACTIVE_HEALTHY.
	hb, _ := json.Marshal(schema.Heartbeat{Workspace: "ws-acme", Droplet: dropletID, Seq: 1, SentAt: time.Now(), AppliedVersion: 2,
		Components: map[string]schema.ComponentHealth{"n8n": {OK: true}}, AgentVersion: "test"})
	req, _ := http.NewRequest("POST", p.url+"/v1/heartbeat", bytes.NewReader(hb))
	req.Header.Set("Authorization", "Bearer "+er.Credential)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("heartbeat: %v %v", resp.StatusCode, err)
	}
	resp.Body.Close()
	testkit.WaitFor(t, "ACTIVE_HEALTHY", func() bool {
		doc, err := getFleet(t, p.url)
		return err == nil && len(doc.Tenants) == 1 && doc.Tenants[0].Lifecycle == "ACTIVE_HEALTHY"
	})
	resp, _ = http.Get(p.url + "/metrics")
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, name := range []string{"genesis_manifests_served_total", "genesis_enrollments_total", "genesis_heartbeats_total", "genesis_manifests_issued_total", "genesis_manifest_longpolls_waiting"} {
		if !bytes.Contains(metrics, []byte(name)) {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	// A clean stop ends a waiting long-poll (304) instead of waiting out
	// its minute; then the logs.
	_, etag, _ = get("", "")
	polled := make(chan int, 1)
	go func() {
		code, _, _ := get(etag, "60s")
		polled <- code
	}()
	time.Sleep(200 * time.Millisecond)
	stopped := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Errorf("reconciler exit: %v", err)
	}
	if code := <-polled; code != http.StatusNotModified {
		t.Errorf("long-poll at shutdown: %d, want 304", code)
	}
	if d := time.Since(stopped); d > 30*time.Second {
		t.Errorf("shutdown took %s with a long-poll waiting", d)
	}
	if strings.Contains(p.logs.String(), "SECRET-e2e-0042") || strings.Contains(p.logs.String(), er.Credential) || strings.Contains(p.logs.String(), cfg.Token) {
		t.Error("a secret is in the reconciler's logs")
	}
}
