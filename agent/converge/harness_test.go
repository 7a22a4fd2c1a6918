package converge_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"genesis.dev/fleet/agent/caddy"
	"genesis.dev/fleet/agent/converge"
	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/fakes/n8nemu"
	"genesis.dev/fleet/fakes/n8ntest"
	"genesis.dev/fleet/schema"
)

// n8nHarness is an n8n behind a proxy that counts the requests, checks
// after every write that no workflow points at a missing credential, and
// can fail requests on demand. The n8n is the emulator, or with
// startN8NReal a real n8n when GENESIS_N8N_BIN is set (see n8ntest).
type n8nHarness struct {
	emu     *n8nemu.Server // nil for a real n8n
	backend string         // the n8n's own URL
	url     string         // the proxy's URL, what the converger talks to
	dir     string         // the agent's state dir: n8n.json holds the owner's login
	proxy   http.Handler

	mu        sync.Mutex
	calls     map[string]int
	dangling  []string
	intercept func(r *http.Request) (refuse, dropAnswer bool)
}

// startN8N puts the emulator behind the harness.
func startN8N(t *testing.T, dir string) *n8nHarness {
	t.Helper()
	emu := n8nemu.New(1)
	return newHarness(t, emu, "", dir)
}

// startN8NReal puts n8ntest's n8n behind the harness: a real one when
// GENESIS_N8N_BIN is set, else the emulator.
func startN8NReal(t *testing.T, dir string) *n8nHarness {
	t.Helper()
	url, emu := n8ntest.Start(t)
	return newHarness(t, emu, url, dir)
}

func newHarness(t *testing.T, emu *n8nemu.Server, backend, dir string) *n8nHarness {
	h := &n8nHarness{emu: emu, backend: backend, dir: dir, calls: map[string]int{}}
	if emu != nil {
		h.proxy = emu
	} else {
		u, err := neturl.Parse(backend)
		if err != nil {
			t.Fatal(err)
		}
		h.proxy = httputil.NewSingleHostReverseProxy(u)
	}
	ts := httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(ts.Close)
	h.url = ts.URL
	return h
}

// route names a public API request like the emulator's Calls do:
// "PUT /api/v1/workflows/{id}".
func route(r *http.Request) string {
	rest, ok := strings.CutPrefix(r.URL.Path, "/api/v1/")
	if !ok {
		return r.Method + " " + r.URL.Path
	}
	seg := strings.Split(rest, "/")
	switch {
	case len(seg) >= 3 && seg[0] == "credentials" && seg[1] == "schema":
		seg[2] = "{type}"
	case len(seg) >= 2:
		seg[1] = "{id}"
	}
	return r.Method + " /api/v1/" + strings.Join(seg, "/")
}

// calls returns the public API requests n8n answered, by route.
func (h *n8nHarness) callCounts() map[string]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.calls)
}

// writes is how many public API requests other than GET n8n answered.
func (h *n8nHarness) writes() int {
	n := 0
	for r, c := range h.callCounts() {
		if !strings.HasPrefix(r, "GET ") {
			n += c
		}
	}
	return n
}

func (h *n8nHarness) resetCalls() {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.calls)
}

func (h *n8nHarness) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	icpt := h.intercept
	h.mu.Unlock()
	refuse, drop := false, false
	if icpt != nil {
		refuse, drop = icpt(r)
	}
	if refuse {
		http.Error(w, `{"message":"injected failure"}`, http.StatusInternalServerError)
		return
	}
	if strings.HasPrefix(r.URL.Path, "/api/v1/") {
		h.mu.Lock()
		h.calls[route(r)]++
		h.mu.Unlock()
	}
	if drop {
		// n8n does the work, the answer is lost (a crash or a cut
		// connection right after the request).
		h.proxy.ServeHTTP(httptest.NewRecorder(), r)
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				h.check(r)
				return
			}
		}
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	h.proxy.ServeHTTP(w, r)
	h.check(r)
}

// check records every workflow credential reference to a credential n8n
// doesn't hold.
func (h *n8nHarness) check(r *http.Request) {
	if h.emu == nil && r.Method == http.MethodGet {
		return // a real n8n is inspected over HTTP: only after writes
	}
	cs, err1 := h.tryCredentials()
	wfs, err2 := h.tryWorkflows()
	if err1 != nil || err2 != nil {
		return // not bootstrapped yet
	}
	creds := map[string]bool{}
	for _, c := range cs {
		creds[c.ID] = true
	}
	for _, wf := range wfs {
		for _, ref := range credentialRefs(wf.Nodes) {
			if !creds[ref] && !strings.HasPrefix(ref, "TEMPLATE_") {
				h.mu.Lock()
				h.dangling = append(h.dangling, fmt.Sprintf("after %s %s: workflow %q uses missing credential %s", r.Method, r.URL.Path, wf.Name, ref))
				h.mu.Unlock()
			}
		}
	}
}

// access is the owner login and API key the converger stored.
func (h *n8nHarness) access() (email, password, key string, err error) {
	data, err := os.ReadFile(filepath.Join(h.dir, "n8n.json"))
	if err != nil {
		return "", "", "", err
	}
	var a struct {
		Email    string `json:"email"`
		Password string `json:"password"`
		APIKey   string `json:"api_key"`
	}
	if err := json.Unmarshal(data, &a); err != nil {
		return "", "", "", err
	}
	if a.APIKey == "" {
		return "", "", "", fmt.Errorf("no api key yet")
	}
	return a.Email, a.Password, a.APIKey, nil
}

// tryCredentials lists the credentials n8n holds; their Data only from the
// emulator (n8n never returns it).
func (h *n8nHarness) tryCredentials() ([]n8nemu.Credential, error) {
	if h.emu != nil {
		return h.emu.Credentials(), nil
	}
	email, password, _, err := h.access()
	if err != nil {
		return nil, err
	}
	cs, err := n8ntest.Credentials(context.Background(), h.backend, email, password)
	if err != nil {
		return nil, err
	}
	out := make([]n8nemu.Credential, 0, len(cs))
	for _, c := range cs {
		out = append(out, n8nemu.Credential{ID: c.ID, Name: c.Name, Type: c.Type})
	}
	return out, nil
}

// tryWorkflows lists the workflows n8n holds.
func (h *n8nHarness) tryWorkflows() ([]n8nemu.Workflow, error) {
	if h.emu != nil {
		return h.emu.Workflows(), nil
	}
	_, _, key, err := h.access()
	if err != nil {
		return nil, err
	}
	c, err := n8n.New(h.backend, n8n.Options{APIKey: key})
	if err != nil {
		return nil, err
	}
	wfs, err := c.ListWorkflows(context.Background(), n8n.WorkflowFilter{})
	if err != nil {
		return nil, err
	}
	out := make([]n8nemu.Workflow, 0, len(wfs))
	for _, wf := range wfs {
		w := n8nemu.Workflow{ID: wf.ID, Name: wf.Name, Active: wf.Active, Nodes: wf.Nodes,
			Connections: wf.Connections, Settings: wf.Settings}
		for _, tg := range wf.Tags {
			w.Tags = append(w.Tags, tg.Name)
		}
		out = append(out, w)
	}
	return out, nil
}

// credentials and workflows are tryCredentials and tryWorkflows for a
// bootstrapped n8n.
func (h *n8nHarness) credentials(t *testing.T) []n8nemu.Credential {
	t.Helper()
	cs, err := h.tryCredentials()
	if err != nil {
		t.Fatalf("list n8n credentials: %v", err)
	}
	return cs
}

func (h *n8nHarness) workflows(t *testing.T) []n8nemu.Workflow {
	t.Helper()
	wfs, err := h.tryWorkflows()
	if err != nil {
		t.Fatalf("list n8n workflows: %v", err)
	}
	return wfs
}

// ownerSetUp reports whether n8n has its owner (for a real n8n: whether the
// stored login works).
func (h *n8nHarness) ownerSetUp() bool {
	if h.emu != nil {
		return h.emu.OwnerSetUp()
	}
	_, err := h.tryCredentials()
	return err == nil
}

func (h *n8nHarness) setIntercept(f func(r *http.Request) (refuse, dropAnswer bool)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.intercept = f
}

func (h *n8nHarness) assertNoDangling(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, d := range h.dangling {
		t.Error(d)
	}
}

// credentialRefs returns the credential ids the nodes reference.
func credentialRefs(nodes json.RawMessage) []string {
	var ns []struct {
		Credentials map[string]struct {
			ID string `json:"id"`
		} `json:"credentials"`
	}
	_ = json.Unmarshal(nodes, &ns)
	var out []string
	for _, n := range ns {
		for _, c := range n.Credentials {
			out = append(out, c.ID)
		}
	}
	return out
}

// fakeCaddy speaks the admin API's GET /config/ and POST /load.
type fakeCaddy struct {
	mu     sync.Mutex
	config []byte
	loads  int
	down   bool
}

func startFakeCaddy(t *testing.T) (*fakeCaddy, string) {
	t.Helper()
	f := &fakeCaddy{config: []byte("null")}
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	return f, strings.TrimPrefix(ts.URL, "http://")
}

func (f *fakeCaddy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		http.Error(w, `{"error":"down"}`, http.StatusServiceUnavailable)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/config/":
		w.Header().Set("Content-Type", "application/json")
		w.Write(f.config)
	case r.Method == http.MethodPost && r.URL.Path == "/load":
		body, _ := io.ReadAll(r.Body)
		f.config, f.loads = body, f.loads+1
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeCaddy) state() (loads int, hosts []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var doc struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Match []struct {
							Host []string `json:"host"`
						} `json:"match"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	_ = json.Unmarshal(f.config, &doc)
	for _, s := range doc.Apps.HTTP.Servers {
		for _, r := range s.Routes {
			for _, m := range r.Match {
				hosts = append(hosts, m.Host...)
			}
		}
	}
	return f.loads, hosts
}

// fakeRuntime records version switches, stops and starts.
type fakeRuntime struct {
	mu       sync.Mutex
	current  string
	switches []string
	fail     error
	// calls records "stop" and "start" in order; stopped is n8n's state.
	calls   []string
	stopped bool
	// onStop and onStart act on the droplet's n8n (the emulator's mode).
	onStop, onStart func()
}

func (f *fakeRuntime) Stop(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "stop")
	f.stopped = true
	if f.onStop != nil {
		f.onStop()
	}
	return nil
}

func (f *fakeRuntime) Start(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "start")
	f.stopped = false
	if f.onStart != nil {
		f.onStart()
	}
	return nil
}

func (f *fakeRuntime) Current(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.current, nil
}

func (f *fakeRuntime) SwitchTo(_ context.Context, v string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.switches = append(f.switches, v)
	if f.fail != nil && v != f.current { // going back to the committed version works
		return f.fail
	}
	return nil
}

func (f *fakeRuntime) Commit(_ context.Context, v string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current = v
	return nil
}

// rig is one droplet: n8n, Caddy, the ask endpoint, a runtime and a state
// directory; converger() makes a fresh Converger over them, like an agent
// (re)start.
type rig struct {
	t       *testing.T
	n8n     *n8nHarness
	caddy   *fakeCaddy
	admin   string
	ask     *caddy.Ask
	runtime *fakeRuntime
	dir     string
	client  *n8n.Client
	cc      *caddy.Client
	// beforeUpgrade is the converger's Config.BeforeUpgrade (nil: none).
	beforeUpgrade func(ctx context.Context, from, to string) error
}

// newRig is a droplet with the n8n emulator.
func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, n8n: startN8N(t, dir), ask: caddy.NewAsk(nil), runtime: &fakeRuntime{current: "1.123.81"}, dir: dir}
	r.caddy, r.admin = startFakeCaddy(t)
	return r
}

// newRigReal is a droplet with n8ntest's n8n: a real n8n when
// GENESIS_N8N_BIN is set (make e2e-n8n), else the emulator.
func newRigReal(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, n8n: startN8NReal(t, dir), ask: caddy.NewAsk(nil), runtime: &fakeRuntime{current: "1.123.81"}, dir: dir}
	r.caddy, r.admin = startFakeCaddy(t)
	return r
}

func (r *rig) converger() *converge.Converger {
	r.t.Helper()
	client, err := n8n.New(r.n8n.url, n8n.Options{PollInterval: 10 * time.Millisecond})
	if err != nil {
		r.t.Fatal(err)
	}
	r.client = client
	r.cc = caddy.NewClient(r.admin, caddy.ClientOptions{})
	c, err := converge.New(converge.Config{
		Dir: r.dir, N8N: client, Caddy: r.cc, Ask: r.ask, Runtime: r.runtime,
		CaddyConfig:   caddy.Config{AskURL: "http://127.0.0.1:9180/ask"},
		ReadyTimeout:  200 * time.Millisecond,
		BeforeUpgrade: r.beforeUpgrade,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

// apiKey is the key the converger stored.
func (r *rig) apiKey() string {
	r.t.Helper()
	data, err := os.ReadFile(filepath.Join(r.dir, "n8n.json"))
	if err != nil {
		r.t.Fatal(err)
	}
	var a struct {
		APIKey string `json:"api_key"`
	}
	if err := json.Unmarshal(data, &a); err != nil {
		r.t.Fatal(err)
	}
	return a.APIKey
}

// cred is a manifest credential and its plaintext.
type cred struct {
	name, typ string
	data      string
}

// gmailData is gmailOAuth2 data n8n 1.123's schema accepts: its "if"s on
// absent properties hold, so it wants all five fields.
func gmailData(secret string) string {
	return `{"serverUrl":"","clientId":"cid","clientSecret":"` + secret + `","sendAdditionalBodyProperties":false,"additionalBodyProperties":{}}`
}

// Credential data as n8n 1.123's schemas accept it: openAiApi needs
// "header": false, slackApi a signatureSecret (else it wants "notice").
var creds5 = []cred{
	{"gmail", "gmailOAuth2", gmailData("gmail-secret-1")},
	{"openai", "openAiApi", `{"apiKey":"sk-openai-secret-1","header":false}`},
	{"dashboard", "httpHeaderAuth", `{"name":"Authorization","value":"Bearer dash-secret-1"}`},
	{"crm-hook", "httpHeaderAuth", `{"name":"X-Key","value":"crm-secret-1"}`},
	{"slack", "slackApi", `{"accessToken":"xoxb-slack-secret-1","signatureSecret":"slack-sig-1"}`},
}

// ref is a node's credential use: its type and placeholder.
type ref struct{ typ, placeholder string }

// workflowJSON is a small rendered template: a webhook trigger on path and
// one HTTP node per credential reference.
func workflowJSON(name, path string, refs ...ref) json.RawMessage {
	nodes := []map[string]any{{
		"id": "n0", "name": "Hook", "type": "n8n-nodes-base.webhook", "typeVersion": 2, "position": []int{0, 0},
		"webhookId": "hook-" + path, "parameters": map[string]any{"path": path, "httpMethod": "POST"},
	}}
	for i, rf := range refs {
		nodes = append(nodes, map[string]any{
			"id": fmt.Sprintf("n%d", i+1), "name": fmt.Sprintf("Call %d", i+1), "type": "n8n-nodes-base.httpRequest",
			"typeVersion": 4, "position": []int{200 * (i + 1), 0}, "parameters": map[string]any{"url": "https://example.com"},
			"credentials": map[string]any{rf.typ: map[string]string{"id": rf.placeholder, "name": rf.typ}},
		})
	}
	js, _ := json.Marshal(map[string]any{"name": name, "nodes": nodes, "connections": map[string]any{}, "settings": map[string]any{"executionOrder": "v1"}})
	return js
}

var workflows4 = []schema.ManifestWorkflow{
	{Name: "email-prep", JSON: workflowJSON("Email Prep", "prep", ref{"openAiApi", "TEMPLATE_OPENAI_UUID"}, ref{"httpHeaderAuth", "TEMPLATE_DASHBOARD_UUID"})},
	{Name: "email-sequence", JSON: workflowJSON("Email Sequence", "seq", ref{"gmailOAuth2", "TEMPLATE_GMAIL_UUID"}, ref{"httpHeaderAuth", "TEMPLATE_DASHBOARD_UUID"})},
	{Name: "click-tracker", JSON: workflowJSON("Click Tracker", "click", ref{"httpHeaderAuth", "TEMPLATE_CRM_HOOK_UUID"})},
	{Name: "notify", JSON: workflowJSON("Notify", "notify", ref{"slackApi", "TEMPLATE_SLACK_UUID"})},
}

// manifest builds a manifest and the plaintext credentials Apply gets.
// sealed stands in for the ciphertext: its digest is what the converger
// compares.
func manifest(version int64, cs []cred, wfs []schema.ManifestWorkflow, domains ...string) (*schema.Manifest, map[string]json.RawMessage) {
	m := &schema.Manifest{Type: schema.ManifestType, Workspace: "ws-acme", Droplet: "1", Version: version,
		N8N: schema.N8NPin{Version: "1.123.81"}, Domains: domains}
	plain := map[string]json.RawMessage{}
	for _, c := range cs {
		sum := sha256.Sum256([]byte("sealed:" + c.name + ":" + c.data))
		m.Credentials = append(m.Credentials, schema.ManifestCredential{Name: c.name, Type: c.typ, Sealed: "age...", SHA256: hex.EncodeToString(sum[:])})
		plain[c.name] = json.RawMessage(c.data)
	}
	for _, w := range wfs {
		sum := sha256.Sum256(w.JSON)
		w.SHA256 = hex.EncodeToString(sum[:])
		m.Workflows = append(m.Workflows, w)
	}
	return m, plain
}
