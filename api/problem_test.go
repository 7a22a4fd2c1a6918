package api_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/api"
)

// TestWriteProblem: the body is RFC 9457 problem details with error
// repeating detail, under application/problem+json; headers set before
// stay.
func TestWriteProblem(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Retry-After", "5")
	api.WriteProblem(rec, http.StatusTooManyRequests, "slow down")
	if got, want := rec.Code, http.StatusTooManyRequests; got != want {
		t.Errorf("status = %d, want %d", got, want)
	}
	for h, want := range map[string]string{"Content-Type": api.ProblemContentType, "Retry-After": "5"} {
		if got := rec.Header().Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	var got map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"title": "Too Many Requests", "status": float64(429), "detail": "slow down", "error": "slow down"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
}

// TestStatus: an error answers the status of the kind it wraps, 500
// without one; NewError keeps its message.
func TestStatus(t *testing.T) {
	gone := api.NewError(api.ErrNotFound, "unknown tenant")
	for _, tt := range []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w ws-x", gone), http.StatusNotFound},
		{api.NewError(api.ErrConflict, "cannot wake"), http.StatusConflict},
		{api.NewError(api.ErrUnavailable, "not yet"), http.StatusServiceUnavailable},
		{errors.New("database down"), http.StatusInternalServerError},
	} {
		t.Run(tt.err.Error(), func(t *testing.T) {
			if got := api.Status(tt.err); got != tt.want {
				t.Errorf("Status = %d, want %d", got, tt.want)
			}
		})
	}
	if got := fmt.Errorf("%w ws-x", gone).Error(); got != "unknown tenant ws-x" {
		t.Errorf("message = %q", got)
	}
}
