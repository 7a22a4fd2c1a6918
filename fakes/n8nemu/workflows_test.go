package n8nemu

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/testkit"
)

const minimal = `{"name":"w","nodes":[],"connections":{},"settings":{}}`

// with returns the minimal body with one key set to a raw JSON value.
func with(key, value string) string {
	return strings.TrimSuffix(minimal, "}") + `,"` + key + `":` + value + `}`
}

func TestDecodeWorkflowErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"not json", `{`, "request/body must be object"},
		{"array", `[]`, "request/body must be object"},
		{"null", `null`, "request/body must be object"},
		{"id", with("id", `"abc"`), "request/body/id is read-only"},
		{"active", with("active", `true`), "request/body/active is read-only"},
		{"tags", with("tags", `[]`), "request/body/tags is read-only"},
		{"meta", with("meta", `{}`), "request/body/meta is read-only"},
		{"versionId", with("versionId", `"v"`), "request/body/versionId is read-only"},
		{"pinData (not in 1.123's schema)", with("pinData", `{}`), "request/body must NOT have additional properties"},
		{"extra key", with("color", `"red"`), "request/body must NOT have additional properties"},
		{"no settings", `{"name":"w","nodes":[],"connections":{}}`, "request/body must have required property 'settings'"},
		{"nothing", `{}`, "request/body must have required property 'connections', request/body must have required property 'name', " +
			"request/body must have required property 'nodes', request/body must have required property 'settings'"},
		{"name number", `{"name":1,"nodes":[],"connections":{},"settings":{}}`, "request/body/name must be string"},
		{"connections array", `{"name":"w","nodes":[],"connections":[],"settings":{}}`, "request/body/connections must be object"},
		{"node not object", `{"name":"w","nodes":[1],"connections":{},"settings":{}}`, "request/body/nodes/0 must be object"},
		{"node position", `{"name":"w","nodes":[{"position":[0,"a"]}],"connections":{},"settings":{}}`, "request/body/nodes/0/position/1 must be number"},
		{"two errors", with("id", `"a"`)[:len(with("id", `"a"`))-1] + `,"active":false}`, "request/body/active is read-only, request/body/id is read-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeWorkflow([]byte(tt.body))
			if err == nil {
				t.Fatal("accepted")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeWorkflowTemplates(t *testing.T) {
	paths := testkit.Glob(t, "../../state-example/templates/workflows/*.json")
	if len(paths) == 0 {
		t.Fatal("no templates")
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		wb, err := decodeWorkflow(data)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(p), err)
			continue
		}
		if !wb.hasTrigger() {
			t.Errorf("%s: no trigger found", filepath.Base(p))
		}
	}
}

func TestWebhookKeys(t *testing.T) {
	body := `{"name":"w","connections":{},"settings":{},"nodes":[
		{"name":"a","type":"n8n-nodes-base.webhook","webhookId":"W1","parameters":{"path":"c/:id","httpMethod":"GET"}},
		{"name":"b","type":"n8n-nodes-base.webhook","parameters":{"path":"/open/"}},
		{"name":"c","type":"n8n-nodes-base.webhook","disabled":true,"parameters":{"path":"off","httpMethod":"POST"}}]}`
	wb, err := decodeWorkflow([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"GET W1/c/:id", "GET open"}, wb.webhooks()); diff != "" {
		t.Errorf("webhooks (-want +got):\n%s", diff)
	}
}

// FuzzDecodeWorkflow checks the decoder never panics and that what it
// accepts round-trips: the accepted body, re-encoded, decodes to the same.
func FuzzDecodeWorkflow(f *testing.F) {
	paths := testkit.Glob(f, "../../state-example/templates/workflows/*.json")
	for _, p := range paths {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(minimal))
	f.Add([]byte(with("id", `"x"`)))
	f.Add([]byte(`{"name":"w","nodes":[{"position":[1,2],"parameters":{"path":"p"}}],"connections":{},"settings":{"callerPolicy":"any"},"staticData":"s"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		wb, err := decodeWorkflow(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		_ = wb.hasTrigger()
		_ = wb.webhooks()
		again := map[string]json.RawMessage{"name": mustJSON(t, wb.Name), "nodes": wb.Nodes, "connections": wb.Connections, "settings": wb.Settings}
		if wb.StaticData != nil {
			again["staticData"] = wb.StaticData
		}
		wb2, err := decodeWorkflow(mustJSON(t, again))
		if err != nil {
			t.Fatalf("re-encoded accepted body refused: %v", err)
		}
		if diff := cmp.Diff(wb, wb2, cmp.AllowUnexported(workflowBody{})); diff != "" {
			t.Fatalf("round trip differs (-first +second):\n%s", diff)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// The raw answers tests and the client depend on, status and body exactly.
func TestRawAnswers(t *testing.T) {
	s := Start(t)
	get := func(path, key string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.URL+path, nil)
		if key != "" {
			req.Header.Set("X-N8N-API-KEY", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), strings.TrimSpace(string(body))
	}
	type answer struct {
		Status      int
		ContentType string
		Body        string
	}
	check := func(name, path, key string, want answer) {
		t.Helper()
		st, ct, body := get(path, key)
		if diff := cmp.Diff(want, answer{st, ct, body}); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	const js = "application/json; charset=utf-8"
	check("no key", "/api/v1/workflows", "", answer{401, js, `{"message":"'X-N8N-API-KEY' header required"}`})
	check("bad key", "/api/v1/workflows", "nope", answer{401, js, `{"message":"unauthorized"}`})
	check("ready", "/healthz/readiness", "", answer{200, js, `{"status":"ok"}`})

	s.SetMode(StartingUp)
	check("readiness while starting", "/healthz/readiness", "", answer{503, js, `{"status":"error"}`})
	check("healthz while starting", "/healthz", "", answer{200, js, `{"status":"ok"}`})
	check("api while starting", "/api/v1/workflows", "", answer{200, "text/plain; charset=utf-8", StartingUpBody})
	check("rest while starting", "/rest/settings", "", answer{200, "text/plain; charset=utf-8", StartingUpBody})

	s.SetMode(Down)
	if _, err := http.Get(s.URL + "/healthz"); err == nil {
		t.Error("an answer while down")
	}
	calls := s.Calls()
	if calls["down"] < 1 { // the transport may retry a GET on a dropped connection
		t.Errorf("down calls = %d, want at least 1", calls["down"])
	}
	delete(calls, "down")
	want := map[string]int{"GET /api/v1/workflows": 2, "GET /healthz/readiness": 1, "starting": 2}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}
