package n8n_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/fakes/n8nemu"
	"genesis.dev/fleet/fakes/n8ntest"
	"genesis.dev/fleet/internal/testkit"
)

const (
	ownerEmail    = "agent@genesis.invalid"
	ownerPassword = "Sup3r-secret-pass"
)

// setup starts an n8n (a real one when GENESIS_N8N_BIN is set, see
// n8ntest) and returns the emulator (nil for a real n8n) with a
// bootstrapped client whose debug log goes to logs.
func setup(t *testing.T) (*n8nemu.Server, *n8n.Client, *bytes.Buffer) {
	t.Helper()
	url, emu := n8ntest.Start(t)
	c, logs := bootstrapped(t, url)
	return emu, c, logs
}

// setupEmu is setup on the emulator, for tests that drive its modes.
func setupEmu(t *testing.T) (*n8nemu.Server, *n8n.Client) {
	t.Helper()
	emu := n8nemu.Start(t)
	c, _ := bootstrapped(t, emu.URL)
	return emu, c
}

func bootstrapped(t *testing.T, url string) (*n8n.Client, *bytes.Buffer) {
	t.Helper()
	logs := &bytes.Buffer{}
	c, err := n8n.New(url, n8n.Options{
		Logger:       slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		PollInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := c.Bootstrap(t.Context(), ownerEmail, ownerPassword)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	return c.WithAPIKey(key), logs
}

// template loads a workflow of the example state.
func template(t *testing.T, name string) n8n.WorkflowSpec {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "state-example", "templates", "workflows", name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	spec, err := n8n.SpecFromExport(data)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func TestBootstrap(t *testing.T) {
	ctx := t.Context()
	url, emu := n8ntest.Start(t)
	c, err := n8n.New(url, n8n.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key1, err := c.Bootstrap(ctx, ownerEmail, ownerPassword)
	if err != nil {
		t.Fatalf("first bootstrap: %v", err)
	}
	if emu != nil && !emu.OwnerSetUp() {
		t.Fatal("owner not set up")
	}
	// An agent that lost its key logs in again and gets a second key.
	key2, err := c.Bootstrap(ctx, ownerEmail, ownerPassword)
	if err != nil {
		t.Fatalf("second bootstrap: %v", err)
	}
	if key1 == "" || key1 == key2 {
		t.Fatalf("keys %q and %q: want two distinct keys", key1, key2)
	}
	for _, key := range []string{key1, key2} {
		if _, err := c.WithAPIKey(key).ListWorkflows(ctx, n8n.WorkflowFilter{}); err != nil {
			t.Errorf("list with a bootstrapped key: %v", err)
		}
	}
	if emu != nil {
		got := emu.Calls()
		// Two keys within a second clash (500) and the second is retried
		// a second later.
		if n := got["POST /rest/api-keys"]; n == 2 || n == 3 {
			delete(got, "POST /rest/api-keys")
		}
		want := map[string]int{"POST /rest/owner/setup": 2, "POST /rest/login": 1, "GET /rest/api-keys/scopes": 2,
			"GET /api/v1/workflows": 2}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("calls (-want +got):\n%s", diff)
		}
	}
	_, err = c.Bootstrap(ctx, ownerEmail, "Wr0ng-password")
	if n8n.StatusOf(err) != http.StatusUnauthorized || strings.Contains(err.Error(), "Wr0ng") {
		t.Errorf("bootstrap with a wrong password: %v; want a 401 without the password", err)
	}
}

func TestBootstrapPasswordRules(t *testing.T) {
	tests := []struct {
		password, want string
	}{
		{"Sh0rt", "Password must be 8 to 64 characters long."},
		{"A1" + strings.Repeat("x", 63), "Password must be 8 to 64 characters long."},
		{"NoDigitsHere", "Password must contain at least 1 number."},
		{"no-upper-1234", "Password must contain at least 1 uppercase letter."},
	}
	// One instance for all: a refused password sets nothing up.
	url, emu := n8ntest.Start(t)
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			c, _ := n8n.New(url, n8n.Options{})
			_, err := c.Bootstrap(t.Context(), ownerEmail, tt.password)
			var e *n8n.Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *n8n.Error", err)
			}
			if diff := cmp.Diff(&n8n.Error{Method: "POST", Path: "/rest/owner/setup", Status: 400, Message: tt.want}, e); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
			if strings.Contains(err.Error(), tt.password) || n8n.IsRetryable(err) {
				t.Errorf("err %v: leaks the password or says retryable", err)
			}
			if emu != nil && emu.OwnerSetUp() {
				t.Error("owner set up with a bad password")
			}
		})
	}
}

func TestPublicAPIAuth(t *testing.T) {
	_, c, _ := setup(t)
	tests := []struct {
		name, key, want string
	}{
		{"no key", "", "'X-N8N-API-KEY' header required"},
		{"unknown key", "n8n_api_nope", "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.WithAPIKey(tt.key).GetWorkflow(t.Context(), "x")
			var e *n8n.Error
			if !errors.As(err, &e) || e.Status != 401 || e.Message != tt.want {
				t.Fatalf("err = %v, want 401 %q", err, tt.want)
			}
		})
	}
}

func TestCredentials(t *testing.T) {
	ctx := t.Context()
	url, emu := n8ntest.Start(t)
	c, logs := bootstrapped(t, url)
	const secret = "sk-very-secret-value"

	for _, typ := range []string{"gmailOAuth2", "openAiApi", "httpHeaderAuth", "slackApi"} {
		if _, err := c.CredentialSchema(ctx, typ); err != nil {
			t.Errorf("schema %s: %v", typ, err)
		}
	}
	if _, err := c.CredentialSchema(ctx, "noSuchApi"); !n8n.IsNotFound(err) {
		t.Errorf("schema of an unknown type: %v, want 404", err)
	}

	// n8n's own schema wants "header": false unless headerName and
	// headerValue are given.
	good := n8n.NewCredential{Name: "openai", Type: "openAiApi", Data: json.RawMessage(`{"apiKey":"` + secret + `","header":false}`)}
	a, err := c.CreateCredential(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateCredential(ctx, good) // duplicate names are accepted
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == "" || a.ID == b.ID || a.Name != "openai" || a.Type != "openAiApi" {
		t.Fatalf("created %+v and %+v: want two ids for the same name", a, b)
	}

	bad := []struct {
		name string
		cred n8n.NewCredential
		want string
	}{
		{"missing field", n8n.NewCredential{Name: "o", Type: "openAiApi", Data: json.RawMessage(`{"header":false}`)},
			`request.body.data requires property "apiKey"`},
		{"missing conditional field", n8n.NewCredential{Name: "s", Type: "slackApi", Data: json.RawMessage(`{"accessToken":"` + secret + `"}`)},
			`request.body.data does not match allOf schema [subschema 0] with 2 error[s]:,` +
				`request.body.data does not match allOf schema [subschema 0] with 1 error[s]:,request.body.data requires property "notice"`},
		{"prohibited field", n8n.NewCredential{Name: "o", Type: "openAiApi", Data: json.RawMessage(`{"apiKey":"` + secret + `","header":false,"headerName":"X"}`)},
			`request.body.data does not match allOf schema [subschema 0] with 2 error[s]:,` +
				`request.body.data does not match allOf schema [subschema 0] with 1 error[s]:,request.body.data is of prohibited type [object Object]`},
		{"gmail without its conditional fields", n8n.NewCredential{Name: "g", Type: "gmailOAuth2", Data: json.RawMessage(`{"clientId":"c","clientSecret":"` + secret + `"}`)},
			`request.body.data does not match allOf schema [subschema 0] with 2 error[s]:,` +
				`request.body.data does not match allOf schema [subschema 0] with 1 error[s]:,request.body.data requires property "serverUrl",` +
				`request.body.data does not match allOf schema [subschema 1] with 4 error[s]:,` +
				`request.body.data does not match allOf schema [subschema 0] with 1 error[s]:,request.body.data requires property "sendAdditionalBodyProperties",` +
				`request.body.data does not match allOf schema [subschema 1] with 1 error[s]:,request.body.data requires property "additionalBodyProperties"`},
		{"extra field", n8n.NewCredential{Name: "s", Type: "slackApi", Data: json.RawMessage(`{"accessToken":"` + secret + `","signatureSecret":"s","x":1}`)},
			`request.body.data is not allowed to have the additional property "x"`},
		{"wrong type", n8n.NewCredential{Name: "h", Type: "httpHeaderAuth", Data: json.RawMessage(`{"name":"Authorization","value":5}`)},
			`request.body.data is not of a type(s) string`},
		{"unknown type", n8n.NewCredential{Name: "u", Type: "noSuchApi", Data: json.RawMessage(`{}`)},
			"req.body.type is not a known type"},
		{"no data", n8n.NewCredential{Name: "u", Type: "openAiApi"},
			"request/body/data must be object"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.CreateCredential(ctx, tt.cred)
			var e *n8n.Error
			if !errors.As(err, &e) || e.Status != 400 {
				t.Fatalf("err = %v, want 400", err)
			}
			want := tt.want
			if len(want) > 300 { // the client shortens n8n's messages
				want = want[:300] + "…"
			}
			if diff := cmp.Diff(want, e.Message); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(fmt.Sprint(tt.cred), secret) ||
				strings.Contains(fmt.Sprintf("%#v", tt.cred), secret) {
				t.Error("the secret shows in an error or in the credential's formatting")
			}
		})
	}

	if err := c.DeleteCredential(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteCredential(ctx, a.ID); !n8n.IsNotFound(err) {
		t.Errorf("second delete: %v, want 404", err)
	}
	if emu != nil {
		stored := emu.Credentials()
		if len(stored) != 1 || stored[0].ID != b.ID || string(stored[0].Data) != string(good.Data) {
			t.Errorf("stored %+v, want only %s with its data", stored, b.ID)
		}
	}
	stored, err := n8ntest.Credentials(ctx, url, ownerEmail, ownerPassword)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]n8ntest.StoredCredential{{ID: b.ID, Name: "openai", Type: "openAiApi"}}, stored); diff != "" {
		t.Errorf("credentials n8n holds (-want +got):\n%s", diff)
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), ownerPassword) {
		t.Errorf("a secret is in the logs:\n%s", logs)
	}
}

// Credentials can't be listed or patched in n8n 1.x.
func TestCredentialsMethodNotAllowed(t *testing.T) {
	url, _ := n8ntest.Start(t)
	key := bootstrapKey(t, url)
	for _, method := range []string{"GET /api/v1/credentials", "PATCH /api/v1/credentials/abc"} {
		m, path, _ := strings.Cut(method, " ")
		req, _ := http.NewRequestWithContext(t.Context(), m, url+path, strings.NewReader(`{}`))
		req.Header.Set("X-N8N-API-KEY", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s: %d, want 405", method, resp.StatusCode)
		}
	}
}

func bootstrapKey(t *testing.T, url string) string {
	t.Helper()
	c, _ := n8n.New(url, n8n.Options{})
	key, err := c.Bootstrap(t.Context(), ownerEmail, ownerPassword)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestWorkflowLifecycle(t *testing.T) {
	ctx := t.Context()
	_, c, _ := setup(t)
	spec := template(t, "click-tracker")

	wf, err := c.CreateWorkflow(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if wf.Active || wf.Name != "Click Tracker" || wf.VersionID == "" {
		t.Fatalf("created %+v: want an inactive Click Tracker with a version", wf)
	}
	got, err := c.GetWorkflow(ctx, wf.ID)
	if err != nil {
		t.Fatal(err)
	}
	// n8n adds its defaults to the settings.
	var settings map[string]any
	_ = json.Unmarshal(spec.Settings, &settings)
	settings["callerPolicy"], settings["availableInMCP"] = "workflowsFromSameOwner", false
	wantSettings, _ := json.Marshal(settings)
	if !jsonEqual(t, got.Nodes, spec.Nodes) || !jsonEqual(t, got.Settings, wantSettings) {
		t.Errorf("get returned other nodes or settings than were created: settings %s", got.Settings)
	}

	for range 2 { // idempotent
		if wf, err = c.ActivateWorkflow(ctx, wf.ID); err != nil || !wf.Active {
			t.Fatalf("activate: %+v, %v", wf, err)
		}
	}
	spec.Name = "Click Tracker v2"
	upd, err := c.UpdateWorkflow(ctx, wf.ID, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !upd.Active || upd.Name != "Click Tracker v2" || upd.VersionID == wf.VersionID {
		t.Errorf("updated %+v: want still active, renamed, new version", upd)
	}
	for range 2 {
		if wf, err = c.DeactivateWorkflow(ctx, wf.ID); err != nil || wf.Active {
			t.Fatalf("deactivate: %+v, %v", wf, err)
		}
	}
	if err := c.DeleteWorkflow(ctx, wf.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetWorkflow(ctx, wf.ID); !n8n.IsNotFound(err) {
		t.Errorf("get after delete: %v, want 404", err)
	}
	if err := c.DeleteWorkflow(ctx, wf.ID); !n8n.IsNotFound(err) {
		t.Errorf("second delete: %v, want 404", err)
	}
	if left, err := c.ListWorkflows(ctx, n8n.WorkflowFilter{}); err != nil || len(left) != 0 {
		t.Errorf("%d workflows left (%v)", len(left), err)
	}
}

func jsonEqual(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatal(err)
	}
	return cmp.Equal(x, y)
}

func TestWorkflowValidation(t *testing.T) {
	ctx := t.Context()
	_, c, _ := setup(t)
	base := template(t, "email-prep")
	tests := []struct {
		name string
		edit func(*n8n.WorkflowSpec)
		want string
	}{
		{"settings field unknown", func(s *n8n.WorkflowSpec) { s.Settings = json.RawMessage(`{"color":"red"}`) },
			"request/body/settings must NOT have additional properties"},
		{"settings enum", func(s *n8n.WorkflowSpec) { s.Settings = json.RawMessage(`{"saveDataErrorExecution":"some"}`) },
			"request/body/settings/saveDataErrorExecution must be equal to one of the allowed values: all, none"},
		{"node field unknown", func(s *n8n.WorkflowSpec) { s.Nodes = json.RawMessage(`[{"name":"a","type":"x","color":1}]`) },
			"request/body/nodes/0 must NOT have additional properties"},
		{"node read-only", func(s *n8n.WorkflowSpec) { s.Nodes = json.RawMessage(`[{"name":"a","createdAt":"now"}]`) },
			"request/body/nodes/0/createdAt is read-only"},
		{"nodes not array", func(s *n8n.WorkflowSpec) { s.Nodes = json.RawMessage(`{}`) },
			"request/body/nodes must be array"},
		{"staticData number", func(s *n8n.WorkflowSpec) { s.StaticData = json.RawMessage(`5`) },
			"request/body/staticData must be string, request/body/staticData must be object, request/body/staticData must match a schema in anyOf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := base
			tt.edit(&spec)
			_, err := c.CreateWorkflow(ctx, spec)
			var e *n8n.Error
			if !errors.As(err, &e) || e.Status != 400 {
				t.Fatalf("err = %v, want 400", err)
			}
			if diff := cmp.Diff(tt.want, e.Message); diff != "" {
				t.Errorf("message (-want +got):\n%s", diff)
			}
		})
	}
}

// Every example template passes validation and activates.
func TestExampleTemplatesActivate(t *testing.T) {
	ctx := t.Context()
	_, c, _ := setup(t)
	names := testkit.Glob(t, filepath.Join("..", "..", "state-example", "templates", "workflows", "*.json"))
	if len(names) == 0 {
		t.Fatal("no templates")
	}
	for _, p := range names {
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		t.Run(name, func(t *testing.T) {
			wf, err := c.CreateWorkflow(ctx, template(t, name))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.ActivateWorkflow(ctx, wf.ID); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestActivationConflicts(t *testing.T) {
	ctx := t.Context()
	_, c, _ := setup(t)
	spec := template(t, "click-tracker")
	a, _ := c.CreateWorkflow(ctx, spec)
	b, _ := c.CreateWorkflow(ctx, spec)
	if _, err := c.ActivateWorkflow(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	_, err := c.ActivateWorkflow(ctx, b.ID)
	if want := `The URL path that the "Link Clicked" node uses is already taken.`; n8n.StatusOf(err) != 400 || !strings.Contains(err.Error(), want) {
		t.Fatalf("second activation with the same webhooks: %v, want 400 %q", err, want)
	}
	if _, err := c.DeactivateWorkflow(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ActivateWorkflow(ctx, b.ID); err != nil {
		t.Fatalf("activation once the other is off: %v", err)
	}

	noTrigger := n8n.WorkflowSpec{Name: "No trigger", Nodes: json.RawMessage(`[{"name":"Code","type":"n8n-nodes-base.code","typeVersion":2,"position":[0,0],"parameters":{}}]`)}
	wf, err := c.CreateWorkflow(ctx, noTrigger)
	if err != nil {
		t.Fatal(err)
	}
	want := `Workflow "No trigger" (ID: ` + wf.ID + `) has no node to start the workflow - at least one trigger, poller or webhook node is required`
	if _, err := c.ActivateWorkflow(ctx, wf.ID); n8n.StatusOf(err) != 400 || !strings.HasSuffix(err.Error(), want) {
		t.Errorf("activating a workflow without a trigger: %v, want 400 %q", err, want)
	}
}

func TestListPaginationAndTags(t *testing.T) {
	ctx := t.Context()
	_, c, _ := setup(t)
	managed, err := c.EnsureTag(ctx, "genesis-managed")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateTag(ctx, "genesis-managed"); n8n.StatusOf(err) != http.StatusConflict {
		t.Errorf("duplicate tag: %v, want 409", err)
	}
	before := c.Writes()
	again, err := c.EnsureTag(ctx, "genesis-managed")
	if err != nil || again != managed || c.Writes() != before {
		t.Errorf("EnsureTag of an existing tag: %+v, %v, %d writes", again, err, c.Writes()-before)
	}

	var want []string
	for i := range 7 {
		spec := template(t, "email-prep")
		spec.Name = fmt.Sprintf("wf-%d", i)
		wf, err := c.CreateWorkflow(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			tags, err := c.SetWorkflowTags(ctx, wf.ID, []string{managed.ID})
			if err != nil || len(tags) != 1 || tags[0] != managed {
				t.Fatalf("set tags: %+v, %v", tags, err)
			}
			want = append(want, spec.Name)
		}
	}
	if _, err := c.SetWorkflowTags(ctx, "nope", nil); !n8n.IsNotFound(err) {
		t.Errorf("tags of a missing workflow: %v, want 404", err)
	}

	all, err := c.ListWorkflows(ctx, n8n.WorkflowFilter{PageSize: 2})
	if err != nil || len(all) != 7 {
		t.Fatalf("list all by 2: %d workflows, %v", len(all), err)
	}
	ours, err := c.ListWorkflows(ctx, n8n.WorkflowFilter{Tags: []string{"genesis-managed"}, PageSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, wf := range ours {
		got = append(got, wf.Name)
		if len(wf.Tags) != 1 || wf.Tags[0].Name != "genesis-managed" {
			t.Errorf("%s tags %+v", wf.Name, wf.Tags)
		}
	}
	sort.Strings(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tagged workflows (-want +got):\n%s", diff)
	}
	active := true
	if act, err := c.ListWorkflows(ctx, n8n.WorkflowFilter{Active: &active}); err != nil || len(act) != 0 {
		t.Errorf("active list: %d, %v", len(act), err)
	}
}

func TestStartingUp(t *testing.T) {
	ctx := t.Context()
	emu, c := setupEmu(t)
	emu.SetMode(n8nemu.StartingUp)

	if err := c.Ready(ctx); !errors.Is(err, n8n.ErrStartingUp) {
		t.Errorf("ready while starting: %v, want ErrStartingUp", err)
	}
	_, err := c.ListWorkflows(ctx, n8n.WorkflowFilter{})
	if !errors.Is(err, n8n.ErrStartingUp) || !n8n.IsRetryable(err) {
		t.Errorf("list while starting: %v, want retryable ErrStartingUp", err)
	}
	if _, err := c.CreateWorkflow(ctx, template(t, "email-prep")); !errors.Is(err, n8n.ErrStartingUp) {
		t.Errorf("create while starting (a 200 text/plain answer): %v, want ErrStartingUp", err)
	}
	if n := len(emu.Workflows()); n != 0 {
		t.Errorf("%d workflows created while starting", n)
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := c.WaitReady(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("WaitReady past its deadline: %v", err)
	}

	go func() {
		time.Sleep(50 * time.Millisecond)
		emu.SetMode(n8nemu.Ready)
	}()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if _, err := c.ListWorkflows(ctx, n8n.WorkflowFilter{}); err != nil {
		t.Errorf("list once ready: %v", err)
	}
	if v, err := c.VersionAs(ctx, ownerEmail, ownerPassword); err != nil || v != n8nemu.Version {
		t.Errorf("version %q, %v", v, err)
	}
}

// TestVersionNeedsOwner: n8n 1.x gives its version (versionCli) only in
// the settings of a signed-in user, so the agent asks as the owner.
func TestVersionNeedsOwner(t *testing.T) {
	ctx := t.Context()
	url, _ := n8ntest.Start(t)
	c, _ := bootstrapped(t, url)
	if v, err := c.Version(ctx); err == nil {
		t.Errorf("anonymous version %q: n8n leaves versionCli out of its public settings", v)
	}
	v, err := c.VersionAs(ctx, ownerEmail, ownerPassword)
	if err != nil || !strings.HasPrefix(v, "1.123.") {
		t.Errorf("version as the owner %q, %v", v, err)
	}
	if _, err := c.VersionAs(ctx, ownerEmail, "Wr0ng-password"); n8n.StatusOf(err) != 401 {
		t.Errorf("version with a wrong password: %v, want a 401", err)
	}
}

// Right after readiness turns 200, n8n 1.123 has not mounted its routes
// yet and answers Express's 404 page: "not yet", not "no such route".
func TestMounting(t *testing.T) {
	ctx := t.Context()
	emu := n8nemu.Start(t)
	emu.SetMode(n8nemu.Mounting)
	c, _ := n8n.New(emu.URL, n8n.Options{PollInterval: 10 * time.Millisecond})
	if err := c.Ready(ctx); !errors.Is(err, n8n.ErrStartingUp) {
		t.Errorf("ready while mounting: %v, want ErrStartingUp", err)
	}
	_, err := c.Bootstrap(ctx, ownerEmail, ownerPassword)
	if !errors.Is(err, n8n.ErrStartingUp) || !n8n.IsRetryable(err) {
		t.Errorf("bootstrap while mounting: %v, want retryable ErrStartingUp", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		emu.SetMode(n8nemu.Ready)
	}()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if _, err := c.Bootstrap(ctx, ownerEmail, ownerPassword); err != nil {
		t.Errorf("bootstrap once mounted: %v", err)
	}
}

func TestDown(t *testing.T) {
	ctx := t.Context()
	emu, c := setupEmu(t)
	emu.SetMode(n8nemu.Down)
	_, err := c.CreateWorkflow(ctx, template(t, "email-prep"))
	var e *n8n.Error
	if err == nil || errors.As(err, &e) || !n8n.IsRetryable(err) {
		t.Fatalf("create while down: %v, want a retryable transport error", err)
	}
	if err := c.Ready(ctx); err == nil {
		t.Error("ready while down")
	}
	emu.SetMode(n8nemu.Ready)
	if _, err := c.CreateWorkflow(ctx, template(t, "email-prep")); err != nil {
		t.Errorf("create once back: %v", err)
	}
}

// The client's write count matches the requests n8n saw, and reads cost none.
func TestWritesCount(t *testing.T) {
	ctx := t.Context()
	emu, c, _ := setup(t)
	if emu != nil {
		emu.ResetCalls()
	}
	start := c.Writes()

	cred, err := c.CreateCredential(ctx, n8n.NewCredential{Name: "slack", Type: "slackApi", Data: json.RawMessage(`{"accessToken":"xoxb-1","signatureSecret":"sig"}`)})
	if err != nil {
		t.Fatal(err)
	}
	wf, err := c.CreateWorkflow(ctx, template(t, "email-prep"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ActivateWorkflow(ctx, wf.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateWorkflow(ctx, n8n.WorkflowSpec{Name: "bad", Settings: json.RawMessage(`{"x":1}`)}); err == nil {
		t.Fatal("bad workflow accepted")
	}
	if err := c.DeleteCredential(ctx, cred.ID); err != nil {
		t.Fatal(err)
	}
	if got, want := c.Writes()-start, int64(5); got != want {
		t.Errorf("client counted %d writes, want %d", got, want)
	}
	if emu != nil {
		if got := emu.Writes(); int64(got) != c.Writes()-start {
			t.Errorf("emulator saw %d writes, client counted %d", got, c.Writes()-start)
		}
	}

	before := c.Writes()
	if _, err := c.GetWorkflow(ctx, wf.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListWorkflows(ctx, n8n.WorkflowFilter{}); err != nil {
		t.Fatal(err)
	}
	if c.Writes() != before {
		t.Errorf("reads counted as writes")
	}
}

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:5678", "ftp://x", "http://"} {
		if _, err := n8n.New(u, n8n.Options{}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func TestSpecFromExport(t *testing.T) {
	export := `{"id":"abc","name":"W","active":true,"tags":[{"id":"1"}],"meta":{"x":1},"pinData":{},"versionId":"v",
		"nodes":[{"name":"n"}],"connections":{},"settings":{"executionOrder":"v1"},"staticData":null}`
	spec, err := n8n.SpecFromExport([]byte(export))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(spec)
	want := `{"name":"W","nodes":[{"name":"n"}],"connections":{},"settings":{"executionOrder":"v1"}}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("spec (-want +got):\n%s", diff)
	}
	if _, err := n8n.SpecFromExport([]byte(`{"nodes":[]}`)); err == nil {
		t.Error("export without a name accepted")
	}
}
