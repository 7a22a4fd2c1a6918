package schema_test

// These tests check the published JSON Schema files and the example state
// repository with libraries independent of the schema package: an outside
// JSON Schema validator (santhosh-tekuri/jsonschema), plain yaml.v3 decoding
// and the age library. They guard the files editors and admins see; the Go
// decoder has its own tests.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"filippo.io/age"
	"filippo.io/age/armor"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"
)

const exampleDir = "../state-example"

var schemaFiles = map[string]string{
	"fleet":  "fleet.schema.json",
	"tenant": "tenant.schema.json",
}

// compileSchemas compiles both schema files under their $id, with no loader
// for anything else: a schema that refers outside itself fails here.
func compileSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	ids := map[string]string{}
	for kind, file := range schemaFiles {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		obj, ok := doc.(map[string]any)
		if !ok {
			t.Fatalf("%s: not a JSON object", file)
		}
		if got, want := obj["$schema"], "https://json-schema.org/draft/2020-12/schema"; got != want {
			t.Errorf("%s: $schema = %v, want %s", file, got, want)
		}
		id, _ := obj["$id"].(string)
		if want := "https://genesis.dev/schema/" + file; id != want {
			t.Errorf("%s: $id = %q, want %q", file, id, want)
		}
		if err := c.AddResource(id, doc); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		ids[kind] = id
	}
	out := map[string]*jsonschema.Schema{}
	for kind, id := range ids {
		sch, err := c.Compile(id)
		if err != nil {
			t.Fatalf("compile %s: %v", id, err)
		}
		out[kind] = sch
	}
	return out
}

// yamlToJSON decodes one YAML document the way any YAML tool would and
// returns it as the JSON value an editor's schema validator sees.
func yamlToJSON(data []byte) (any, error) {
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, err
	}
	v, err := jsonCompatible(v)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(b))
}

// jsonCompatible turns the maps yaml.v3 may produce with non-string keys into
// JSON objects.
func jsonCompatible(v any) (any, error) {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			e, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[k] = e
		}
		return out, nil
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			ks, ok := k.(string)
			if !ok {
				return nil, fmt.Errorf("mapping key %v (%T) is not a string", k, k)
			}
			e, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[ks] = e
		}
		return out, nil
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			e, err := jsonCompatible(e)
			if err != nil {
				return nil, err
			}
			out[i] = e
		}
		return out, nil
	default:
		return v, nil
	}
}

// exampleYAML lists the YAML documents of the example state repository with
// the schema each must satisfy.
func exampleYAML(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{filepath.Join(exampleDir, "genesis.yaml"): "fleet"}
	tenants, err := filepath.Glob(filepath.Join(exampleDir, "tenants", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tenants) < 5 {
		t.Fatalf("state-example has %d tenants, want at least 5", len(tenants))
	}
	for _, f := range tenants {
		files[f] = "tenant"
	}
	return files
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func TestJSONSchemaAcceptsStateExample(t *testing.T) {
	schemas := compileSchemas(t)
	files := exampleYAML(t)
	for _, file := range sortedKeys(files) {
		t.Run(filepath.ToSlash(strings.TrimPrefix(file, exampleDir+string(filepath.Separator))), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			doc, err := yamlToJSON(data)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if err := schemas[files[file]].Validate(doc); err != nil {
				t.Errorf("%s does not satisfy the %s schema:\n%v", file, files[file], err)
			}
		})
	}
}

const goodFleet = `apiVersion: genesis.dev/v1
kind: Fleet
metadata:
  name: test
spec:
  accounts:
    - name: do-nyc-a
      regions: [nyc1, nyc3]
      maxDroplets: 50
      tokenEnv: GENESIS_DO_TOKEN_NYC_A
  defaults:
    size: s-1vcpu-1gb
    image: ubuntu-22-04-x64
    n8nVersion: 1.123.81
  recipients:
    - age1y5k5mjkyevzwfqc8jv3n2dd3uc57pac0zl93sh67j4zqddycegyqdccyng
  safety:
    maxDestroyPerRun: 5
    maxHibernatePercent: 20
  snapshotRetention: 720h
  sizes:
    s-1vcpu-1gb: {monthlyUSD: 6}
`

// goodTenant uses every field. Its sealed value only has the armored shape
// (the schema cannot decrypt); the Go validator parses it for real.
const goodTenant = `apiVersion: genesis.dev/v1
kind: Tenant
metadata:
  id: ws-test
  name: Test Co
  tier: starter
spec:
  state: running
  droplet: {region: nyc3, size: s-1vcpu-1gb}
  n8n: {version: 1.123.81}
  hibernation: {afterIdle: 72h}
  domains: [track.test.example, links.test.example]
  credentials:
    - name: gmail
      type: gmailOAuth2
      sealed: |
        -----BEGIN AGE ENCRYPTED FILE-----
        YWdlLWVuY3J5cHRpb24ub3JnL3YxCi0+IFgyNTUxOSBhYUF6alhIc0xhbDU5aUU0
        oVBLLFuru6N4UUZ+4iqChxSIXz/y+emOgWlFaWgAVDnqlZK1YerdTdQpqBSQyHxG
        bvhsO8RZN2OpB/IRhbbePTcqU2Nhow==
        -----END AGE ENCRYPTED FILE-----
  workflows:
    - template: email-sequence
      credentials: {TEMPLATE_GMAIL_UUID: gmail}
      params: {senderName: Test Sales, dailyLimit: "50"}
`

// schemaCase edits a good document (each old string must occur in it) and
// says where the schema must report the problem: the JSON pointer of the
// offending value ("" for the document itself), or nothing when the edited
// document must still be valid. A bad mapping key is found by its message
// instead (wantMsg): the library reports a propertyNames error at the key
// itself, with an unreliable path for the mapping holding it.
type schemaCase struct {
	name    string
	kind    string
	edits   []string // old, new, old, new, ...
	wantAt  string
	wantMsg string
	valid   bool
}

func TestJSONSchemaDocuments(t *testing.T) {
	schemas := compileSchemas(t)
	cases := []schemaCase{
		// Good variants: the schema must not be stricter than the format.
		{name: "full fleet", kind: "fleet", valid: true},
		{name: "fleet without optional fields", kind: "fleet", valid: true,
			edits: []string{"metadata:\n  name: test\n", "", "  snapshotRetention: 720h\n", ""}},
		{name: "fleet zero limits", kind: "fleet", valid: true,
			edits: []string{"maxDestroyPerRun: 5", "maxDestroyPerRun: 0", "maxHibernatePercent: 20", "maxHibernatePercent: 12.5"}},
		{name: "fleet compound retention", kind: "fleet", valid: true,
			edits: []string{"snapshotRetention: 720h", "snapshotRetention: 1h30m"}},
		{name: "fleet zero retention", kind: "fleet", valid: true,
			edits: []string{"snapshotRetention: 720h", `snapshotRetention: "0"`}},
		{name: "fleet two recipients", kind: "fleet", valid: true,
			edits: []string{"  safety:\n", "    - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\n  safety:\n"}},
		{name: "full tenant", kind: "tenant", valid: true},
		{name: "minimal tenant", kind: "tenant", valid: true,
			edits: []string{
				"  droplet: {region: nyc3, size: s-1vcpu-1gb}\n", "  droplet: {region: nyc3}\n",
				"  n8n: {version: 1.123.81}\n", "",
				"  hibernation: {afterIdle: 72h}\n", "",
				"  domains: [track.test.example, links.test.example]\n", "",
				goodTenant[strings.Index(goodTenant, "  credentials:\n"):], "",
			}},
		{name: "hibernated tenant", kind: "tenant", valid: true, edits: []string{"state: running", "state: hibernated"}},
		{name: "absent tenant", kind: "tenant", valid: true, edits: []string{"state: running", "state: absent"}},
		{name: "prerelease version", kind: "tenant", valid: true, edits: []string{"1.123.81", "2.0.0-rc.1+build.5"}},
		{name: "fractional idle", kind: "tenant", valid: true, edits: []string{"afterIdle: 72h", "afterIdle: 1.5h"}},
		{name: "deep domain", kind: "tenant", valid: true, edits: []string{"track.test.example", "t.eu.umbrella-corp.co.uk"}},
		{name: "crlf armor", kind: "tenant", valid: true, edits: []string{"-----\n        YWdl", "-----\r\n        YWdl"}},
		{name: "n8n block without version", kind: "tenant", valid: true, edits: []string{"n8n: {version: 1.123.81}", "n8n: {}"}},
		{name: "numeric param", kind: "tenant", valid: true, edits: []string{`dailyLimit: "50"`, "dailyLimit: 50"}},
		{name: "numeric inner label", kind: "tenant", valid: true, edits: []string{"track.test.example", "123.test.example"}},

		// Bad fleets.
		{name: "fleet unknown top-level field", kind: "fleet", edits: []string{"kind: Fleet\n", "kind: Fleet\nstatus: {}\n"}, wantAt: ""},
		{name: "fleet unknown spec field", kind: "fleet", edits: []string{"  safety:\n", "  region: nyc3\n  safety:\n"}, wantAt: "/spec"},
		{name: "fleet unknown account field", kind: "fleet", edits: []string{"      maxDroplets: 50\n", "      maxDroplets: 50\n      token: abc\n"}, wantAt: "/spec/accounts/0"},
		{name: "fleet wrong kind", kind: "fleet", edits: []string{"kind: Fleet", "kind: Tenant"}, wantAt: "/kind"},
		{name: "fleet wrong apiVersion", kind: "fleet", edits: []string{"genesis.dev/v1", "genesis.dev/v2"}, wantAt: "/apiVersion"},
		{name: "fleet no accounts", kind: "fleet", edits: []string{goodFleet[strings.Index(goodFleet, "    - name: do-nyc-a"):strings.Index(goodFleet, "  defaults:")], "", "  accounts:\n", "  accounts: []\n"}, wantAt: "/spec/accounts"},
		{name: "fleet bad account name", kind: "fleet", edits: []string{"name: do-nyc-a", "name: DO_NYC_A"}, wantAt: "/spec/accounts/0/name"},
		{name: "fleet bad region", kind: "fleet", edits: []string{"[nyc1, nyc3]", "[nyc1, NYC3]"}, wantAt: "/spec/accounts/0/regions/1"},
		{name: "fleet no regions", kind: "fleet", edits: []string{"[nyc1, nyc3]", "[]"}, wantAt: "/spec/accounts/0/regions"},
		{name: "fleet zero maxDroplets", kind: "fleet", edits: []string{"maxDroplets: 50", "maxDroplets: 0"}, wantAt: "/spec/accounts/0/maxDroplets"},
		{name: "fleet token instead of env name", kind: "fleet", edits: []string{"tokenEnv: GENESIS_DO_TOKEN_NYC_A", "tokenEnv: dop_v1_0123456789abcdef"}, wantAt: "/spec/accounts/0/tokenEnv"},
		{name: "fleet missing default size", kind: "fleet", edits: []string{"    size: s-1vcpu-1gb\n", ""}, wantAt: "/spec/defaults"},
		{name: "fleet bad n8nVersion", kind: "fleet", edits: []string{"n8nVersion: 1.123.81", "n8nVersion: latest"}, wantAt: "/spec/defaults/n8nVersion"},
		{name: "fleet secret key as recipient", kind: "fleet", edits: []string{"    - age1y5k5", "    - AGE-SECRET-KEY-1y5k5"}, wantAt: "/spec/recipients/0"},
		{name: "fleet duplicate recipient", kind: "fleet", edits: []string{"  safety:\n", "    - age1y5k5mjkyevzwfqc8jv3n2dd3uc57pac0zl93sh67j4zqddycegyqdccyng\n  safety:\n"}, wantAt: "/spec/recipients"},
		{name: "fleet negative retention", kind: "fleet", edits: []string{"snapshotRetention: 720h", "snapshotRetention: -720h"}, wantAt: "/spec/snapshotRetention"},
		{name: "fleet no recipients", kind: "fleet", edits: []string{"  recipients:\n    - age1y5k5mjkyevzwfqc8jv3n2dd3uc57pac0zl93sh67j4zqddycegyqdccyng\n", "  recipients: []\n"}, wantAt: "/spec/recipients"},
		{name: "fleet negative destroy limit", kind: "fleet", edits: []string{"maxDestroyPerRun: 5", "maxDestroyPerRun: -1"}, wantAt: "/spec/safety/maxDestroyPerRun"},
		{name: "fleet percent over 100", kind: "fleet", edits: []string{"maxHibernatePercent: 20", "maxHibernatePercent: 150"}, wantAt: "/spec/safety/maxHibernatePercent"},
		{name: "fleet retention in days", kind: "fleet", edits: []string{"snapshotRetention: 720h", "snapshotRetention: 30d"}, wantAt: "/spec/snapshotRetention"},
		{name: "fleet no sizes", kind: "fleet", edits: []string{"    s-1vcpu-1gb: {monthlyUSD: 6}\n", "", "  sizes:\n", "  sizes: {}\n"}, wantAt: "/spec/sizes"},
		{name: "fleet price not a number", kind: "fleet", edits: []string{"monthlyUSD: 6", "monthlyUSD: six"}, wantAt: "/spec/sizes/s-1vcpu-1gb/monthlyUSD"},
		{name: "fleet unknown size field", kind: "fleet", edits: []string{"{monthlyUSD: 6}", "{monthlyUSD: 6, vcpus: 1}"}, wantAt: "/spec/sizes/s-1vcpu-1gb"},

		// Bad tenants.
		{name: "unknown top-level field", kind: "tenant", edits: []string{"kind: Tenant\n", "kind: Tenant\nstatus: {}\n"}, wantAt: ""},
		{name: "unknown metadata field", kind: "tenant", edits: []string{"  tier: starter\n", "  tier: starter\n  owner: bob\n"}, wantAt: "/metadata"},
		{name: "unknown spec field", kind: "tenant", edits: []string{"  state: running\n", "  state: running\n  replicas: 3\n"}, wantAt: "/spec"},
		{name: "unknown droplet field", kind: "tenant", edits: []string{"size: s-1vcpu-1gb}", "size: s-1vcpu-1gb, image: debian-12-x64}"}, wantAt: "/spec/droplet"},
		{name: "unknown credential field", kind: "tenant", edits: []string{"      type: gmailOAuth2\n", "      type: gmailOAuth2\n      plaintext: hunter2\n"}, wantAt: "/spec/credentials/0"},
		{name: "unknown workflow field", kind: "tenant", edits: []string{"    - template: email-sequence\n", "    - template: email-sequence\n      active: false\n"}, wantAt: "/spec/workflows/0"},
		{name: "wrong kind", kind: "tenant", edits: []string{"kind: Tenant", "kind: Fleet"}, wantAt: "/kind"},
		{name: "missing metadata", kind: "tenant", edits: []string{"metadata:\n  id: ws-test\n  name: Test Co\n  tier: starter\n", ""}, wantAt: ""},
		{name: "bad state", kind: "tenant", edits: []string{"state: running", "state: paused"}, wantAt: "/spec/state"},
		{name: "missing state", kind: "tenant", edits: []string{"  state: running\n", ""}, wantAt: "/spec"},
		{name: "bad tier", kind: "tenant", edits: []string{"tier: starter", "tier: gold"}, wantAt: "/metadata/tier"},
		{name: "uppercase id", kind: "tenant", edits: []string{"id: ws-test", "id: WS_Test"}, wantAt: "/metadata/id"},
		{name: "short id", kind: "tenant", edits: []string{"id: ws-test", "id: ws"}, wantAt: "/metadata/id"},
		{name: "path id", kind: "tenant", edits: []string{"id: ws-test", "id: ../ws-test"}, wantAt: "/metadata/id"},
		{name: "long id", kind: "tenant", edits: []string{"id: ws-test", "id: " + strings.Repeat("a", 41)}, wantAt: "/metadata/id"},
		{name: "spare id", kind: "tenant", edits: []string{"id: ws-test", "id: spare-nyc1-1"}, wantAt: "/metadata/id"},
		{name: "empty name", kind: "tenant", edits: []string{"name: Test Co", `name: ""`}, wantAt: "/metadata/name"},
		{name: "missing region", kind: "tenant", edits: []string{"{region: nyc3, size: s-1vcpu-1gb}", "{size: s-1vcpu-1gb}"}, wantAt: "/spec/droplet"},
		{name: "bad region", kind: "tenant", edits: []string{"region: nyc3", "region: new-york"}, wantAt: "/spec/droplet/region"},
		{name: "bad n8n version", kind: "tenant", edits: []string{"version: 1.123.81", "version: v1.123.81"}, wantAt: "/spec/n8n/version"},
		{name: "short n8n version", kind: "tenant", edits: []string{"version: 1.123.81", `version: "1.123"`}, wantAt: "/spec/n8n/version"},
		{name: "idle in days", kind: "tenant", edits: []string{"afterIdle: 72h", "afterIdle: 3 days"}, wantAt: "/spec/hibernation/afterIdle"},
		{name: "zero idle", kind: "tenant", edits: []string{"afterIdle: 72h", "afterIdle: 0h"}, wantAt: "/spec/hibernation/afterIdle"},
		{name: "uppercase domain", kind: "tenant", edits: []string{"track.test.example", "Track.Test.example"}, wantAt: "/spec/domains/0"},
		{name: "single-label domain", kind: "tenant", edits: []string{"track.test.example", "localhost"}, wantAt: "/spec/domains/0"},
		{name: "domain with scheme", kind: "tenant", edits: []string{"track.test.example", "https://track.test.example"}, wantAt: "/spec/domains/0"},
		{name: "domain label starts with hyphen", kind: "tenant", edits: []string{"track.test.example", "-track.test.example"}, wantAt: "/spec/domains/0"},
		{name: "domain label too long", kind: "tenant", edits: []string{"track.test.example", strings.Repeat("a", 64) + ".test.example"}, wantAt: "/spec/domains/0"},
		{name: "domain too long", kind: "tenant", edits: []string{"track.test.example", strings.Repeat("abcdefghi.", 26) + "example"}, wantAt: "/spec/domains/0"},
		{name: "duplicate domain", kind: "tenant", edits: []string{"links.test.example", "track.test.example"}, wantAt: "/spec/domains"},
		{name: "bad credential name", kind: "tenant", edits: []string{"    - name: gmail", "    - name: ../gmail"}, wantAt: "/spec/credentials/0/name"},
		{name: "bad credential type", kind: "tenant", edits: []string{"type: gmailOAuth2", "type: gmail-oauth2"}, wantAt: "/spec/credentials/0/type"},
		{name: "plaintext instead of sealed", kind: "tenant", edits: []string{goodTenant[strings.Index(goodTenant, "      sealed: |"):strings.Index(goodTenant, "  workflows:")], "      sealed: '{\"clientSecret\":\"hunter2\"}'\n"}, wantAt: "/spec/credentials/0/sealed"},
		{name: "sealed without footer", kind: "tenant", edits: []string{"        -----END AGE ENCRYPTED FILE-----\n", ""}, wantAt: "/spec/credentials/0/sealed"},
		{name: "sealed with garbage line", kind: "tenant", edits: []string{"bvhsO8RZN2OpB", "bvhs O8RZN2OpB"}, wantAt: "/spec/credentials/0/sealed"},
		{name: "bad template name", kind: "tenant", edits: []string{"template: email-sequence", "template: ../email-sequence"}, wantAt: "/spec/workflows/0/template"},
		{name: "bad placeholder key", kind: "tenant", edits: []string{"{TEMPLATE_GMAIL_UUID: gmail}", "{GMAIL_UUID: gmail}"}, wantMsg: "invalid propertyName 'GMAIL_UUID'"},
		{name: "placeholder to bad name", kind: "tenant", edits: []string{"{TEMPLATE_GMAIL_UUID: gmail}", "{TEMPLATE_GMAIL_UUID: Gmail}"}, wantAt: "/spec/workflows/0/credentials/TEMPLATE_GMAIL_UUID"},
		{name: "bad param key", kind: "tenant", edits: []string{"senderName:", "sender-name:"}, wantMsg: "invalid propertyName 'sender-name'"},
		{name: "list param", kind: "tenant", edits: []string{`dailyLimit: "50"`, "dailyLimit: [50]"}, wantAt: "/spec/workflows/0/params/dailyLimit"},
		{name: "numeric top-level domain", kind: "tenant", edits: []string{"track.test.example", "track.test.123"}, wantAt: "/spec/domains/0"},
		{name: "blank name", kind: "tenant", edits: []string{"name: Test Co", `name: "  "`}, wantAt: "/metadata/name"},
		{name: "credential type starts with digit", kind: "tenant", edits: []string{"type: gmailOAuth2", "type: 1password"}, wantAt: "/spec/credentials/0/type"},
		{name: "long template name", kind: "tenant", edits: []string{"template: email-sequence", "template: " + strings.Repeat("e", 64)}, wantAt: "/spec/workflows/0/template"},
	}
	for _, tc := range cases {
		t.Run(tc.kind+"/"+tc.name, func(t *testing.T) {
			src := map[string]string{"fleet": goodFleet, "tenant": goodTenant}[tc.kind]
			for i := 0; i+1 < len(tc.edits); i += 2 {
				if !strings.Contains(src, tc.edits[i]) {
					t.Fatalf("edit %d: %q is not in the document", i/2, tc.edits[i])
				}
				src = strings.Replace(src, tc.edits[i], tc.edits[i+1], 1)
			}
			doc, err := yamlToJSON([]byte(src))
			if err != nil {
				t.Fatalf("YAML: %v\n%s", err, src)
			}
			err = schemas[tc.kind].Validate(doc)
			if tc.valid {
				if err != nil {
					t.Fatalf("schema rejects a valid document:\n%v\n%s", err, src)
				}
				return
			}
			if err == nil {
				t.Fatalf("schema accepts an invalid document:\n%s", src)
			}
			if tc.wantMsg != "" {
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("schema error does not say %q:\n%v", tc.wantMsg, err)
				}
				return
			}
			if at := errorLocations(err); !slices.Contains(at, tc.wantAt) {
				t.Errorf("schema reports the problem at %q, want %q:\n%v", at, tc.wantAt, err)
			}
		})
	}
}

// errorLocations returns the JSON pointers of the values the most specific
// validation errors are about.
func errorLocations(err error) []string {
	ve, ok := err.(*jsonschema.ValidationError)
	if !ok {
		return []string{"not a validation error: " + err.Error()}
	}
	var out []string
	var walk func(*jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			p := ""
			for _, tok := range e.InstanceLocation {
				p += "/" + tok
			}
			out = append(out, p)
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return out
}

var modeline = regexp.MustCompile(`^# yaml-language-server: \$schema=(\S+)$`)

func TestExampleYAMLSchemaModeline(t *testing.T) {
	files := exampleYAML(t)
	for _, file := range sortedKeys(files) {
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		first, err := bufio.NewReader(f).ReadString('\n')
		f.Close()
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		m := modeline.FindStringSubmatch(strings.TrimSuffix(first, "\n"))
		if m == nil {
			t.Errorf("%s: first line is %q, want a `# yaml-language-server: $schema=...` line", file, first)
			continue
		}
		target := filepath.Join(filepath.Dir(file), filepath.FromSlash(m[1]))
		if _, err := os.Stat(target); err != nil {
			t.Errorf("%s: $schema points at %s: %v", file, m[1], err)
		}
		if got, want := filepath.Base(target), schemaFiles[files[file]]; got != want {
			t.Errorf("%s: $schema names %s, want %s", file, got, want)
		}
	}
}

// template is the part of an n8n workflow export that the example checks
// look at.
type template struct {
	Name  string `json:"name"`
	Nodes []struct {
		ID          string                     `json:"id"`
		Name        string                     `json:"name"`
		Type        string                     `json:"type"`
		TypeVersion float64                    `json:"typeVersion"`
		Position    []float64                  `json:"position"`
		Parameters  map[string]any             `json:"parameters"`
		WebhookID   string                     `json:"webhookId"`
		Credentials map[string]json.RawMessage `json:"credentials"`
	} `json:"nodes"`
	Connections map[string]map[string][][]struct {
		Node string `json:"node"`
	} `json:"connections"`

	// placeholders maps each TEMPLATE_*_UUID to the credential type it is
	// used as; params lists the {{param.NAME}} markers.
	placeholders map[string]string
	params       map[string]bool
}

var (
	placeholderRE = regexp.MustCompile(`^TEMPLATE_[A-Z0-9_]+_UUID$`)
	paramRE       = regexp.MustCompile(`\{\{param\.([A-Za-z][A-Za-z0-9_]*)\}\}`)
)

// writableFields are the top-level fields n8n's public API accepts when a
// workflow is created or updated.
var writableFields = []string{"connections", "name", "nodes", "settings"}

func loadTemplates(t *testing.T) map[string]*template {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(exampleDir, "templates", "workflows", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("state-example has %d workflow templates, want at least 4", len(files))
	}
	out := map[string]*template{}
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(data, &top); err != nil {
			t.Errorf("%s: not JSON: %v", file, err)
			continue
		}
		for _, k := range sortedKeys(top) {
			if !slices.Contains(writableFields, k) {
				t.Errorf("%s: top-level field %q is not one n8n's API accepts (want only %v)", file, k, writableFields)
			}
		}
		for _, k := range []string{"name", "nodes", "connections"} {
			if _, ok := top[k]; !ok {
				t.Errorf("%s: no %q", file, k)
			}
		}
		var tm template
		if err := json.Unmarshal(data, &tm); err != nil {
			t.Errorf("%s: %v", file, err)
			continue
		}
		tm.placeholders = map[string]string{}
		tm.params = map[string]bool{}
		for _, m := range paramRE.FindAllStringSubmatch(string(data), -1) {
			tm.params[m[1]] = true
		}
		checkTemplate(t, file, &tm)
		out[strings.TrimSuffix(filepath.Base(file), ".json")] = &tm
	}
	return out
}

func checkTemplate(t *testing.T, file string, tm *template) {
	t.Helper()
	if tm.Name == "" {
		t.Errorf("%s: empty name", file)
	}
	if len(tm.Nodes) == 0 {
		t.Errorf("%s: no nodes", file)
	}
	names := map[string]bool{}
	ids := map[string]bool{}
	for _, n := range tm.Nodes {
		switch {
		case n.Name == "" || n.Type == "" || n.TypeVersion <= 0 || len(n.Position) != 2 || n.Parameters == nil:
			t.Errorf("%s: node %q lacks name, type, typeVersion, position or parameters", file, n.Name)
		case names[n.Name]:
			t.Errorf("%s: two nodes are named %q", file, n.Name)
		case n.ID == "" || ids[n.ID]:
			t.Errorf("%s: node %q has a missing or repeated id", file, n.Name)
		}
		names[n.Name], ids[n.ID] = true, true
		if strings.HasSuffix(n.Type, ".webhook") && n.WebhookID == "" {
			t.Errorf("%s: webhook node %q has no stable webhookId", file, n.Name)
		}
		for credType, raw := range n.Credentials {
			var ref struct{ ID, Name string }
			if err := json.Unmarshal(raw, &ref); err != nil {
				t.Errorf("%s: node %q: credentials.%s: %v", file, n.Name, credType, err)
				continue
			}
			if !placeholderRE.MatchString(ref.ID) {
				t.Errorf("%s: node %q: credentials.%s.id = %q, want a TEMPLATE_*_UUID placeholder", file, n.Name, credType, ref.ID)
				continue
			}
			if prev, ok := tm.placeholders[ref.ID]; ok && prev != credType {
				t.Errorf("%s: %s is used as both %s and %s", file, ref.ID, prev, credType)
			}
			tm.placeholders[ref.ID] = credType
		}
	}
	for from, outputs := range tm.Connections {
		if !names[from] {
			t.Errorf("%s: connection from unknown node %q", file, from)
		}
		for _, conns := range outputs {
			for _, out := range conns {
				for _, c := range out {
					if !names[c.Node] {
						t.Errorf("%s: connection from %q to unknown node %q", file, from, c.Node)
					}
				}
			}
		}
	}
}

func TestExampleTemplatesAreWorkflows(t *testing.T) {
	for name, tm := range loadTemplates(t) {
		if len(tm.placeholders) == 0 {
			t.Errorf("%s: no TEMPLATE_*_UUID credential placeholders", name)
		}
	}
}

// exampleTenant is the part of a tenant file the example checks look at.
type exampleTenant struct {
	Metadata struct {
		ID string `yaml:"id"`
	} `yaml:"metadata"`
	Spec struct {
		Credentials []struct {
			Name   string `yaml:"name"`
			Type   string `yaml:"type"`
			Sealed string `yaml:"sealed"`
		} `yaml:"credentials"`
		Workflows []struct {
			Template    string            `yaml:"template"`
			Credentials map[string]string `yaml:"credentials"`
			Params      map[string]string `yaml:"params"`
		} `yaml:"workflows"`
	} `yaml:"spec"`
}

func loadExampleTenants(t *testing.T) map[string]exampleTenant {
	t.Helper()
	out := map[string]exampleTenant{}
	for file, kind := range exampleYAML(t) {
		if kind != "tenant" {
			continue
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var tn exampleTenant
		if err := yaml.Unmarshal(data, &tn); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if want := strings.TrimSuffix(filepath.Base(file), ".yaml"); tn.Metadata.ID != want {
			t.Errorf("%s: metadata.id = %q, want the file name %q", file, tn.Metadata.ID, want)
		}
		out[file] = tn
	}
	return out
}

// TestExampleTenantsMatchTemplates checks, independently of the Go
// validator, that every example workflow maps exactly its template's
// placeholders to credentials of the right type and fills exactly its params.
func TestExampleTenantsMatchTemplates(t *testing.T) {
	templates := loadTemplates(t)
	tenants := loadExampleTenants(t)
	for _, file := range sortedKeys(tenants) {
		tn := tenants[file]
		credType := map[string]string{}
		for _, c := range tn.Spec.Credentials {
			credType[c.Name] = c.Type
		}
		for _, w := range tn.Spec.Workflows {
			tm, ok := templates[w.Template]
			if !ok {
				t.Errorf("%s: no template %q", file, w.Template)
				continue
			}
			for ph, typ := range tm.placeholders {
				cred, ok := w.Credentials[ph]
				if !ok {
					t.Errorf("%s: %s: %s is not mapped", file, w.Template, ph)
				} else if credType[cred] != typ {
					t.Errorf("%s: %s: %s needs a %s credential, %q is %q", file, w.Template, ph, typ, cred, credType[cred])
				}
			}
			for ph := range w.Credentials {
				if _, ok := tm.placeholders[ph]; !ok {
					t.Errorf("%s: %s has no placeholder %s", file, w.Template, ph)
				}
			}
			for p := range tm.params {
				if _, ok := w.Params[p]; !ok {
					t.Errorf("%s: %s: no value for {{param.%s}}", file, w.Template, p)
				}
			}
			for p := range w.Params {
				if !tm.params[p] {
					t.Errorf("%s: %s: param %q is not used by the template", file, w.Template, p)
				}
			}
		}
	}
}

// TestExampleSealedCredentialsOpenWithDemoIdentity proves the example's
// credentials are real age files to the fleet's (demo) recipient whose
// plaintext is a JSON object of n8n credential data.
func TestExampleSealedCredentialsOpenWithDemoIdentity(t *testing.T) {
	keyFile, err := os.Open(filepath.Join(exampleDir, "demo-keys", "age.key"))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := age.ParseIdentities(keyFile)
	keyFile.Close()
	if err != nil {
		t.Fatal(err)
	}
	fleetData, err := os.ReadFile(filepath.Join(exampleDir, "genesis.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var fleet struct {
		Spec struct {
			Recipients []string `yaml:"recipients"`
		} `yaml:"spec"`
	}
	if err := yaml.Unmarshal(fleetData, &fleet); err != nil {
		t.Fatal(err)
	}
	x, ok := ids[0].(*age.X25519Identity)
	if !ok || !slices.Contains(fleet.Spec.Recipients, x.Recipient().String()) {
		t.Fatalf("demo-keys/age.key is not the identity of a recipient in genesis.yaml %v", fleet.Spec.Recipients)
	}
	n := 0
	tenants := loadExampleTenants(t)
	for _, file := range sortedKeys(tenants) {
		for _, c := range tenants[file].Spec.Credentials {
			n++
			r, err := age.Decrypt(armor.NewReader(strings.NewReader(c.Sealed)), ids...)
			if err != nil {
				t.Errorf("%s: credential %s: %v", file, c.Name, err)
				continue
			}
			plain, err := io.ReadAll(r)
			if err != nil {
				t.Errorf("%s: credential %s: %v", file, c.Name, err)
				continue
			}
			var obj map[string]any
			if err := json.Unmarshal(plain, &obj); err != nil || len(obj) == 0 {
				t.Errorf("%s: credential %s: plaintext is not a JSON object of credential data", file, c.Name)
			}
		}
	}
	if n == 0 {
		t.Error("no sealed credentials in the example tenants")
	}
}
