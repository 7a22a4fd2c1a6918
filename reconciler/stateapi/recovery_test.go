package stateapi_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/stateapi"
)

// TestRecoveryPointShown: the tenant reads carry each tenant's recovery
// point when the API is given them, and leave it out otherwise.
func TestRecoveryPointShown(t *testing.T) {
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	pts := map[string]backup.Point{"ws-gen-000": {At: at, Kind: "backup", ID: "b-20261206T100000Z-0123abcd", Age: 2 * time.Hour, Objective: 48 * time.Hour}}
	w := newWorld(t, 2, false, func(c *stateapi.Config) {
		c.RecoveryPoints = func() map[string]backup.Point { return pts }
	})
	var one api.Tenant
	r := w.do("dash", "GET", "/v1/tenants/ws-gen-000", "")
	r.json(t, &one)
	want := &api.RecoveryPoint{At: at, Kind: "backup", ID: "b-20261206T100000Z-0123abcd", AgeSeconds: 7200, ObjectiveSeconds: 172800}
	if diff := cmp.Diff(want, one.RecoveryPoint); diff != "" {
		t.Errorf("GET /v1/tenants/ws-gen-000 recovery_point (-want +got):\n%s", diff)
	}
	var list api.TenantList
	w.do("dash", "GET", "/v1/tenants", "").json(t, &list)
	for _, tn := range list.Tenants {
		switch {
		case tn.ID == "ws-gen-000" && tn.RecoveryPoint == nil:
			t.Error("GET /v1/tenants: ws-gen-000 has no recovery_point")
		case tn.ID != "ws-gen-000" && tn.RecoveryPoint != nil:
			t.Errorf("GET /v1/tenants: %s has a recovery_point %+v", tn.ID, tn.RecoveryPoint)
		}
	}

	plain := newWorld(t, 1, false)
	var none api.Tenant
	plain.do("dash", "GET", "/v1/tenants/ws-gen-000", "").json(t, &none)
	if none.RecoveryPoint != nil {
		t.Errorf("recovery_point without backups = %+v", none.RecoveryPoint)
	}
}
