package schema_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/schema"
)

// notExpressible lists the bad fixtures whose rule JSON Schema cannot state
// for one file alone, with the reason. Every other fixture the Go decoder
// rejects on its own must be rejected by the published schema too, and every
// good fixture must pass both.
var notExpressible = map[string]string{
	"tenants/id-mismatch.bad.yaml":     "the id must equal the file name, which a schema does not see",
	"tenants/cred-dup.bad.yaml":        "credential names unique within a list of objects (uniqueItems compares whole items)",
	"tenants/undeclared-cred.bad.yaml": "a workflow maps a placeholder to a credential declared in a sibling list",
	"tenants/wf-dup.bad.yaml":          "workflow templates unique within a list of objects",
	"fleets/backup-rules.bad.yaml":     "backup recipients apart from spec.recipients, durations compared with each other and with a minimum",
	"fleets/dns-rules.bad.yaml":        "the zone's account must be one of spec.accounts (a list of objects), a duration compared with its bounds",
	"fleets/rollout-rules.bad.yaml":    "wave names unique within a list of objects, the rest wave last (no keyword addresses the last item), a window's end compared with its start",
}

// TestJSONSchemaAgreesWithGo runs every testdata fixture through both the
// Go decoder (the rules a file alone can break: DecodeTenant/DecodeFleet)
// and the JSON Schema files, and requires the same verdict. Fixtures that
// only break rules needing other files (sizes, regions, templates) pass both
// here: neither can see those files.
func TestJSONSchemaAgreesWithGo(t *testing.T) {
	schemas := compileSchemas(t)
	for _, kind := range []string{"tenants", "fleets"} {
		paths, err := filepath.Glob(filepath.Join("testdata", kind, "*.yaml"))
		if err != nil || len(paths) == 0 {
			t.Fatalf("no fixtures in testdata/%s", kind)
		}
		for _, p := range paths {
			key := kind + "/" + filepath.Base(p)
			t.Run(key, func(t *testing.T) {
				data, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				goErrs, goOK, schemaOK, yamlErr := verdicts(schemas, kind, p, data)
				if reason, ok := notExpressible[key]; ok {
					if goOK || !schemaOK {
						t.Errorf("listed as not expressible (%s), but Go ok=%v, schema ok=%v", reason, goOK, schemaOK)
					}
					return
				}
				if goOK != schemaOK {
					t.Errorf("Go decoder ok=%v (%v), JSON Schema ok=%v (yaml: %v); they must agree", goOK, goErrs, schemaOK, yamlErr)
				}
				if strings.HasSuffix(p, ".good.yaml") && !goOK {
					t.Errorf("good fixture rejected: %v", goErrs)
				}
			})
		}
	}
}

// verdicts runs one fixture's text through the Go decoder and the JSON
// Schema of its kind.
func verdicts(schemas map[string]*jsonschema.Schema, kind, path string, data []byte) (goErrs schema.Errors, goOK, schemaOK bool, yamlErr error) {
	base := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".bad.yaml"), ".good.yaml")
	sch := schemas["tenant"]
	if kind == "tenants" {
		_, goErrs = schema.DecodeTenant("tenants/"+base+".yaml", data)
	} else {
		sch = schemas["fleet"]
		_, goErrs = schema.DecodeFleet(schema.FleetFile, data)
	}
	doc, yamlErr := yamlToJSON(data)
	return goErrs, len(goErrs) == 0, yamlErr == nil && sch.Validate(doc) == nil, yamlErr
}

// TestRequiredFieldsAgree removes each key of every good fixture in turn
// (at any depth) and requires the Go decoder and the JSON Schema to agree
// on the result: a field one side requires and the other lets default
// (spec.safety, a size's monthlyUSD) is caught without a fixture written
// for it.
func TestRequiredFieldsAgree(t *testing.T) {
	schemas := compileSchemas(t)
	for _, kind := range []string{"tenants", "fleets"} {
		paths, err := filepath.Glob(filepath.Join("testdata", kind, "*.good.yaml"))
		if err != nil || len(paths) == 0 {
			t.Fatalf("no good fixtures in testdata/%s", kind)
		}
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; ; i++ {
				var root yaml.Node
				if err := yaml.Unmarshal(data, &root); err != nil {
					t.Fatal(err)
				}
				key, ok := removeKey(&root, i)
				if !ok {
					break
				}
				t.Run(kind+"/"+filepath.Base(p)+"/without "+key, func(t *testing.T) {
					out, err := yaml.Marshal(&root)
					if err != nil {
						t.Fatal(err)
					}
					goErrs, goOK, schemaOK, yamlErr := verdicts(schemas, kind, p, out)
					if goOK != schemaOK && !crossField(goErrs) {
						t.Errorf("Go decoder ok=%v (%v), JSON Schema ok=%v (yaml: %v); they must agree", goOK, goErrs, schemaOK, yamlErr)
					}
				})
			}
		}
	}
}

// crossField reports errors that only rules relating two fields give,
// which the JSON Schema does not state (see notExpressible and the
// schemas' descriptions): a workflow naming a credential the file no
// longer declares, a default size no longer in spec.sizes.
func crossField(errs schema.Errors) bool {
	for _, e := range errs {
		if !strings.Contains(e.Message, "no credential named") && !strings.Contains(e.Message, "is not in spec.sizes") {
			return false
		}
	}
	return len(errs) > 0
}

// removeKey removes the n-th mapping key (depth first, in document order)
// below root and returns its path; false when there are fewer keys.
func removeKey(root *yaml.Node, n int) (string, bool) {
	var walk func(node *yaml.Node, path string) (string, bool)
	walk = func(node *yaml.Node, path string) (string, bool) {
		for i := 0; i < len(node.Content); i++ {
			c := node.Content[i]
			if node.Kind == yaml.MappingNode && i%2 == 0 {
				p := strings.TrimPrefix(path+"."+c.Value, ".")
				if n == 0 {
					node.Content = append(node.Content[:i], node.Content[i+2:]...)
					return p, true
				}
				n--
				continue
			}
			sub := path
			switch {
			case node.Kind == yaml.MappingNode:
				sub = strings.TrimPrefix(path+"."+node.Content[i-1].Value, ".")
			case node.Kind == yaml.SequenceNode:
				sub = fmt.Sprintf("%s[%d]", path, i)
			}
			if p, ok := walk(c, sub); ok {
				return p, true
			}
		}
		return "", false
	}
	return walk(root, "")
}
