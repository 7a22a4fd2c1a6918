package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestActionRotateSecrets: genesis action rotate-secrets asks for
// rotate_secrets; a refusal (409 one runs, 429 budget spent) exits 1.
func TestActionRotateSecrets(t *testing.T) {
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Authorization")+" "+string(body))
		switch r.URL.Path {
		case "/v1/tenants/ws-busy/actions":
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			fmt.Fprint(w, `{"title":"Conflict","status":409,"detail":"cannot rotate ws-busy: a secret rotation is already running (generation 3)"}`)
			return
		case "/v1/tenants/ws-many/actions":
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusTooManyRequests)
			fmt.Fprint(w, `{"title":"Too Many Requests","status":429,"detail":"rotation budget spent"}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"workspace":"ws-a","action":"rotate_secrets","result":"requested"}`)
	}))
	defer srv.Close()
	code, out, errOut := cli(t, "", "action", "rotate-secrets", "ws-a", "--reason", "leaked key", "--reconciler", srv.URL, "--token", "t0k")
	if code != 0 || !strings.Contains(out, "secret rotation of ws-a requested") ||
		got[len(got)-1] != `POST /v1/tenants/ws-a/actions Bearer t0k {"action":"rotate_secrets","reason":"leaked key"}` {
		t.Errorf("rotate-secrets: exit %d, stderr %s, out %s, request %q", code, errOut, out, got)
	}
	for _, ws := range []string{"ws-busy", "ws-many"} {
		code, _, errOut = cli(t, "", "action", "rotate-secrets", ws, "--reason", "x", "--reconciler", srv.URL)
		if code != 1 {
			t.Errorf("%s: exit %d, stderr %s; want 1", ws, code, errOut)
		}
	}
	code, _, errOut = cli(t, "", "action", "rotate-secrets", "ws-a", "--reconciler", srv.URL)
	if code != 2 || !strings.Contains(errOut, "--reason") {
		t.Errorf("no reason: exit %d, stderr %s; want 2", code, errOut)
	}
	code, out, errOut = cli(t, "", "action", "--help")
	if !strings.Contains(out+errOut, "rotate-secrets") {
		t.Errorf("--help does not mention rotate-secrets: exit %d %s %s", code, out, errOut)
	}
}
