package fleetapi

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/backup"
)

// TestRecoveryPointsInFleet: GET /v1/fleet's rows get recovery_point from
// the backup service's points, and the document still validates against
// api/openapi.yaml's Fleet schema (and a tenant read against Tenant's).
func TestRecoveryPointsInFleet(t *testing.T) {
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	doc := api.Fleet{Commit: "c", At: at, Tenants: []api.FleetTenant{
		{TenantStatus: api.TenantStatus{Workspace: "ws-a", Lifecycle: "ACTIVE_HEALTHY"}},
		{TenantStatus: api.TenantStatus{Workspace: "ws-b", Lifecycle: "ACTIVE_HEALTHY"}},
		{TenantStatus: api.TenantStatus{Workspace: "ws-c", Lifecycle: "PENDING"}},
	}}
	withRecoveryPoints(&doc, map[string]backup.Point{
		"ws-a": {At: at, Kind: "snapshot", ID: "123", Age: time.Hour, Objective: 2 * time.Hour},
		"ws-b": {LiveSince: at, Age: 3 * time.Hour, Objective: 2 * time.Hour, Stale: true},
	})
	want := []*api.RecoveryPoint{
		{At: at, Kind: "snapshot", ID: "123", AgeSeconds: 3600, ObjectiveSeconds: 7200},
		{AgeSeconds: 10800, ObjectiveSeconds: 7200, Stale: true},
		nil,
	}
	for i, tn := range doc.Tenants {
		if diff := cmp.Diff(want[i], tn.RecoveryPoint); diff != "" {
			t.Errorf("%s recovery_point (-want +got):\n%s", tn.Workspace, diff)
		}
	}

	c := jsonschema.NewCompiler()
	const base = "https://genesis.dev/api/openapi.json"
	if err := c.AddResource(base, openAPI(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("https://genesis.dev/schema/tenant.schema.json", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	validate := func(schema string, v any) {
		t.Helper()
		sch, err := c.Compile(base + "#/components/schemas/" + schema)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(v)
		val, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Validate(val); err != nil {
			t.Errorf("%s does not validate against %s: %v", data, schema, err)
		}
	}
	validate("Fleet", doc)
	validate("Tenant", api.Tenant{ID: "ws-a", RecoveryPoint: want[0]})
	// The schema refuses a recovery point that lacks its required fields.
	sch, _ := c.Compile(base + "#/components/schemas/RecoveryPoint")
	if sch.Validate(map[string]any{"kind": "backup"}) == nil {
		t.Error("RecoveryPoint schema accepts an object without age_seconds, objective_seconds and stale")
	}
}
