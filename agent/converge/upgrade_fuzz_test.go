package converge_test

import (
	"encoding/json"
	"strings"
	"testing"

	"genesis.dev/fleet/agent/converge"
)

func TestVersionLess(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want bool
	}{
		{"1.123.81", "1.124.0", true},
		{"1.124.0", "1.123.81", false},
		{"1.9.0", "1.10.0", true},
		{"1.124.0-broken", "1.124.0", true},
		{"1.124.0", "1.124.0-broken", false},
		{"1.124.0-rc.2", "1.124.0-rc.10", true},
		{"1.124.0", "1.124.0", false},
		{"latest", "1.0.0", false},
		{"1.0.0", "", false},
	} {
		if got := converge.VersionLess(tt.a, tt.b); got != tt.want {
			t.Errorf("VersionLess(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

// FuzzVersionLess: manifest versions are outside input; no panic, and the
// order is strict (never both a<b and b<a, never a<a).
func FuzzVersionLess(f *testing.F) {
	f.Add("1.123.81", "1.124.0-broken")
	f.Add("1.2.3.4", "1.2.3-x.1")
	f.Fuzz(func(t *testing.T, a, b string) {
		if converge.VersionLess(a, a) {
			t.Fatalf("%q < itself", a)
		}
		if converge.VersionLess(a, b) && converge.VersionLess(b, a) {
			t.Fatalf("%q and %q are each less than the other", a, b)
		}
	})
}

// FuzzWebhookOf: a manifest workflow's JSON never panics the webhook
// finder, and what it returns is a plain method and a path without
// parameters.
func FuzzWebhookOf(f *testing.F) {
	f.Add([]byte(`{"nodes":[{"type":"n8n-nodes-base.webhook","parameters":{"path":"click","httpMethod":"POST"}}]}`))
	f.Add([]byte(`{"nodes":[{"type":"n8n-nodes-base.webhook","parameters":{"path":":id"}}]}`))
	f.Add([]byte(`{"nodes":[{"type":"x.webhook","parameters":{"path":7}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		method, path, ok := converge.WebhookOf(json.RawMessage(data))
		if ok && (path == "" || method == "" || strings.Contains(path, ":")) {
			t.Fatalf("ok with method %q path %q", method, path)
		}
	})
}

// TestWebhookOf: a static path is called as it is; one with :parameters
// under the node's webhookId (n8n's dynamic webhooks) with each parameter
// filled; a node without a usable webhookId is passed over.
func TestWebhookOf(t *testing.T) {
	for _, tc := range []struct{ doc, method, path string }{
		{`{"nodes":[{"type":"n8n-nodes-base.webhook","parameters":{"path":"/click/","httpMethod":"post"}}]}`, "POST", "click"},
		{`{"nodes":[{"type":"n8n-nodes-base.webhook","webhookId":"0d5f-3c8e","parameters":{"path":"c/:sendId"}}]}`, "GET", "0d5f-3c8e/c/" + converge.SyntheticParam},
		{`{"nodes":[{"type":"n8n-nodes-base.webhook","webhookId":"a b","parameters":{"path":"c/:sendId"}},{"type":"n8n-nodes-base.webhook","parameters":{"path":"o"}}]}`, "GET", "o"},
		{`{"nodes":[{"type":"n8n-nodes-base.webhook","disabled":true,"parameters":{"path":"x"}}]}`, "", ""},
	} {
		method, path, _ := converge.WebhookOf(json.RawMessage(tc.doc))
		if method != tc.method || path != tc.path {
			t.Errorf("%s: %q %q, want %q %q", tc.doc, method, path, tc.method, tc.path)
		}
	}
}
