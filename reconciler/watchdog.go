package reconciler

import (
	"encoding/json"
	"errors"
	"net/http"
	"regexp"

	"genesis.dev/fleet/reconciler/store"
)

// workspaceID is the form of a workspace id (schema's rule).
var workspaceID = regexp.MustCompile(`^[a-z0-9-]{3,40}$`)

// retryHandler serves POST /v1/tenants/{id}/retry.
func retryHandler(rec *Reconciler) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		id := req.PathValue("id")
		if !workspaceID.MatchString(id) {
			httpError(w, http.StatusBadRequest, "id: not a workspace id ([a-z0-9-]{3,40})")
			return
		}
		err := rec.Retry(req.Context(), id, apiActor(req), "retry requested through the API")
		switch {
		case errors.Is(err, store.ErrNotFailed):
			httpError(w, http.StatusConflict, "tenant "+id+" is neither FAILED nor backing off")
		case err != nil:
			httpError(w, http.StatusInternalServerError, err.Error())
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusAccepted)
			_ = json.NewEncoder(w).Encode(map[string]string{"workspace": id, "result": "retrying"})
		}
	}
}
