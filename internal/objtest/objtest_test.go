package objtest

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSignatures(t *testing.T) {
	now := time.Now()
	o := New(t, func() time.Time { return now }, errors.New("not found"))
	put, _ := o.PresignPut(t.Context(), "ws-a/b.age", time.Hour)
	if code, _ := Do(t, http.MethodPut, put, []byte("data")); code != http.StatusOK {
		t.Fatalf("PUT = %d", code)
	}
	if code, _ := Do(t, http.MethodPut, strings.Replace(put, "ws-a/b.age", "ws-b/b.age", 1), []byte("x")); code != http.StatusForbidden {
		t.Errorf("PUT to another key with the URL = %d, want 403", code)
	}
	if code, _ := Do(t, http.MethodGet, put, nil); code != http.StatusForbidden {
		t.Errorf("GET with a PUT URL = %d, want 403", code)
	}
	get, _ := o.PresignGet(t.Context(), "ws-a/b.age", time.Hour)
	if code, body := Do(t, http.MethodGet, get, nil); code != http.StatusOK || string(body) != "data" {
		t.Errorf("GET = %d %q", code, body)
	}
	now = now.Add(2 * time.Hour)
	if code, _ := Do(t, http.MethodGet, get, nil); code != http.StatusForbidden {
		t.Errorf("GET after expiry = %d, want 403", code)
	}
}
