package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/schema"
)

// harness runs real Agents against a fakeReconciler on 127.0.0.1.
type harness struct {
	t    *testing.T
	fake *fakeReconciler
	dir  string
	fx   *fixture
}

func newHarness(t *testing.T) *harness {
	fake := newFakeReconciler(t)
	dir := filepath.Join(t.TempDir(), "state")
	st := openState(t, dir)
	fx := &fixture{t: t, signer: newSigner(t), recipient: st.Keys().Identity.Recipient(), workspace: "ws-acme", droplet: "4242", now: time.Now()}
	st.Close()
	return &harness{t: t, fake: fake, dir: dir, fx: fx}
}

// recorder is an Applier that remembers what it was given.
type recorder struct {
	mu       sync.Mutex
	versions []int64
	creds    []map[string]string
	broken   bool // fail every call while set
}

func (r *recorder) setBroken(b bool) {
	r.mu.Lock()
	r.broken = b
	r.mu.Unlock()
}

func (r *recorder) Apply(_ context.Context, m *schema.Manifest, creds map[string]json.RawMessage) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken {
		return errApply
	}
	r.versions = append(r.versions, m.Version)
	c := map[string]string{}
	for k, v := range creds {
		c[k] = string(v)
	}
	r.creds = append(r.creds, c)
	return nil
}

func (r *recorder) applied() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]int64(nil), r.versions...)
}

type running struct {
	agent  *Agent
	cancel context.CancelFunc
	done   chan error
	st     *State
	once   sync.Once
	err    error
}

// stop ends the agent (once) and returns what Run returned.
func (r *running) stop() error {
	r.once.Do(func() {
		r.cancel()
		r.err = <-r.done
		r.st.Close()
	})
	return r.err
}

func (h *harness) start(droplet, token string, applier Applier, mod func(*Config)) *running {
	h.t.Helper()
	st, err := OpenState(h.dir)
	if err != nil {
		h.t.Fatal(err)
	}
	cfg := Config{
		Bootstrap: schema.AgentConfig{
			ReconcilerURL: h.fake.URL(),
			SigningKeys:   []string{pubPEM(h.fx.signer)},
			Workspace:     h.fx.workspace,
			DropletName:   "genesis-ws-acme",
			Token:         token,
		},
		DropletID:         droplet,
		State:             st,
		Logger:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		Applier:           applier,
		HeartbeatInterval: 300 * time.Millisecond,
		PollWait:          2 * time.Second,
		RetryMin:          10 * time.Millisecond,
		RetryMax:          100 * time.Millisecond,
		Version:           "test",
	}
	if mod != nil {
		mod(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		st.Close()
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{agent: a, cancel: cancel, done: make(chan error, 1), st: st}
	go func() { r.done <- a.Run(ctx) }()
	h.t.Cleanup(func() { r.stop() })
	return r
}

func TestAgentEnrollsPullsAndHeartbeats(t *testing.T) {
	h := newHarness(t)
	fx := h.fx
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	r := h.start(fx.droplet, h.fake.token(fx.workspace, "genesis-ws-acme"), rec, func(c *Config) {
		c.Registerer = reg
		c.PollWait = 6 * time.Second
	})

	// No manifest yet (404): heartbeats still flow, with nothing applied.
	hb := h.fake.waitBeat(t, "a first heartbeat", func(hb schema.Heartbeat) bool { return true })
	if hb.AppliedVersion != 0 || hb.Workspace != fx.workspace || hb.Droplet != fx.droplet || hb.AgentVersion != "test" {
		t.Errorf("first heartbeat %+v", hb)
	}
	for _, c := range []string{"n8n", "caddy", "postgres"} {
		if got, ok := hb.Components[c]; ok {
			t.Errorf("component %s without a probe reported as %+v, want it left out", c, got)
		}
	}
	if hb.MemoryTotal == 0 || hb.MemoryUsed > hb.MemoryTotal || hb.DiskTotal == 0 || hb.UptimeSeconds <= 0 {
		t.Errorf("memory %d/%d disk %d/%d uptime %v", hb.MemoryUsed, hb.MemoryTotal, hb.DiskUsed, hb.DiskTotal, hb.UptimeSeconds)
	}
	enr := h.fake.enrollments()
	keys, _ := ReadKeys(h.dir)
	if len(enr) != 1 || enr[0].AgeRecipient != keys.Recipient() || enr[0].SigningKey != keys.PublicKeyPEM() || enr[0].DropletID != fx.droplet {
		t.Fatalf("enrollments %+v", enr)
	}
	fi, err := os.Stat(filepath.Join(h.dir, credentialFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credential file: %v, %v", fi, err)
	}

	// v1, then v2 while the agent holds a long-poll: applied at once.
	v1 := fx.sign(fx.manifest(1), nil)
	h.fake.publish(fx.droplet, v1)
	hb = h.fake.waitBeat(t, "applied version 1", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 1 })
	if hb.AppliedDigest != sha(v1) {
		t.Errorf("applied digest %s, want %s", hb.AppliedDigest, sha(v1))
	}
	time.Sleep(50 * time.Millisecond) // let the agent start its next long-poll
	published := time.Now()
	h.fake.publish(fx.droplet, fx.sign(fx.manifest(2), nil))
	h.fake.waitBeat(t, "applied version 2", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 2 })
	if el := time.Since(published); el > 4*time.Second {
		t.Errorf("v2 took %v to apply: the long-poll did not return on publish", el)
	}
	if got := rec.applied(); len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Errorf("applier saw versions %v", got)
	}
	if got := rec.creds[1]["gmail"]; got != `{"secret":"s3cret-gmail"}` {
		t.Errorf("applier got gmail credential %q", got)
	}

	// Hostile manifests are refused; the reason goes out with the next
	// heartbeat and v2 stays applied.
	other := newSigner(t)
	for _, tc := range []struct {
		reason Reason
		env    []byte
	}{
		{ReasonRollback, fx.sign(fx.manifest(1), nil)},
		{ReasonUnknownKey, fx.sign(fx.manifest(3), other)},
		{ReasonTooLarge, append(fx.sign(fx.manifest(3), nil), make([]byte, schema.MaxEnvelopeSize)...)},
	} {
		h.fake.publish(fx.droplet, tc.env)
		hb := h.fake.waitBeat(t, "verify error "+string(tc.reason), func(hb schema.Heartbeat) bool {
			return strings.Contains(hb.VerifyError, ": "+string(tc.reason)+": ")
		})
		if hb.AppliedVersion != 2 {
			t.Errorf("%s: applied version %d after a rejection", tc.reason, hb.AppliedVersion)
		}
		if got := counterValue(t, reg, "genesis_agent_manifest_rejections_total", string(tc.reason)); got < 1 {
			t.Errorf("rejections{reason=%s} = %v", tc.reason, got)
		}
	}
	if n := h.fake.count("GET /v1/manifest 200"); n > 20 {
		t.Errorf("%d manifest downloads: a rejected manifest is fetched again and again", n)
	}
	h.fake.publish(fx.droplet, fx.sign(fx.manifest(3), nil))
	hb = h.fake.waitBeat(t, "applied version 3", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 3 })
	if hb.VerifyError != "" {
		t.Errorf("verify error %q kept after a good manifest", hb.VerifyError)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	checkSeqs(t, h.fake.beats())

	// Restart: no second enrollment, the recorded manifest is applied
	// again, sequence numbers go on, and If-None-Match names v3.
	before := len(h.fake.beats())
	rec2 := &recorder{}
	r = h.start(fx.droplet, "", rec2, nil)
	h.fake.waitBeat(t, "a heartbeat after restart", func(hb schema.Heartbeat) bool { return hb.Seq > int64(before) && hb.AppliedVersion == 3 })
	if len(h.fake.enrollments()) != 1 {
		t.Errorf("enrolled again after a restart")
	}
	// The heartbeat reports the recorded version at once; the re-apply may
	// land a moment later.
	deadline := time.Now().Add(10 * time.Second)
	for len(rec2.applied()) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := rec2.applied(); len(got) != 1 || got[0] != 3 {
		t.Errorf("after restart the applier saw %v, want the recorded v3", got)
	}
	r.stop()
	checkSeqs(t, h.fake.beats())
}

// counterValue reads one labelled counter from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func checkSeqs(t *testing.T, hbs []schema.Heartbeat) {
	t.Helper()
	for i := 1; i < len(hbs); i++ {
		if hbs[i].Seq <= hbs[i-1].Seq {
			t.Fatalf("heartbeat seq %d after %d", hbs[i].Seq, hbs[i-1].Seq)
		}
	}
}

func TestAgentWokenOnANewDroplet(t *testing.T) {
	h := newHarness(t)
	fx := h.fx
	r := h.start(fx.droplet, h.fake.token(fx.workspace, "genesis-ws-acme"), nil, nil)
	h.fake.publish(fx.droplet, fx.sign(fx.manifest(9), nil))
	h.fake.waitBeat(t, "v9 on the first droplet", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 9 })
	r.stop()

	// The snapshot's disk boots as droplet 5151 with a new token: the same
	// keys enroll again, and the new droplet's versions start anew.
	woken := *fx
	woken.droplet = "5151"
	r = h.start(woken.droplet, h.fake.token(fx.workspace, "genesis-ws-acme"), nil, nil)
	h.fake.publish(woken.droplet, woken.sign(woken.manifest(1), nil))
	h.fake.waitBeat(t, "v1 on the woken droplet", func(hb schema.Heartbeat) bool { return hb.Droplet == "5151" && hb.AppliedVersion == 1 })
	enr := h.fake.enrollments()
	if len(enr) != 2 || enr[1].DropletID != "5151" || enr[0].AgeRecipient != enr[1].AgeRecipient || enr[0].SigningKey != enr[1].SigningKey {
		t.Errorf("enrollments %+v", enr)
	}
	r.stop()
}

// TestAgentEnrollRefused: a refused enrollment (a used or foreign token) is
// logged as an error without the token and retried slowly, never given up:
// the agent does not exit (systemd would restart it every few seconds) and
// stores no credential.
func TestAgentEnrollRefused(t *testing.T) {
	h := newHarness(t)
	tok := h.fake.token(h.fx.workspace, "genesis-ws-acme")
	r := h.start(h.fx.droplet, tok, nil, nil)
	h.fake.waitBeat(t, "a heartbeat", func(schema.Heartbeat) bool { return true })
	r.stop()
	// A fresh disk with the used token; then a token for another droplet.
	for _, tc := range []struct{ name, token, want string }{
		{"used", tok, "401"},
		{"foreign", h.fake.token(h.fx.workspace, "genesis-ws-other"), "403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.dir = filepath.Join(t.TempDir(), "state")
			logs := &syncio.Buffer{}
			key := "POST /v1/enroll " + tc.want
			before := h.fake.count(key)
			r := h.start("777", tc.token, nil, func(c *Config) {
				c.RefusedRetry = 20 * time.Millisecond
				c.Logger = slog.New(slog.NewTextHandler(logs, nil))
			})
			deadline := time.Now().Add(10 * time.Second)
			for h.fake.count(key) < before+3 {
				if time.Now().After(deadline) {
					t.Fatalf("%d refused enrollments, want the agent to keep trying", h.fake.count(key)-before)
				}
				select {
				case err := <-r.done:
					r.done <- err
					t.Fatalf("Run returned %v after a refused enrollment, want it to keep trying", err)
				case <-time.After(10 * time.Millisecond):
				}
			}
			r.stop()
			if !strings.Contains(logs.String(), "enrollment refused; retrying slowly") || !strings.Contains(logs.String(), tc.want) {
				t.Errorf("no clear log line for the refusal:\n%s", logs)
			}
			if strings.Contains(logs.String(), tc.token) {
				t.Error("the token is in the log")
			}
			if _, ok, _ := openState(t, h.dir).Credential("777"); ok {
				t.Error("a credential was stored")
			}
		})
	}
}

// TestAgentEnrollNotYet: the reconciler answers 503 "not yet" (Retry-After)
// while it has not recorded the droplet; the agent retries and enrolls.
func TestAgentEnrollNotYet(t *testing.T) {
	h := newHarness(t)
	h.fake.setNotYet(3)
	r := h.start(h.fx.droplet, h.fake.token(h.fx.workspace, "genesis-ws-acme"), nil, nil)
	h.fake.waitBeat(t, "a heartbeat after enrolling", func(schema.Heartbeat) bool { return true })
	r.stop()
	if got := h.fake.count("POST /v1/enroll 503"); got != 3 {
		t.Errorf("not-yet answers = %d, want 3", got)
	}
	if got := len(h.fake.enrollments()); got != 1 {
		t.Errorf("enrollments = %d, want 1", got)
	}
}

func TestAgentRetriesApply(t *testing.T) {
	h := newHarness(t)
	fx := h.fx
	rec := &recorder{broken: true}
	r := h.start(fx.droplet, h.fake.token(fx.workspace, "genesis-ws-acme"), rec, nil)
	h.fake.publish(fx.droplet, fx.sign(fx.manifest(1), nil))
	hb := h.fake.waitBeat(t, "an apply error", func(hb schema.Heartbeat) bool { return hb.ApplyError != "" })
	if hb.AppliedVersion != 0 || !strings.Contains(hb.ApplyError, errApply.Error()) {
		t.Errorf("heartbeat during apply failures: %+v", hb)
	}
	rec.setBroken(false)
	hb = h.fake.waitBeat(t, "applied version 1", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 1 })
	if hb.ApplyError != "" {
		t.Errorf("apply error %q kept after success", hb.ApplyError)
	}
	r.stop()
}

func TestAgentReportsProbesAndClockOffset(t *testing.T) {
	h := newHarness(t)
	fx := h.fx
	h.fake.setDateOffset(time.Hour)
	activity := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	r := h.start(fx.droplet, h.fake.token(fx.workspace, "genesis-ws-acme"), nil, func(c *Config) {
		c.Probes = map[string]Probe{"n8n": func(context.Context) schema.ComponentHealth { return schema.ComponentHealth{OK: true, Detail: "200"} }}
		c.LastActivity = func(context.Context) (time.Time, error) { return activity, nil }
		c.N8NVersion = func(context.Context) (string, error) { return "1.123.81", nil }
	})
	hb := h.fake.waitBeat(t, "a clock component", func(hb schema.Heartbeat) bool { _, ok := hb.Components["clock"]; return ok })
	clock := hb.Components["clock"]
	var off float64
	if _, err := fmt.Sscanf(clock.Detail, "offset %fs", &off); err != nil || clock.OK || off < 3598 || off > 3602 {
		t.Errorf("clock component %+v, want not OK with an offset near +3600s", clock)
	}
	if _, caddy := hb.Components["caddy"]; !hb.Components["n8n"].OK || caddy {
		t.Errorf("components %+v", hb.Components)
	}
	if !hb.LastActivity.Equal(activity) || hb.N8NVersion != "1.123.81" {
		t.Errorf("last activity %v, n8n %q", hb.LastActivity, hb.N8NVersion)
	}
	// The manifest's own times are judged by the local clock, not the
	// server's: a manifest issued "now" is accepted.
	h.fake.publish(fx.droplet, fx.sign(fx.manifest(1), nil))
	h.fake.waitBeat(t, "applied version 1", func(hb schema.Heartbeat) bool { return hb.AppliedVersion == 1 })
	r.stop()
}

func TestClientAgainstNonLongPollingServer(t *testing.T) {
	// A server that answers 304 at once must not be hammered.
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/manifest":
			mu.Lock()
			n++
			mu.Unlock()
			w.WriteHeader(http.StatusNotModified)
		case "/v1/heartbeat":
			w.WriteHeader(http.StatusAccepted)
		}
	}))
	defer srv.Close()
	st := openState(t, t.TempDir())
	if err := st.SaveCredential("ws-acme", "1", "c"); err != nil {
		t.Fatal(err)
	}
	a, err := New(Config{
		Bootstrap: schema.AgentConfig{ReconcilerURL: srv.URL, SigningKeys: []string{pubPEM(newSigner(t))}, Workspace: "ws-acme"},
		DropletID: "1", State: st, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		PollWait: 200 * time.Millisecond, HeartbeatInterval: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if n > 7 {
		t.Errorf("%d manifest requests in 1s with a 200ms poll wait", n)
	}
}

func TestNewChecksConfig(t *testing.T) {
	st := openState(t, t.TempDir())
	good := Config{
		Bootstrap: schema.AgentConfig{ReconcilerURL: "https://fleet.example.com", SigningKeys: []string{pubPEM(newSigner(t))}, Workspace: "ws"},
		DropletID: "12", State: st,
	}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"no state", func(c *Config) { c.State = nil }},
		{"droplet id not decimal", func(c *Config) { c.DropletID = "12a" }},
		{"droplet id zero", func(c *Config) { c.DropletID = "0" }},
		{"droplet id leading zero", func(c *Config) { c.DropletID = "012" }},
		{"no URL", func(c *Config) { c.Bootstrap.ReconcilerURL = "" }},
		{"not http", func(c *Config) { c.Bootstrap.ReconcilerURL = "ftp://x" }},
		{"no workspace", func(c *Config) { c.Bootstrap.Workspace = "" }},
		{"no keys", func(c *Config) { c.Bootstrap.SigningKeys = nil }},
		{"bad key", func(c *Config) {
			c.Bootstrap.SigningKeys = []string{"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good
			c.Bootstrap.SigningKeys = append([]string(nil), good.Bootstrap.SigningKeys...)
			tc.mod(&c)
			if _, err := New(c); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

func TestDropletIDFromMetadata(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			http.Error(w, "booting", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("3164494\n"))
	}))
	defer srv.Close()
	id, err := DropletIDFromMetadata(context.Background(), srv.Client(), srv.URL, 3)
	if err != nil || id != "3164494" {
		t.Errorf("id = %q, %v", id, err)
	}
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }))
	defer bad.Close()
	if _, err := DropletIDFromMetadata(context.Background(), bad.Client(), bad.URL, 2); err == nil {
		t.Error("accepted a non-numeric id")
	}
}

// TestNoteRepairs: the heartbeat's repairs are the components a probe
// just repaired, newest first, at most schema.MaxRepairs, details clipped.
func TestNoteRepairs(t *testing.T) {
	a := &Agent{}
	t0 := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	if got := a.noteRepairs(map[string]schema.ComponentHealth{"n8n": {OK: true}}, t0); len(got) != 0 {
		t.Fatalf("no repair: %+v", got)
	}
	got := a.noteRepairs(map[string]schema.ComponentHealth{
		"n8n":   {OK: true, Detail: "repaired: n8n was down; started it again"},
		"caddy": {OK: true, Detail: "repaired: caddy had lost its config; reloaded"},
		"swap":  {OK: false, Detail: "swap 90% used"},
	}, t0)
	if len(got) != 2 || got[0].Component != "n8n" || got[1].Component != "caddy" || !got[0].At.Equal(t0) {
		t.Errorf("repairs %+v, want n8n then caddy", got)
	}
	for i := range 20 {
		got = a.noteRepairs(map[string]schema.ComponentHealth{"caddy": {OK: true, Detail: "repaired: " + strings.Repeat("x", 2000)}}, t0.Add(time.Duration(i+1)*time.Minute))
	}
	if len(got) != schema.MaxRepairs || !got[0].At.Equal(t0.Add(20*time.Minute)) || len(got[0].Detail) != 500 {
		t.Errorf("after 22 repairs: %d kept, newest at %v, detail %d bytes", len(got), got[0].At, len(got[0].Detail))
	}
}
