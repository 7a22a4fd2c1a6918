package n8n_test

import (
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/fakes/n8nemu"
	"genesis.dev/fleet/fakes/n8ntest"
)

// The tests of this file, like most of client_test.go, run against a real
// n8n when GENESIS_N8N_BIN is set (make e2e-n8n) and against the emulator
// otherwise; see package n8ntest.

// rawCall sends body to the public API and returns the status and n8n's
// message.
func rawCall(t *testing.T, url, key, method, path string, body any) (int, string) {
	t.Helper()
	data, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), method, url+path, strings.NewReader(string(data)))
	req.Header.Set("X-N8N-API-KEY", key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var e struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(out, &e)
	return resp.StatusCode, e.Message
}

// Read-only and unknown workflow fields are refused on create and update.
func TestWorkflowReadOnlyFields(t *testing.T) {
	url, _ := n8ntest.Start(t)
	key := bootstrapKey(t, url)
	c, _ := n8n.New(url, n8n.Options{APIKey: key})
	spec := template(t, "click-tracker")
	wf, err := c.CreateWorkflow(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		field string
		value any
		want  string
	}{
		{"id", "abc", "request/body/id is read-only"},
		{"active", true, "request/body/active is read-only"},
		{"tags", []any{}, "request/body/tags is read-only"},
		{"createdAt", "2025-01-01T00:00:00.000Z", "request/body/createdAt is read-only"},
		{"color", "red", "request/body must NOT have additional properties"},
	}
	for _, tt := range tests {
		t.Run(tt.field, func(t *testing.T) {
			body := map[string]any{"name": spec.Name, "nodes": spec.Nodes, "connections": spec.Connections,
				"settings": spec.Settings, tt.field: tt.value}
			for _, call := range []struct{ method, path string }{
				{http.MethodPost, "/api/v1/workflows"}, {http.MethodPut, "/api/v1/workflows/" + wf.ID},
			} {
				status, msg := rawCall(t, url, key, call.method, call.path, body)
				if status != http.StatusBadRequest || msg != tt.want {
					t.Errorf("%s %s with %s: %d %q, want 400 %q", call.method, call.path, tt.field, status, msg, tt.want)
				}
			}
		})
	}
}

// openAPIFile is n8n 1.123.81's own description of its public API, copied
// from node_modules/n8n/dist/public-api/v1/openapi.yml.
var openAPIFile = filepath.Join("..", "..", "fakes", "n8nemu", "testdata", "openapi-1.123.81.yml")

// openAPIRoutes returns the "METHOD /api/v1/path/{}" routes of an OpenAPI
// document.
func openAPIRoutes(t *testing.T, doc []byte) map[string]bool {
	t.Helper()
	var spec struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(doc, &spec); err != nil {
		t.Fatalf("openapi.yml: %v", err)
	}
	if len(spec.Paths) == 0 {
		t.Fatal("openapi.yml has no paths")
	}
	out := map[string]bool{}
	for p, ops := range spec.Paths {
		for m := range ops {
			switch m {
			case "get", "put", "post", "delete", "patch":
				out[strings.ToUpper(m)+" "+normPath("/api/v1"+p)] = true
			}
		}
	}
	return out
}

var pathParam = regexp.MustCompile(`\{[^}]*\}`)

func normPath(p string) string { return pathParam.ReplaceAllString(p, "{}") }

// Every public API route the emulator serves is in n8n's OpenAPI document
// with the same method: the committed copy always, and the document a real
// n8n serves at /api/v1/openapi.yml when there is one (which must describe
// the same routes as the copy).
func TestOpenAPIContract(t *testing.T) {
	want, err := os.ReadFile(openAPIFile)
	if err != nil {
		t.Fatal(err)
	}
	routes := openAPIRoutes(t, want)
	if n8ntest.Real() {
		url, _ := n8ntest.Start(t)
		resp, err := http.Get(url + "/api/v1/openapi.yml")
		if err != nil {
			t.Fatal(err)
		}
		served, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			// n8n answers the route with Express's sendFile, which refuses
			// a path with a dot directory (.cache/n8n-1.123.81/...) with a
			// 404: read the file it would have sent.
			bin, err := filepath.EvalSymlinks(os.Getenv(n8ntest.EnvBin))
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(filepath.Dir(bin), "..", "dist", "public-api", "v1", "openapi.yml")
			t.Logf("GET /api/v1/openapi.yml: 404 (n8n's path has a dot directory); reading %s", file)
			if served, err = os.ReadFile(file); err != nil {
				t.Fatal(err)
			}
		} else if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/v1/openapi.yml: %d %s", resp.StatusCode, served)
		}
		got := openAPIRoutes(t, served)
		if diff := cmp.Diff(slices.Sorted(maps.Keys(routes)), slices.Sorted(maps.Keys(got))); diff != "" {
			t.Errorf("routes of the served openapi.yml differ from %s (-copy +served):\n%s", openAPIFile, diff)
		}
		routes = got
	}
	emuRoutes := n8nemu.New(1).PublicRoutes()
	if len(emuRoutes) < 10 {
		t.Fatalf("emulator lists %d public routes", len(emuRoutes))
	}
	for _, r := range emuRoutes {
		if !routes[normPath(r)] {
			t.Errorf("the emulator serves %s, n8n's openapi.yml has no such route", r)
		}
	}
}
