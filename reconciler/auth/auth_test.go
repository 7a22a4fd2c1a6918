package auth

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseTokens(t *testing.T) {
	h := Hash("secret")
	tests := []struct{ name, in, want string }{
		{"ok", "# comment\n\n{\"name\":\"dash\",\"sha256\":\"" + h + "\",\"scopes\":[\"dashboard\"]}\n", ""},
		{"unknown field", `{"name":"d","sha256":"` + h + `","scopes":["admin"],"role":"x"}`, `tokens line 1: unknown field "role"`},
		{"bad hash", `{"name":"d","sha256":"abc","scopes":["admin"]}`, "tokens line 1: sha256: want 64 hex digits (genesis token new prints it)"},
		{"bad scope", `{"name":"d","sha256":"` + h + `","scopes":["root"]}`, `tokens line 1: scopes[0]: unknown scope "root" (dashboard, admin, agent, metrics)`},
		{"no scope", `{"name":"d","sha256":"` + h + `"}`, "tokens line 1: scopes: at least one of dashboard, admin, agent, metrics"},
		{"bad name", `{"name":"a b","sha256":"` + h + `","scopes":["admin"]}`, `tokens line 1: name: "a b" must be 1-64 characters of letters, digits and ._@-`},
		{"same name", `{"name":"d","sha256":"` + h + `","scopes":["admin"]}` + "\n" + `{"name":"d","sha256":"` + Hash("x") + `","scopes":["admin"]}`, `tokens line 2: name: "d" is used twice`},
		{"same hash", `{"name":"d","sha256":"` + h + `","scopes":["admin"]}` + "\n" + `{"name":"e","sha256":"` + strings.ToUpper(h) + `","scopes":["admin"]}`, "tokens line 2: sha256: the same token is configured twice"},
		{"email with a newline", `{"name":"d","email":"a@b.c\nAuthor: x","sha256":"` + h + `","scopes":["admin"]}`, `tokens line 1: email: "a@b.c\nAuthor: x" is not a plain address (letters, digits and ._%+- before the @)`},
		{"email with brackets", `{"name":"d","email":"a <x@y>","sha256":"` + h + `","scopes":["admin"]}`, `tokens line 1: email: "a <x@y>" is not a plain address (letters, digits and ._%+- before the @)`},
		{"not json", `name: d`, "tokens line 1: invalid character 'a' in literal null (expecting 'u')"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTokens([]byte(tt.in))
			got := ""
			if err != nil {
				got = err.Error()
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseTokens(f *testing.F) {
	f.Add([]byte(`{"name":"d","sha256":"` + Hash("x") + `","scopes":["admin"]}`))
	f.Add([]byte("#\n{}\n[]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		toks, err := ParseTokens(data)
		if err != nil {
			return
		}
		for _, tk := range toks {
			if len(tk.SHA256) != 64 || len(tk.Scopes) == 0 {
				t.Fatalf("accepted %+v", tk)
			}
		}
	})
}

func TestRequire(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a := New(Config{Rate: 1, Burst: 3, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now }, Tokens: []Token{
		{Name: "dash", SHA256: Hash("tok-dash"), Scopes: []Scope{Dashboard}},
		{Name: "root", SHA256: Hash("tok-admin"), Scopes: []Scope{Admin}},
		{Name: "agent", SHA256: Hash("tok-agent"), Scopes: []Scope{Agent}},
		{Name: "prom", SHA256: Hash("tok-metrics"), Scopes: []Scope{Metrics}},
	}})
	var who string
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, _ := FromContext(r.Context())
		who = id.Name
	})
	do := func(scope Scope, header string) (int, http.Header) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/x", nil)
		if header != "" {
			req.Header.Set("Authorization", header)
		}
		a.Require(scope, ok).ServeHTTP(rec, req)
		return rec.Code, rec.Header()
	}
	tests := []struct {
		name   string
		scope  Scope
		header string
		want   int
	}{
		{"no token", Dashboard, "", 401},
		{"not bearer", Dashboard, "Basic tok-dash", 401},
		{"unknown token", Dashboard, "Bearer nope", 401},
		{"dashboard reads", Dashboard, "Bearer tok-dash", 200},
		{"dashboard is not admin", Admin, "Bearer tok-dash", 403},
		{"admin implies dashboard", Dashboard, "Bearer tok-admin", 200},
		{"admin implies metrics", Metrics, "Bearer tok-admin", 200},
		{"agent token opens nothing else", Dashboard, "Bearer tok-agent", 403},
		{"metrics only metrics", Dashboard, "Bearer tok-metrics", 403},
		{"metrics", Metrics, "Bearer tok-metrics", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := do(tt.scope, tt.header); got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
		})
	}
	// Rate: "root" spent two requests above; one more fits the burst of 3.
	if code, _ := do(Admin, "Bearer tok-admin"); code != 200 || who != "root" {
		t.Fatalf("second request: %d as %q", code, who)
	}
	code, h := do(Admin, "Bearer tok-admin")
	if code != 429 || h.Get("Retry-After") != "1" {
		t.Fatalf("third request: %d Retry-After %q, want 429 and 1", code, h.Get("Retry-After"))
	}
	if code, _ := do(Dashboard, "Bearer tok-dash"); code != 200 {
		t.Errorf("another token's bucket is separate: %d", code)
	}
	now = now.Add(time.Second)
	if code, _ := do(Admin, "Bearer tok-admin"); code != 200 {
		t.Errorf("after a second: %d", code)
	}
}
