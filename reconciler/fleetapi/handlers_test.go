package fleetapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/tenants"
)

// fakeLoop answers Wake and Retry with the error it is given.
type fakeLoop struct{ err error }

func (fakeLoop) Snapshot() (tenants.Snapshot, bool) { return tenants.Snapshot{}, false }
func (fakeLoop) LastPlan() plan.Plan                { return plan.Plan{} }
func (fakeLoop) Leading() bool                      { return false }
func (fakeLoop) SyncError() error                   { return nil }
func (l fakeLoop) Wake(_ context.Context, id, _ string) (store.FleetRow, error) {
	return store.FleetRow{Workspace: id, Lifecycle: "HIBERNATED", WakeRequested: true}, l.err
}
func (l fakeLoop) Retry(context.Context, string, string, string) error { return l.err }
func (l fakeLoop) Operate(_ context.Context, _, action, _, _ string) error {
	if l.err == nil && action != "reboot" && action != "power_cycle" && action != "rebuild" {
		return api.NewError(api.ErrBadRequest, "action: not reboot, power_cycle or rebuild")
	}
	return l.err
}

type fakeObservations struct{ err error }

func (o fakeObservations) Load(context.Context) (api.Observed, error) {
	return api.Observed{Leader: "r-1"}, o.err
}

// TestHandlerAnswers: wake, retry and observed answer the status their
// error's kind names, every error as problem details that validate against
// api/openapi.yaml's Error schema, and a success as its api type.
func TestHandlerAnswers(t *testing.T) {
	c := jsonschema.NewCompiler()
	const base = "https://genesis.dev/api/openapi.json"
	if err := c.AddResource(base, openAPI(t)); err != nil {
		t.Fatal(err)
	}
	errSchema, err := c.Compile(base + "#/components/schemas/Error")
	if err != nil {
		t.Fatal(err)
	}
	notYet := api.NewError(api.ErrUnavailable, "no desired state yet")
	for _, tt := range []struct {
		name, method, path string
		body               string
		loop               fakeLoop
		obs                Observations
		code               int
		want               string // in the body
	}{
		{"wake", "POST", "/v1/tenants/ws-a/wake", "", fakeLoop{}, nil, 202, `"wake_requested": true`},
		{"wake unknown", "POST", "/v1/tenants/ws-a/wake", "", fakeLoop{fmt.Errorf("%w ws-a", api.NewError(api.ErrNotFound, "unknown tenant"))}, nil, 404, "unknown tenant ws-a"},
		{"wake conflict", "POST", "/v1/tenants/ws-a/wake", "", fakeLoop{api.NewError(api.ErrConflict, "cannot wake")}, nil, 409, "cannot wake"},
		{"wake before the first sync", "POST", "/v1/tenants/ws-a/wake", "", fakeLoop{notYet}, nil, 503, "no desired state yet"},
		{"wake failed", "POST", "/v1/tenants/ws-a/wake", "", fakeLoop{errors.New("database down")}, nil, 500, "database down"},
		{"retry", "POST", "/v1/tenants/ws-a/retry", "", fakeLoop{}, nil, 202, `"result": "retrying"`},
		{"retry bad id", "POST", "/v1/tenants/A/retry", "", fakeLoop{}, nil, 400, "not a workspace id"},
		{"retry not failed", "POST", "/v1/tenants/ws-a/retry", "", fakeLoop{store.ErrNotFailed}, nil, 409, "neither FAILED nor backing off"},
		{"action", "POST", "/v1/tenants/ws-a/actions", `{"action":"reboot","reason":"n8n wedged"}`, fakeLoop{}, nil, 202, `"result": "requested"`},
		{"action unknown", "POST", "/v1/tenants/ws-a/actions", `{"action":"explode","reason":"x"}`, fakeLoop{}, nil, 400, "not reboot, power_cycle or rebuild"},
		{"action bad body", "POST", "/v1/tenants/ws-a/actions", `{"action":"reboot","reason":"x","force":true}`, fakeLoop{}, nil, 400, "body:"},
		{"action not running", "POST", "/v1/tenants/ws-a/actions", `{"action":"rebuild","reason":"x"}`, fakeLoop{api.NewError(api.ErrConflict, "cannot act")}, nil, 409, "cannot act"},
		{"observed", "GET", "/v1/observed", "", fakeLoop{}, fakeObservations{}, 200, `"leader": "r-1"`},
		{"observed none", "GET", "/v1/observed", "", fakeLoop{}, fakeObservations{errors.New("no observation stored yet")}, 503, "no observation stored yet"},
		{"observed not served", "GET", "/v1/observed", "", fakeLoop{}, nil, 503, "does not serve observations"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(Handler(HandlerConfig{Reconciler: tt.loop, Observations: tt.obs}))
			defer srv.Close()
			req, _ := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.code || !strings.Contains(string(body), tt.want) {
				t.Fatalf("%d %s, want %d with %q", resp.StatusCode, body, tt.code, tt.want)
			}
			if tt.code < 400 {
				return
			}
			if got := resp.Header.Get("Content-Type"); got != api.ProblemContentType {
				t.Errorf("Content-Type = %q, want %q", got, api.ProblemContentType)
			}
			var doc any
			if err := json.Unmarshal(body, &doc); err != nil {
				t.Fatal(err)
			}
			if err := errSchema.Validate(jsonValue(t, doc)); err != nil {
				t.Errorf("error body does not validate against the Error schema: %v", err)
			}
		})
	}
}
