package schema

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the '# want:' lines of bad fixtures with the errors produced")

// rewriteWants replaces a fixture's want lines with got, keeping their count
// so every other line keeps its number.
func rewriteWants(t *testing.T, f fixture, got []string) {
	t.Helper()
	if len(got) != len(f.want) {
		t.Fatalf("-update: %s has %d want lines but produced %d errors; edit it by hand", f.path, len(f.want), len(got))
	}
	lines := strings.SplitAfter(string(f.data), "\n")
	i := 0
	for n, l := range lines {
		if strings.HasPrefix(l, "# want: ") {
			lines[n] = "# want: " + got[i] + "\n"
			i++
		}
	}
	if err := os.WriteFile(f.path, []byte(strings.Join(lines, "")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fixture is one testdata file: its contents and the errors it must produce
// (its "# want: L:C: message" lines; none for *.good.yaml).
type fixture struct {
	path string
	data []byte
	want []string
}

func loadFixtures(t testing.TB, dir string) []fixture {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", dir, "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no fixtures in testdata/%s: %v", dir, err)
	}
	var out []fixture
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f := fixture{path: p, data: data}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			if w, ok := strings.CutPrefix(sc.Text(), "# want: "); ok {
				f.want = append(f.want, w)
			}
		}
		if strings.HasSuffix(p, ".bad.yaml") && len(f.want) == 0 {
			t.Fatalf("%s: a bad fixture needs at least one '# want:' line", p)
		}
		out = append(out, f)
	}
	return out
}

// fixtureName is the repository path a fixture stands for:
// testdata/tenants/ws-a.good.yaml is tenants/ws-a.yaml.
func fixtureName(dir, p string) string {
	base := filepath.Base(p)
	for _, s := range []string{".good.yaml", ".bad.yaml"} {
		base = strings.TrimSuffix(base, s)
	}
	if dir == "fleets" {
		return FleetFile
	}
	return TenantsDir + "/" + base + ".yaml"
}

// short formats errors without the file name, as the want lines are written.
func short(errs Errors) []string {
	var out []string
	for _, e := range errs {
		out = append(out, fmt.Sprintf("%d:%d: %s", e.Line, e.Col, e.Message))
	}
	return out
}

func testContext(t testing.TB) Context {
	t.Helper()
	repo := LoadDir(os.DirFS("testdata/context"))
	if len(repo.Errors) > 0 {
		t.Fatalf("testdata context is invalid:\n%v", repo.Errors)
	}
	return Context{Fleet: repo.Fleet, Templates: repo.Templates}
}

func TestTenantFixtures(t *testing.T) {
	ctx := testContext(t)
	for _, f := range loadFixtures(t, "tenants") {
		t.Run(filepath.Base(f.path), func(t *testing.T) {
			name := fixtureName("tenants", f.path)
			tenant, errs := DecodeTenant(name, f.data)
			if len(errs) == 0 {
				errs = tenant.Check(name, ctx)
			}
			for _, e := range errs {
				if e.File != name {
					t.Errorf("error names file %q, want %q", e.File, name)
				}
			}
			if *update && len(f.want) > 0 {
				rewriteWants(t, f, short(errs))
				return
			}
			if diff := cmp.Diff(f.want, short(errs)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFleetFixtures(t *testing.T) {
	for _, f := range loadFixtures(t, "fleets") {
		t.Run(filepath.Base(f.path), func(t *testing.T) {
			fleet, errs := DecodeFleet(FleetFile, f.data)
			if *update && len(f.want) > 0 {
				rewriteWants(t, f, short(errs))
				return
			}
			if diff := cmp.Diff(f.want, short(errs)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if len(errs) == 0 && fleet.Spec.SnapshotRetention.Std() != DefaultSnapshotRetention {
				t.Errorf("snapshotRetention = %v, want the default %v", fleet.Spec.SnapshotRetention, DefaultSnapshotRetention)
			}
		})
	}
}

func TestDecodedTenant(t *testing.T) {
	data, err := os.ReadFile("testdata/tenants/ws-full.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tenant, errs := DecodeTenant("tenants/ws-full.yaml", data)
	if errs != nil {
		t.Fatal(errs)
	}
	ctx := testContext(t)
	got := struct {
		ID, Size, Version, Idle string
		Domains                 []string
		Creds                   int
		Params                  map[string]string
	}{tenant.Metadata.ID, tenant.Size(ctx.Fleet), tenant.N8NVersion(ctx.Fleet), tenant.Spec.Hibernation.AfterIdle.String(),
		tenant.Spec.Domains, len(tenant.Spec.Credentials), tenant.Spec.Workflows[0].Params}
	want := struct {
		ID, Size, Version, Idle string
		Domains                 []string
		Creds                   int
		Params                  map[string]string
	}{"ws-full", "s-1vcpu-2gb", "1.123.81", "72h0m0s", []string{"track.full.example.com", "go.full.example.com"}, 2, map[string]string{"senderName": "Full Sales"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoded tenant (-want +got):\n%s", diff)
	}
	minimal, errs := DecodeTenant("tenants/ws-min.yaml", mustRead(t, "testdata/tenants/ws-min.good.yaml"))
	if errs != nil {
		t.Fatal(errs)
	}
	if got, want := minimal.Size(ctx.Fleet), "s-1vcpu-1gb"; got != want {
		t.Errorf("default size = %q, want %q", got, want)
	}
	if got, want := minimal.N8NVersion(ctx.Fleet), "1.123.81"; got != want {
		t.Errorf("default n8n version = %q, want %q", got, want)
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// repoFS builds a state repository from testdata plus extra files.
func repoFS(t testing.TB, extra map[string]string) fstest.MapFS {
	t.Helper()
	fsys := fstest.MapFS{
		FleetFile:                        {Data: mustRead(t, "testdata/context/genesis.yaml")},
		TemplatesDir + "/mail.json":      {Data: mustRead(t, "testdata/context/templates/workflows/mail.json")},
		TemplatesDir + "/ping.json":      {Data: mustRead(t, "testdata/context/templates/workflows/ping.json")},
		TenantsDir + "/ws-full.yaml":     {Data: mustRead(t, "testdata/tenants/ws-full.good.yaml")},
		TenantsDir + "/ws-min.yaml":      {Data: mustRead(t, "testdata/tenants/ws-min.good.yaml")},
		TenantsDir + "/README.md":        {Data: []byte("not a tenant")},
		TenantsDir + "/ws-gone.yaml":     {Data: mustRead(t, "testdata/tenants/ws-gone.good.yaml")},
		TenantsDir + "/sub/ignored.yaml": {Data: []byte("not: read")},
	}
	for name, data := range extra {
		if data == "" {
			delete(fsys, name)
			continue
		}
		fsys[name] = &fstest.MapFile{Data: []byte(data)}
	}
	return fsys
}

func simpleTenant(id, extra string) string {
	return fmt.Sprintf("apiVersion: genesis.dev/v1\nkind: Tenant\nmetadata: {id: %s, name: X, tier: starter}\nspec:\n  state: running\n  droplet: {region: nyc3}\n%s", id, extra)
}

func TestLoadDir(t *testing.T) {
	tests := []struct {
		name        string
		extra       map[string]string
		wantTenants []string
		wantErrors  []string
	}{{
		name:        "valid",
		wantTenants: []string{"ws-full", "ws-gone", "ws-min"},
	}, {
		name: "one bad tenant never hides the others",
		extra: map[string]string{
			TenantsDir + "/ws-bad.yaml":  simpleTenant("ws-bad", "  colour: red\n"),
			TenantsDir + "/ws-bad2.yaml": simpleTenant("ws-bad2", "  domains: [UPPER.example.com]\n"),
		},
		wantTenants: []string{"ws-full", "ws-gone", "ws-min"},
		wantErrors: []string{
			`tenants/ws-bad.yaml:7:3: unknown field "colour" in spec (known: state, droplet, n8n, hibernation, domains, credentials, workflows)`,
			`tenants/ws-bad2.yaml:7:13: spec.domains[0]: "UPPER.example.com" must be lowercase`,
		},
	}, {
		name: "a domain claimed twice: the first file by name keeps it",
		extra: map[string]string{
			TenantsDir + "/ws-zed.yaml": simpleTenant("ws-zed", "  domains: [new.example.com, go.full.example.com]\n"),
		},
		wantTenants: []string{"ws-full", "ws-gone", "ws-min"},
		wantErrors:  []string{`tenants/ws-zed.yaml:7:30: spec.domains[1]: domain "go.full.example.com" is already claimed by tenants/ws-full.yaml`},
	}, {
		name: "two files for one id",
		extra: map[string]string{
			TenantsDir + "/ws-min.yml": simpleTenant("ws-min", ""),
		},
		wantTenants: []string{"ws-full", "ws-gone", "ws-min"},
		wantErrors:  []string{`tenants/ws-min.yml:3:16: metadata.id: tenant "ws-min" is already declared in tenants/ws-min.yaml`},
	}, {
		name:        "invalid fleet: tenants still get their own errors",
		extra:       map[string]string{FleetFile: "apiVersion: genesis.dev/v1\nkind: Fleet\nspec: []\n", TenantsDir + "/ws-bad.yaml": simpleTenant("ws-bad", "  colour: red\n")},
		wantTenants: []string{"ws-full", "ws-gone", "ws-min"},
		wantErrors: []string{
			`genesis.yaml:3:7: spec: want a mapping, got a list`,
			`tenants/ws-bad.yaml:7:3: unknown field "colour" in spec (known: state, droplet, n8n, hibernation, domains, credentials, workflows)`,
		},
	}, {
		name:        "missing fleet",
		extra:       map[string]string{FleetFile: ""},
		wantTenants: []string{"ws-full", "ws-gone", "ws-min"},
		wantErrors:  []string{`genesis.yaml: file is missing`},
	}, {
		name:        "broken template",
		extra:       map[string]string{TemplatesDir + "/ping.json": "{\"name\": \"Ping\",\n \"nodes\": [}"},
		wantTenants: []string{"ws-gone", "ws-min"},
		wantErrors: []string{
			`templates/workflows/ping.json:2:12: invalid JSON: invalid character '}' looking for beginning of value`,
			`tenants/ws-full.yaml:40:17: spec.workflows[1].template: template "ping" is invalid (see templates/workflows/ping.json)`,
		},
	}, {
		name:        "oversized tenant file",
		extra:       map[string]string{TenantsDir + "/ws-big.yaml": simpleTenant("ws-big", "# "+strings.Repeat("x", MaxFileSize)+"\n")},
		wantTenants: []string{"ws-full", "ws-gone", "ws-min"},
		wantErrors:  []string{fmt.Sprintf("tenants/ws-big.yaml: file is larger than the %d-byte limit", MaxFileSize)},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := LoadDir(repoFS(t, tt.extra))
			var gotErrs []string
			for _, e := range repo.Errors {
				gotErrs = append(gotErrs, e.Error())
			}
			if diff := cmp.Diff(tt.wantErrors, gotErrs); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantTenants, repo.IDs()); diff != "" {
				t.Errorf("valid tenants (-want +got):\n%s", diff)
			}
			for id, file := range repo.Files {
				if IDFromPath(file) != id {
					t.Errorf("tenant %s recorded from file %s", id, file)
				}
			}
		})
	}
}

func TestTemplateRender(t *testing.T) {
	tpl, errs := ParseTemplate("mail.json", "mail", mustRead(t, "testdata/context/templates/workflows/mail.json"))
	if errs != nil {
		t.Fatal(errs)
	}
	if diff := cmp.Diff(map[string]string{"TEMPLATE_GMAIL_UUID": "gmailOAuth2", "TEMPLATE_OPENAI_UUID": "openAiApi"}, tpl.Placeholders); diff != "" {
		t.Errorf("placeholders (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"senderName"}, tpl.Params); diff != "" {
		t.Errorf("params (-want +got):\n%s", diff)
	}
	out, err := tpl.Render(map[string]string{"TEMPLATE_GMAIL_UUID": "abc123", "TEMPLATE_OPENAI_UUID": "def456"},
		map[string]string{"senderName": `Quote "and" <tag>`})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"id":"abc123"`, `"id":"def456"`, `"name":"Mail Quote \"and\" \u003ctag\u003e"`, `"sendTo":"={{ $json.to }}"`} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("rendered workflow lacks %s:\n%s", want, out)
		}
	}
	if bytes.Contains(out, []byte("TEMPLATE_")) || bytes.Contains(out, []byte("{{param.")) {
		t.Errorf("rendered workflow still holds a placeholder:\n%s", out)
	}
	// Canonical: embedding it in a document leaves its bytes alone.
	embedded, _ := json.Marshal(struct {
		W json.RawMessage `json:"w"`
	}{out})
	if !bytes.Contains(embedded, out) {
		t.Errorf("json.Marshal changes the rendered bytes:\n%s\n%s", out, embedded)
	}
	if _, err := tpl.Render(map[string]string{"TEMPLATE_GMAIL_UUID": "x"}, nil); err == nil ||
		!strings.Contains(err.Error(), "TEMPLATE_OPENAI_UUID") || !strings.Contains(err.Error(), "param.senderName") {
		t.Errorf("render with missing values: err = %v, want both missing names", err)
	}
}

func TestTemplateErrors(t *testing.T) {
	tests := []struct {
		name, data, want string
	}{
		{"no nodes", `{"name":"x","connections":{}}`, "1:1: workflow nodes are required"},
		{"type clash", `{"name":"x","connections":{},"nodes":[
 {"credentials":{"gmailOAuth2":{"id":"TEMPLATE_A_UUID"}}},
 {"credentials":{"openAiApi":{"id":"TEMPLATE_A_UUID"}}}]}`, "3:37: placeholder TEMPLATE_A_UUID is used as credential type gmailOAuth2 and as openAiApi"},
		{"not an object", `[1]`, "1:1: the workflow must be a JSON object, not array"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errs := ParseTemplate("x.json", "x", []byte(tt.data))
			got := short(errs)
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("errors = %q, want [%q]", got, tt.want)
			}
		})
	}
}

func FuzzDecodeTenant(f *testing.F) {
	for _, fx := range loadFixtures(f, "tenants") {
		f.Add(fx.data)
	}
	ctx := testContext(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		tenant, errs := DecodeTenant("tenants/ws-fuzz.yaml", data)
		if (tenant == nil) == (len(errs) == 0) {
			t.Fatalf("tenant = %v with %d errors: want exactly one of them", tenant, len(errs))
		}
		if tenant != nil {
			errs = tenant.Check("tenants/ws-fuzz.yaml", ctx)
		}
		for _, e := range errs {
			if e.File != "tenants/ws-fuzz.yaml" || e.Message == "" || e.Line < 0 || e.Col < 0 {
				t.Fatalf("malformed error %+v", e)
			}
		}
	})
}

func FuzzDecodeFleet(f *testing.F) {
	for _, fx := range loadFixtures(f, "fleets") {
		f.Add(fx.data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		fleet, errs := DecodeFleet(FleetFile, data)
		if (fleet == nil) == (len(errs) == 0) {
			t.Fatalf("fleet = %v with %d errors: want exactly one of them", fleet, len(errs))
		}
	})
}

func FuzzParseTemplate(f *testing.F) {
	f.Add(mustRead(f, "testdata/context/templates/workflows/mail.json"))
	f.Add([]byte(`{"name":"x","nodes":[],"connections":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tpl, errs := ParseTemplate("x.json", "x", data)
		if (tpl == nil) == (len(errs) == 0) {
			t.Fatalf("template = %v with %d errors", tpl, len(errs))
		}
		if tpl != nil {
			ids := map[string]string{}
			for ph := range tpl.Placeholders {
				ids[ph] = "id-1"
			}
			params := map[string]string{}
			for _, p := range tpl.Params {
				params[p] = "v\"\\"
			}
			if _, err := tpl.Render(ids, params); err != nil && !strings.Contains(err.Error(), "render template") {
				t.Fatalf("render: %v", err)
			}
		}
	})
}
