package n8nemu

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// post sends a JSON body with optional cookie and API key and returns the
// status and n8n's message.
func post(t *testing.T, s *Server, path, body, cookie, key string) (int, string, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if cookie != "" {
		req.Header.Set("Cookie", cookie)
	}
	if key != "" {
		req.Header.Set("X-N8N-API-KEY", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var m struct {
		Message string `json:"message"`
	}
	_ = json.Unmarshal(data, &m)
	return resp.StatusCode, m.Message, resp
}

func TestAPIKeys(t *testing.T) {
	s := Start(t)
	st, _, resp := post(t, s, "/rest/owner/setup", `{"email":"a@b.co","firstName":"A","lastName":"B","password":"Passw0rdX"}`, "", "")
	if st != 200 {
		t.Fatalf("setup: %d", st)
	}
	var cookie string
	for _, c := range resp.Cookies() {
		if c.Name == "n8n-auth" {
			cookie = c.Name + "=" + c.Value
		}
	}
	if cookie == "" {
		t.Fatal("no n8n-auth cookie")
	}
	st, msg, _ := post(t, s, "/rest/owner/setup", `{"email":"a@b.co","firstName":"A","lastName":"B","password":"Passw0rdX"}`, "", "")
	if st != 400 || msg != "Instance owner already setup" {
		t.Errorf("second setup: %d %q", st, msg)
	}

	fixed := time.Now().UTC() // "same second" below must be the same second
	s.mu.Lock()
	s.now = func() time.Time { return fixed }
	s.mu.Unlock()
	tests := []struct {
		name, body, cookie string
		want               int
	}{
		{"no cookie", `{"label":"k","scopes":["workflow:read"],"expiresAt":null}`, "", 401},
		{"unknown scope", `{"label":"k","scopes":["workflow:read","root:everything"],"expiresAt":null}`, cookie, 400},
		{"no label", `{"scopes":["workflow:read"],"expiresAt":null}`, cookie, 400},
		{"extra field", `{"label":"k","scopes":["workflow:read"],"expiresAt":null,"x":1}`, cookie, 400},
		{"ok", `{"label":"k","scopes":["workflow:read"],"expiresAt":null}`, cookie, 200},
		{"same label", `{"label":"k","scopes":["workflow:read"],"expiresAt":null}`, cookie, 500},
		{"same second", `{"label":"k2","scopes":["workflow:read"],"expiresAt":null}`, cookie, 500},
		{"label too long", `{"label":"` + strings.Repeat("x", 51) + `","scopes":["workflow:read"],"expiresAt":null}`, cookie, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _, _ := post(t, s, "/rest/api-keys", tt.body, tt.cookie, "")
			if st != tt.want {
				t.Errorf("status %d, want %d", st, tt.want)
			}
		})
	}

	// A key with only workflow:read can read but not create. (A second
	// later: keys of the same second clash.)
	s.mu.Lock()
	s.now = func() time.Time { return fixed.Add(2 * time.Second) }
	s.mu.Unlock()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.URL+"/rest/api-keys",
		strings.NewReader(`{"label":"ro","scopes":["workflow:read"],"expiresAt":null}`))
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var key struct {
		Data struct {
			RawAPIKey string `json:"rawApiKey"`
		} `json:"data"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&key)
	resp.Body.Close()
	st, msg, _ = post(t, s, "/api/v1/workflows", minimal, "", key.Data.RawAPIKey)
	if diff := cmp.Diff([2]any{403, "Forbidden"}, [2]any{st, msg}); diff != "" {
		t.Errorf("create with a read-only key (-want +got):\n%s", diff)
	}
}
