package schema_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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
				base := strings.TrimSuffix(strings.TrimSuffix(filepath.Base(p), ".bad.yaml"), ".good.yaml")
				var goErrs schema.Errors
				sch := schemas["tenant"]
				if kind == "tenants" {
					_, goErrs = schema.DecodeTenant("tenants/"+base+".yaml", data)
				} else {
					sch = schemas["fleet"]
					_, goErrs = schema.DecodeFleet(schema.FleetFile, data)
				}
				doc, yamlErr := yamlToJSON(data)
				schemaOK := yamlErr == nil && sch.Validate(doc) == nil
				goOK := len(goErrs) == 0
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
