package converge_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/fakes/n8nemu"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// converged checks that n8n holds exactly the manifest: one credential per
// declared one with its data, one active tagged workflow per declared one,
// every placeholder resolved to the credential it stands for.
func converged(t *testing.T, r *rig, m *schema.Manifest, plain map[string]json.RawMessage) {
	t.Helper()
	byID := map[string]n8nemu.Credential{}
	var names []string
	for _, c := range r.n8n.credentials(t) {
		byID[c.ID] = c
		names = append(names, c.Name)
	}
	var want []string
	for _, c := range m.Credentials {
		want = append(want, c.Name)
	}
	slices.Sort(want)
	slices.Sort(names)
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("n8n credentials (-want +got):\n%s", diff)
	}
	// n8n never returns a credential's data: only the emulator shows it.
	for _, c := range r.n8n.credentials(t) {
		if r.n8n.emu != nil && !jsonSame(c.Data, plain[c.Name]) {
			t.Errorf("credential %s data = %s, want %s", c.Name, c.Data, plain[c.Name])
		}
	}
	var wantWF, gotWF []string
	for _, w := range m.Workflows {
		var doc struct{ Name string }
		_ = json.Unmarshal(w.JSON, &doc)
		wantWF = append(wantWF, doc.Name)
	}
	for _, wf := range r.n8n.workflows(t) {
		if !slices.Contains(wf.Tags, "genesis-managed") {
			continue
		}
		gotWF = append(gotWF, wf.Name)
		if !wf.Active {
			t.Errorf("workflow %q inactive", wf.Name)
		}
		if strings.Contains(string(wf.Nodes), "TEMPLATE_") {
			t.Errorf("workflow %q still has a placeholder: %s", wf.Name, wf.Nodes)
		}
		// Each reference's credential type matches the credential's.
		var nodes []struct {
			Credentials map[string]struct{ ID string } `json:"credentials"`
		}
		_ = json.Unmarshal(wf.Nodes, &nodes)
		for _, n := range nodes {
			for typ, ref := range n.Credentials {
				c, ok := byID[ref.ID]
				if !ok || c.Type != typ {
					t.Errorf("workflow %q: %s credential %s: n8n holds %+v", wf.Name, typ, ref.ID, c)
				}
			}
		}
	}
	slices.Sort(wantWF)
	slices.Sort(gotWF)
	if diff := cmp.Diff(wantWF, gotWF); diff != "" {
		t.Errorf("managed workflows (-want +got):\n%s", diff)
	}
	r.n8n.assertNoDangling(t)
}

func jsonSame(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return cmp.Equal(x, y)
}

// credentialIDs returns credential name → n8n id as n8n holds them.
func credentialIDs(r *rig) map[string]string {
	out := map[string]string{}
	for _, c := range r.n8n.credentials(r.t) {
		out[c.Name] = c.ID
	}
	return out
}

func TestConvergeFromEmptyThenIdempotent(t *testing.T) {
	r := newRigReal(t)
	m, plain := manifest(1, creds5, workflows4, "track.acme.com", "203.0.113.7.sslip.io")
	ctx := context.Background()
	c := r.converger()
	start := time.Now()
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	t.Logf("converged %d credentials / %d workflows from empty in %s (%d n8n writes)",
		len(m.Credentials), len(m.Workflows), time.Since(start), r.n8n.writes())
	converged(t, r, m, plain)
	if !r.n8n.ownerSetUp() {
		t.Error("n8n owner not set up")
	}
	loads, hosts := r.caddy.state()
	if loads != 1 {
		t.Errorf("caddy loads = %d, want 1", loads)
	}
	slices.Sort(hosts)
	if diff := cmp.Diff([]string{"203.0.113.7.sslip.io", "track.acme.com"}, hosts); diff != "" {
		t.Errorf("caddy hosts (-want +got):\n%s", diff)
	}
	if !r.ask.Allowed("track.acme.com") || r.ask.Allowed("evil.example.com") {
		t.Error("ask endpoint does not follow the manifest's domains")
	}
	if len(r.runtime.switches) != 0 {
		t.Errorf("runtime switched %v with the version already running", r.runtime.switches)
	}

	// The state dir holds no plaintext, and its files are 0600.
	entries, _ := os.ReadDir(r.dir)
	for _, e := range entries {
		data, _ := os.ReadFile(filepath.Join(r.dir, e.Name()))
		for _, cr := range creds5 {
			if strings.Contains(string(data), "secret-1") {
				t.Errorf("%s holds plaintext of %s", e.Name(), cr.name)
			}
		}
		if fi, _ := e.Info(); fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode %v, want 0600", e.Name(), fi.Mode().Perm())
		}
	}

	// Same manifest again, from the same converger and from a restarted
	// one: no n8n writes, no caddy load.
	for _, name := range []string{"same process", "restarted"} {
		t.Run(name, func(t *testing.T) {
			r.n8n.resetCalls()
			cc := c
			if name == "restarted" {
				cc = r.converger()
			}
			if err := cc.Apply(ctx, m, plain); err != nil {
				t.Fatal(err)
			}
			if w := r.n8n.writes(); w != 0 {
				t.Errorf("re-apply made %d n8n writes (%v), want 0", w, r.n8n.callCounts())
			}
			if loads, _ := r.caddy.state(); loads != 1 {
				t.Errorf("caddy loads = %d, want still 1", loads)
			}
			converged(t, r, m, plain)
		})
	}
}

func TestCredentialRotation(t *testing.T) {
	r := newRigReal(t)
	ctx := context.Background()
	m, plain := manifest(1, creds5, workflows4, "track.acme.com")
	c := r.converger()
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	before := credentialIDs(r)

	rotated := slices.Clone(creds5)
	rotated[2].data = `{"name":"Authorization","value":"Bearer dash-secret-2"}` // dashboard
	m2, plain2 := manifest(2, rotated, workflows4, "track.acme.com")
	r.n8n.resetCalls()
	if err := c.Apply(ctx, m2, plain2); err != nil {
		t.Fatal(err)
	}
	after := credentialIDs(r)
	if after["dashboard"] == before["dashboard"] {
		t.Errorf("dashboard kept id %s after rotation", before["dashboard"])
	}
	for name, id := range before {
		if name != "dashboard" && after[name] != id {
			t.Errorf("%s changed id %s → %s without rotation", name, id, after[name])
		}
	}
	if got := len(r.n8n.credentials(t)); got != 5 {
		t.Errorf("n8n holds %d credentials, want 5 (old one deleted)", got)
	}
	calls := r.n8n.callCounts()
	if calls["POST /api/v1/credentials"] != 1 || calls["DELETE /api/v1/credentials/{id}"] != 1 || calls["PUT /api/v1/workflows/{id}"] != 2 {
		t.Errorf("rotation calls = %v, want 1 create, 2 workflow updates, 1 delete", calls)
	}
	converged(t, r, m2, plain2)

	// A credential no longer declared goes once nothing uses it.
	m3, plain3 := manifest(3, rotated[:4], workflows4[:3], "track.acme.com")
	if err := c.Apply(ctx, m3, plain3); err != nil {
		t.Fatal(err)
	}
	converged(t, r, m3, plain3)
}

func TestRotationWithWorkflowFailureKeepsOldCredential(t *testing.T) {
	r := newRigReal(t)
	ctx := context.Background()
	m, plain := manifest(1, creds5, workflows4, "track.acme.com")
	c := r.converger()
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	rotated := slices.Clone(creds5)
	rotated[0].data = gmailData("gmail-secret-2")
	m2, plain2 := manifest(2, rotated, workflows4, "track.acme.com")
	r.n8n.setIntercept(func(req *http.Request) (bool, bool) {
		return req.Method == http.MethodPut && strings.HasPrefix(req.URL.Path, "/api/v1/workflows/"), false
	})
	if err := c.Apply(ctx, m2, plain2); err == nil {
		t.Fatal("apply succeeded with workflow updates failing")
	}
	if got := len(r.n8n.credentials(t)); got != 6 {
		t.Errorf("n8n holds %d credentials mid-rotation, want 6 (old kept while used)", got)
	}
	r.n8n.setIntercept(nil)
	if err := c.Apply(ctx, m2, plain2); err != nil {
		t.Fatal(err)
	}
	converged(t, r, m2, plain2)
}

func TestWorkflowRemovalLeavesHandMadeAlone(t *testing.T) {
	r := newRigReal(t)
	ctx := context.Background()
	m, plain := manifest(1, creds5, workflows4, "track.acme.com")
	c := r.converger()
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	user := r.client.WithAPIKey(r.apiKey())
	spec, _ := n8n.SpecFromExport(workflowJSON("Notify", "mine")) // same name as one of ours
	mine, err := user.CreateWorkflow(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	m2, plain2 := manifest(2, creds5, workflows4[:2], "track.acme.com")
	if err := c.Apply(ctx, m2, plain2); err != nil {
		t.Fatal(err)
	}
	converged(t, r, m2, plain2)
	got, err := user.GetWorkflow(ctx, mine.ID)
	if err != nil {
		t.Fatalf("hand-made workflow: %v", err)
	}
	if got.VersionID != mine.VersionID || len(got.Tags) != 0 {
		t.Errorf("hand-made workflow changed: %+v", got)
	}
	if n := len(r.n8n.workflows(t)); n != 3 {
		t.Errorf("n8n holds %d workflows, want 2 of ours + 1 hand-made", n)
	}

	// A managed workflow deleted or deactivated by hand comes back.
	var ours n8nemu.Workflow
	for _, wf := range r.n8n.workflows(t) {
		if slices.Contains(wf.Tags, "genesis-managed") {
			ours = wf
		}
	}
	if err := user.DeleteWorkflow(ctx, ours.ID); err != nil {
		t.Fatal(err)
	}
	for _, wf := range r.n8n.workflows(t) {
		if slices.Contains(wf.Tags, "genesis-managed") {
			if _, err := user.DeactivateWorkflow(ctx, wf.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.Apply(ctx, m2, plain2); err != nil {
		t.Fatal(err)
	}
	converged(t, r, m2, plain2)
}

func TestN8NDownThenBack(t *testing.T) {
	for _, mode := range []n8nemu.Mode{n8nemu.Down, n8nemu.StartingUp} {
		t.Run(map[n8nemu.Mode]string{n8nemu.Down: "down", n8nemu.StartingUp: "starting"}[mode], func(t *testing.T) {
			r := newRig(t)
			ctx := context.Background()
			m, plain := manifest(1, creds5, workflows4, "track.acme.com")
			c := r.converger()
			r.n8n.emu.SetMode(mode)
			err := c.Apply(ctx, m, plain)
			if err == nil {
				t.Fatal("apply succeeded with n8n not ready")
			}
			if !n8n.IsRetryable(err) {
				t.Errorf("error %v is not retryable", err)
			}
			if loads, _ := r.caddy.state(); loads != 0 {
				t.Errorf("caddy loaded before n8n converged")
			}
			r.n8n.emu.SetMode(n8nemu.Ready)
			if err := c.Apply(ctx, m, plain); err != nil {
				t.Fatal(err)
			}
			converged(t, r, m, plain)

			// Down in the middle of a later apply: error, then converges.
			m2, plain2 := manifest(2, creds5, workflows4[1:], "track.acme.com", "go.acme.com")
			var n atomic.Int32
			r.n8n.setIntercept(func(req *http.Request) (bool, bool) {
				if req.Method != http.MethodGet && n.Add(1) == 1 {
					r.n8n.emu.SetMode(mode)
				}
				return false, false
			})
			if err := c.Apply(ctx, m2, plain2); err == nil {
				t.Fatal("apply succeeded with n8n gone mid-apply")
			}
			r.n8n.setIntercept(nil)
			r.n8n.emu.SetMode(n8nemu.Ready)
			if err := c.Apply(ctx, m2, plain2); err != nil {
				t.Fatal(err)
			}
			converged(t, r, m2, plain2)
		})
	}
}

func TestRestartMidApply(t *testing.T) {
	// Stop the agent after each number of n8n writes in turn: a fresh
	// converger over the same state dir converges without duplicates.
	m, plain := manifest(1, creds5, workflows4, "track.acme.com")
	for _, cut := range []int{1, 3, 5, 6, 7, 9, 12, 15} {
		for _, lost := range []bool{false, true} {
			name := "refused"
			if lost {
				name = "answer lost"
			}
			t.Run(name+"/"+strings.Repeat("w", cut), func(t *testing.T) {
				r := newRig(t)
				ctx := context.Background()
				var writes atomic.Int32
				r.n8n.setIntercept(func(req *http.Request) (bool, bool) {
					if req.Method == http.MethodGet {
						return false, false
					}
					if n := int(writes.Add(1)); n == cut {
						return !lost, lost
					} else if n > cut {
						return true, false
					}
					return false, false
				})
				if err := r.converger().Apply(ctx, m, plain); err == nil {
					t.Fatal("apply succeeded through the cut")
				}
				r.n8n.setIntercept(nil)
				if err := r.converger().Apply(ctx, m, plain); err != nil {
					t.Fatal(err)
				}
				// A lost credential create leaves one unused credential
				// behind (n8n cannot list credentials): tolerated, nothing
				// uses it.
				extra := len(r.n8n.credentials(t)) - len(m.Credentials)
				if extra < 0 || extra > 1 || (extra == 1 && !lost) {
					t.Errorf("n8n holds %d credentials for %d declared", len(r.n8n.credentials(t)), len(m.Credentials))
				}
				if extra == 0 {
					converged(t, r, m, plain)
				}
				if n := len(r.n8n.workflows(t)); n != len(m.Workflows) {
					t.Errorf("n8n holds %d workflows for %d declared", n, len(m.Workflows))
				}
				r.n8n.assertNoDangling(t)
				r.n8n.resetCalls()
				if err := r.converger().Apply(ctx, m, plain); err != nil {
					t.Fatal(err)
				}
				if w := r.n8n.writes(); w != 0 {
					t.Errorf("re-apply after recovery made %d writes: %v", w, r.n8n.callCounts())
				}
			})
		}
	}
}

func TestVersionSwitch(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	m, plain := manifest(1, creds5[:1], nil)
	c := r.converger()
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	m.N8N.Version = "1.124.0"
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"1.124.0"}, r.runtime.switches); diff != "" {
		t.Errorf("switches (-want +got):\n%s", diff)
	}
	r.runtime.fail = errors.New("not ready, rolled back")
	m.N8N.Version = "1.125.0"
	if err := c.Apply(ctx, m, plain); err == nil || !strings.Contains(err.Error(), "1.125.0") {
		t.Errorf("failed switch: err = %v", err)
	}
}

// TestBeforeUpgrade: the hook (the agent's backup) runs before n8n moves
// to another version; its error stops the switch and fails the apply, so
// the manifest is tried again; it is not called when the version stays.
func TestBeforeUpgrade(t *testing.T) {
	errBackup := errors.New("backup storage unreachable")
	for _, tt := range []struct {
		name         string
		version      string
		hookErr      error
		wantCalls    []string
		wantSwitches []string
		wantErr      string
	}{
		{name: "an error stops the switch", version: "1.124.0", hookErr: errBackup, wantCalls: []string{"1.123.81 -> 1.124.0"},
			wantErr: "n8n version 1.124.0: before the upgrade from 1.123.81: backup storage unreachable"},
		{name: "nil lets it switch", version: "1.124.0", wantCalls: []string{"1.123.81 -> 1.124.0"}, wantSwitches: []string{"1.124.0"}},
		{name: "not called for the running version", version: "1.123.81"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			var calls []string
			r.beforeUpgrade = func(ctx context.Context, from, to string) error {
				r.runtime.mu.Lock()
				switched := len(r.runtime.switches)
				r.runtime.mu.Unlock()
				if switched != 0 {
					t.Errorf("BeforeUpgrade called after %d switches", switched)
				}
				calls = append(calls, from+" -> "+to)
				return tt.hookErr
			}
			m, plain := manifest(1, creds5[:1], nil)
			m.N8N.Version = tt.version
			err := r.converger().Apply(context.Background(), m, plain)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Apply: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, tt.hookErr)):
				t.Fatalf("Apply: %v, want an error wrapping %q", err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantCalls, calls); diff != "" {
				t.Errorf("BeforeUpgrade calls (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantSwitches, r.runtime.switches); diff != "" {
				t.Errorf("switches (-want +got):\n%s", diff)
			}
			wantCurrent := "1.123.81"
			if tt.wantSwitches != nil {
				wantCurrent = tt.version
			}
			if r.runtime.current != wantCurrent {
				t.Errorf("running %s, want %s", r.runtime.current, wantCurrent)
			}
		})
	}
}

func TestManifestErrors(t *testing.T) {
	ambiguous := []schema.ManifestWorkflow{{Name: "click-tracker", JSON: workflowJSON("Click Tracker", "click", ref{"httpHeaderAuth", "TEMPLATE_OTHER_UUID"})}}
	unknownType := []schema.ManifestWorkflow{{Name: "notify", JSON: workflowJSON("Notify", "n", ref{"telegramApi", "TEMPLATE_TG_UUID"})}}
	twice := []schema.ManifestWorkflow{workflows4[3], workflows4[3]}
	for _, tt := range []struct {
		name string
		wfs  []schema.ManifestWorkflow
		want string
	}{
		{"ambiguous type", ambiguous, "workflow click-tracker: node \"Call 1\": placeholder TEMPLATE_OTHER_UUID: credentials dashboard, crm-hook all have type httpHeaderAuth"},
		{"no credential of type", unknownType, "workflow notify: node \"Call 1\": placeholder TEMPLATE_TG_UUID: no credential of type telegramApi"},
		{"declared twice", twice, "workflow notify: declared twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			m, plain := manifest(1, creds5, tt.wfs)
			err := r.converger().Apply(context.Background(), m, plain)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks plaintext: %v", err)
			}
		})
	}
}

func TestProbes(t *testing.T) {
	r := newRig(t)
	c := r.converger()
	ctx := context.Background()
	if h := c.ProbeN8N(ctx); !h.OK {
		t.Errorf("n8n probe: %+v", h)
	}
	if h := c.ProbeCaddy(ctx); !h.OK {
		t.Errorf("caddy probe: %+v", h)
	}
	// n8n tells its version only to the signed-in owner: none before the
	// bootstrap, the emulator's after it.
	if v, err := c.N8NVersion(ctx); err == nil {
		t.Errorf("version before the bootstrap = %q, want an error (n8n hides it from anonymous callers)", v)
	}
	if err := c.Apply(ctx, &schema.Manifest{Version: 1}, nil); err != nil {
		t.Fatalf("apply an empty manifest: %v", err)
	}
	if v, err := c.N8NVersion(ctx); err != nil || v != n8nemu.Version {
		t.Errorf("version = %q, %v", v, err)
	}
	r.n8n.emu.SetMode(n8nemu.StartingUp)
	r.caddy.mu.Lock()
	r.caddy.down = true
	r.caddy.mu.Unlock()
	if h := c.ProbeN8N(ctx); h.OK {
		t.Errorf("n8n probe while starting: %+v", h)
	}
	if h := c.ProbeCaddy(ctx); h.OK {
		t.Errorf("caddy probe while down: %+v", h)
	}
}

// exampleManifest is a manifest of the four state-example templates, their
// parameters filled and their placeholders left for the agent, with one
// credential of each type they use.
func exampleManifest(t *testing.T) (*schema.Manifest, map[string]json.RawMessage) {
	t.Helper()
	names := testkit.Glob(t, filepath.Join("..", "..", "state-example", schema.TemplatesDir, "*.json"))
	if len(names) != 4 {
		t.Fatalf("%d example templates, want 4", len(names))
	}
	var wfs []schema.ManifestWorkflow
	for _, p := range names {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		tpl, errs := schema.ParseTemplate(p, name, data)
		if len(errs) > 0 {
			t.Fatalf("%s: %v", p, errs)
		}
		keep := map[string]string{}
		for ph := range tpl.Placeholders {
			keep[ph] = ph
		}
		params := map[string]string{}
		for _, pr := range tpl.Params {
			params[pr] = "Acme " + pr
		}
		js, err := tpl.Render(keep, params)
		if err != nil {
			t.Fatal(err)
		}
		wfs = append(wfs, schema.ManifestWorkflow{Name: name, JSON: js})
	}
	cs := []cred{
		{"gmail", "gmailOAuth2", gmailData("gmail-secret-1")},
		{"openai", "openAiApi", `{"apiKey":"sk-openai-secret-1","header":false}`},
		{"dashboard", "httpHeaderAuth", `{"name":"Authorization","value":"Bearer dash-secret-1"}`},
		{"slack", "slackApi", `{"accessToken":"xoxb-slack-secret-1","signatureSecret":"slack-sig-1"}`},
	}
	return manifest(1, cs, wfs, "track.acme.com")
}

// The example state's templates converge as they are and re-apply with no
// writes.
func TestConvergeExampleTemplates(t *testing.T) {
	r := newRigReal(t)
	ctx := context.Background()
	m, plain := exampleManifest(t)
	c := r.converger()
	start := time.Now()
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	t.Logf("converged the %d example templates in %s (%d n8n writes)", len(m.Workflows), time.Since(start), r.n8n.writes())
	converged(t, r, m, plain)
	r.n8n.resetCalls()
	if err := r.converger().Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	if w := r.n8n.writes(); w != 0 {
		t.Errorf("re-apply made %d n8n writes (%v), want 0", w, r.n8n.callCounts())
	}
}

// LastActivity is zero before n8n is bootstrapped, then n8n's newest
// execution, also for a Converger that reloads the recorded key.
func TestLastActivity(t *testing.T) {
	r := newRig(t)
	c := r.converger()
	ctx := context.Background()
	if at, err := c.LastActivity(ctx); err != nil || !at.IsZero() {
		t.Fatalf("before bootstrap: %v, %v", at, err)
	}
	m, plain := manifest(1, creds5, workflows4, "track.acme.com")
	if err := c.Apply(ctx, m, plain); err != nil {
		t.Fatal(err)
	}
	if at, err := c.LastActivity(ctx); err != nil || !at.IsZero() {
		t.Fatalf("no execution: %v, %v", at, err)
	}
	ran := time.Date(2026, 3, 1, 12, 30, 0, 0, time.UTC)
	r.n8n.emu.RecordExecution("wf1", ran.Add(-time.Hour))
	r.n8n.emu.RecordExecution("wf2", ran)
	for _, c := range []interface {
		LastActivity(context.Context) (time.Time, error)
	}{c, r.converger()} {
		if at, err := c.LastActivity(ctx); err != nil || !at.Equal(ran) {
			t.Errorf("after executions: %v, %v; want %v", at, err, ran)
		}
	}
}
