package fleetapi

import (
	"errors"
	"genesis.dev/fleet/schema"
	"io"
	"net/http"
	"regexp"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/store"
)

// handleWake is POST /v1/tenants/{id}/wake: 202 with the tenant's status,
// 404 for an unknown tenant, 409 when it is not hibernated (or git
// declares it hibernated), 503 before the state repository was read. The
// actor is the caller's token name.
func handleWake(w http.ResponseWriter, r *http.Request, rec Waker) {
	row, err := rec.Wake(r.Context(), r.PathValue("id"), apiActor(r))
	if err != nil {
		api.WriteProblem(w, api.Status(err), err.Error())
		return
	}
	api.WriteJSON(w, http.StatusAccepted, api.TenantStatus(row))
}

// workspaceID is the form of a workspace id (schema's rule).
var workspaceID = regexp.MustCompile(`^[a-z0-9-]{3,40}$`)

// retryHandler serves POST /v1/tenants/{id}/retry.
func retryHandler(rec Retrier) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		id := req.PathValue("id")
		if !workspaceID.MatchString(id) {
			api.WriteProblem(w, http.StatusBadRequest, "id: not a workspace id ([a-z0-9-]{3,40})")
			return
		}
		err := rec.Retry(req.Context(), id, apiActor(req), "retry requested through the API")
		switch {
		case errors.Is(err, store.ErrNotFailed):
			api.WriteProblem(w, http.StatusConflict, "tenant "+id+" is neither FAILED nor backing off")
		case err != nil:
			api.WriteProblem(w, http.StatusInternalServerError, err.Error())
		default:
			api.WriteJSON(w, http.StatusAccepted, api.RetryResult{Workspace: id, Result: "retrying"})
		}
	}
}

// actionHandler serves POST /v1/tenants/{id}/actions: an operator's
// reboot, power cycle or rebuild of the tenant's droplet, recorded for the
// leader's watchdog (202); 400 for a bad body, 404 for an unknown tenant,
// 409 when it has no running droplet.
func actionHandler(rec Operator) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		id := req.PathValue("id")
		if !workspaceID.MatchString(id) {
			api.WriteProblem(w, http.StatusBadRequest, "id: not a workspace id ([a-z0-9-]{3,40})")
			return
		}
		var body api.ActionRequest
		data, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 4<<10))
		if err == nil {
			err = schema.DecodeStrict(data, &body)
		}
		if err != nil {
			api.WriteProblem(w, http.StatusBadRequest, "body: "+err.Error())
			return
		}
		if err := rec.Operate(req.Context(), id, body.Action, apiActor(req), body.Reason); err != nil {
			api.WriteProblem(w, api.Status(err), err.Error())
			return
		}
		api.WriteJSON(w, http.StatusAccepted, api.ActionResult{Workspace: id, Action: body.Action, Result: "requested"})
	}
}

// handleObserved is GET /v1/observed: the leader's stored observation, or
// 503 when there is none, it is too old or it cannot be read.
func handleObserved(w http.ResponseWriter, r *http.Request, o Observations) {
	if o == nil {
		api.WriteProblem(w, http.StatusServiceUnavailable, "this replica does not serve observations")
		return
	}
	doc, err := o.Load(r.Context())
	if err != nil {
		api.WriteProblem(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	api.WriteJSON(w, http.StatusOK, doc)
}
