package stateapi_test

import (
	"strconv"
	"strings"
	"testing"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/stateapi"
)

// trailers is what git itself parses as the trailers of main's last commit.
func (w *world) trailers() string {
	return testkit.Git(w.t, w.bare, "log", "-1", "--format=%(trailers:only,unfold)", "main")
}

// TestForgedTrailersRefused reproduces a dashboard token forging commit
// trailers through field names (and the other caller input that reaches a
// commit message): every attempt is 400 naming the field, nothing is
// committed or audited, and the commits the API does make carry exactly one
// trailer, its own correlation id, as git parses it.
func TestForgedTrailersRefused(t *testing.T) {
	w := newWorld(t, 0, false)
	head := w.head()
	acme := w.etag("ws-acme")
	cred := `{"name":"k","type":"openAiApi","data":{"apiKey":"x"}}`
	tests := []struct {
		name, method, path, body string
		hdr                      []string
		want                     string // the error, or the first validation message
	}{
		{"newline trailer in a patch key", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"state":"hibernated","x\nGenesis-Correlation-Id: forged":null}}`, nil,
			`body: field "spec.x\nGenesis-Correlation-Id: forged": a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter`},
		{"signed-off-by paragraph", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"state":"hibernated"},"\n\nSigned-off-by: Mallory <m@example.com>":null}`, nil,
			`body: field "\n\nSigned-off-by: Mallory <m@example.com>": a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter`},
		{"carriage return", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"state\r":"hibernated"}}`, nil,
			`body: field "spec.state\r": a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter`},
		{"NUL and escape", "PATCH", "/v1/tenants/ws-acme", `{"metadata":{"na\u0000me\u001b[2J":"A"}}`, nil,
			`body: field "metadata.na\x00me\x1b[2J": a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter`},
		{"key inside a list item", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"workflows":[{"template":"a"},{"params":{"ok":1,"x\nCo-authored-by: m":2}}]}}`, nil,
			`body: field "spec.workflows[1].params.x\nCo-authored-by: m": a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter`},
		{"dotted key", "PATCH", "/v1/tenants/ws-acme", `{"spec.state":"absent"}`, nil,
			`body: field "spec.state": a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter`},
		{"empty key", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"":1}}`, nil,
			`body: field "spec.": a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter`},
		{"replace", "PUT", "/v1/tenants/ws-acme", `{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-acme","name":"A","tier":"pro","x\nSigned-off-by: m":1},"spec":{"state":"running","droplet":{"region":"nyc3"}}}`, nil,
			`body: field "metadata.x\nSigned-off-by: m": a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter`},
		{"onboard", "POST", "/v1/tenants", `{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-evil","name":"E","tier":"pro"},"spec":{"state":"running","droplet":{"region":"nyc3"},"\nSigned-off-by: m":1}}`, nil,
			`body: field "spec.\nSigned-off-by: m": a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter`},
		{"credential name", "POST", "/v1/tenants/ws-acme/credentials", `{"name":"k\n\nSigned-off-by: m","type":"openAiApi","data":{"apiKey":"x"}}`, nil,
			`tenants/ws-acme.yaml:54:13: spec.credentials[3].name: "k\n\nSigned-off-by: m" must be 1-63 characters of a-z, 0-9 and -`},
		{"credential type", "POST", "/v1/tenants/ws-acme/credentials", `{"name":"k","type":"x\nGenesis-Correlation-Id: forged","data":{"apiKey":"x"}}`, nil,
			`tenants/ws-acme.yaml:55:13: spec.credentials[3].type: "x\nGenesis-Correlation-Id: forged" is not an n8n credential type name`},
		{"correlation id with a space", "POST", "/v1/tenants/ws-acme/credentials", cred, []string{stateapi.CorrelationHeader, "a b"},
			"X-Correlation-Id: must be 1-64 characters of A-Z, a-z, 0-9 and . _ : -"},
		{"correlation id too long", "DELETE", "/v1/tenants/ws-acme", "", []string{stateapi.CorrelationHeader, strings.Repeat("c", 65)},
			"X-Correlation-Id: must be 1-64 characters of A-Z, a-z, 0-9 and . _ : -"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.t = t
			r := w.do("dash", tt.method, tt.path, tt.body, append([]string{"If-Match", acme}, tt.hdr...)...)
			var p api.Problem
			r.json(t, &p)
			got := p.Error
			if len(p.Errors) > 0 {
				got = p.Errors[0].Error()
			}
			if r.code != 400 || got != tt.want {
				t.Errorf("got %d %q\nwant 400 %q", r.code, got, tt.want)
			}
		})
	}
	w.t = t
	if got := w.head(); got != head {
		t.Fatalf("refused requests moved main %s -> %s", head, got)
	}
	var audits int
	if err := w.store.Pool().QueryRow(t.Context(), `SELECT count(*) FROM audit_log`).Scan(&audits); err != nil || audits != 0 {
		t.Errorf("%d audit rows for refused requests (%v)", audits, err)
	}

	// What is accepted is quoted: git finds one trailer, the API's own.
	r := w.do("dash", "PATCH", "/v1/tenants/ws-acme", `{"spec":{"state":"hibernated","n8n":{"version":"1.124.0"}},"metadata":{"name":"Acme: Signed-off-by"}}`,
		"If-Match", acme, stateapi.CorrelationHeader, "req-1")
	if r.code != 200 {
		t.Fatalf("patch: %d %s", r.code, r.body)
	}
	if got, want := testkit.Git(t, w.bare, "log", "-1", "--format=%s", "main"), `patch ws-acme: "metadata.name", "spec.n8n.version", "spec.state"`; got != want {
		t.Errorf("subject %q, want %q", got, want)
	}
	if got, want := w.trailers(), "Genesis-Correlation-Id: req-1"; got != want {
		t.Errorf("trailers %q, want %q", got, want)
	}
}

// TestHostilePatchRefusedFirst: a deeply nested or very wide 1 MiB patch is
// refused while it is read, before If-Match is looked at and before the
// tenant is looked up (the tenant here does not exist and no If-Match is
// sent: the answer is the body's error, not 404 or 428).
func TestHostilePatchRefusedFirst(t *testing.T) {
	w := newWorld(t, 0, false)
	head := w.head()
	tests := []struct{ name, body, want string }{
		{"deep", deepPatch(stateapi.DefaultMaxBody), "body: JSON nests deeper than 32 levels"},
		{"deep arrays", strings.Repeat("[", 40000), "body: JSON nests deeper than 32 levels"},
		{"wide", widePatch(stateapi.DefaultMaxBody), "body: JSON holds more than 2000 values (object members and array items)"},
		{"long list", `{"spec":{"domains":[` + strings.Repeat(`"a.b",`, 20000) + `"a.b"]}}`, "body: JSON holds more than 2000 values (object members and array items)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w.t = t
			r := w.do("dash", "PATCH", "/v1/tenants/ws-nobody", tt.body)
			var p api.Problem
			r.json(t, &p)
			if r.code != 400 || p.Error != tt.want {
				t.Errorf("got %d %q\nwant 400 %q", r.code, p.Error, tt.want)
			}
		})
	}
	w.t = t
	if got := w.head(); got != head {
		t.Fatalf("refused requests moved main %s -> %s", head, got)
	}
}

// deepPatch is a patch of about size bytes nested 1,000 levels deep, the
// rest of its bytes in the innermost string.
func deepPatch(size int) string {
	const levels = 1000
	pad := size - levels*6 - 16
	return strings.Repeat(`{"a":`, levels) + `"` + strings.Repeat("x", pad) + `"` + strings.Repeat("}", levels)
}

// widePatch is a patch of about size bytes of distinct one-level keys.
func widePatch(size int) string {
	var b strings.Builder
	b.WriteString(`{"spec":{`)
	for i := 0; b.Len() < size-32; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"k`)
		b.WriteString(strings.Repeat("x", i%7))
		b.WriteString(strconv.Itoa(i))
		b.WriteString(`":1`)
	}
	b.WriteString("}}")
	return b.String()
}
