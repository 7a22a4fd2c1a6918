package n8n_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"genesis.dev/fleet/fakes/n8nemu"
)

func TestLastExecution(t *testing.T) {
	ctx := t.Context()
	emu, c := setupEmu(t)
	got, err := c.LastExecution(ctx)
	if err != nil || !got.IsZero() {
		t.Fatalf("no executions: %v, %v; want the zero time", got, err)
	}
	older := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	newer := older.Add(90*time.Minute + 250*time.Millisecond)
	emu.RecordExecution("wf1", older)
	emu.RecordExecution("wf2", newer)
	got, err = c.LastExecution(ctx)
	if err != nil || !got.Equal(newer) {
		t.Fatalf("two executions: %v, %v; want %v", got, err, newer)
	}
	if n := emu.Calls()["GET /api/v1/executions"]; n != 2 {
		t.Errorf("%d executions listings, want 2", n)
	}
}

func TestExecutionsLimit(t *testing.T) {
	emu := n8nemu.Start(t)
	key := bootstrapKey(t, emu.URL)
	emu.RecordExecution("wf1", time.Now())
	get := func(query string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, emu.URL+"/api/v1/executions"+query, nil)
		req.Header.Set("X-N8N-API-KEY", key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	for _, q := range []string{"?limit=0", "?limit=251", "?limit=x"} {
		if status, body := get(q); status != http.StatusBadRequest {
			t.Errorf("%s: %d %v, want 400", q, status, body)
		}
	}
	for _, q := range []string{"", "?limit=1", "?limit=250"} {
		status, body := get(q)
		data, _ := body["data"].([]any)
		if status != http.StatusOK || len(data) != 1 {
			t.Errorf("%s: %d %v, want 200 with one execution", q, status, body)
		}
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, emu.URL+"/api/v1/executions", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no api key: %d, want 401", resp.StatusCode)
	}
}
