package n8nemu

import "testing"

func TestWebhookMatch(t *testing.T) {
	for _, tc := range []struct {
		pattern, key string
		want         bool
	}{
		{"GET click", "GET click", true},
		{"GET id-1/c/:sendId", "GET id-1/c/abc", true},
		{"GET id-1/c/:sendId", "GET id-1/c/", false},
		{"GET id-1/c/:sendId", "GET id-1/c/abc/d", false},
		{"GET id-1/c/:sendId", "POST id-1/c/abc", false},
		{"GET id-1/c/:sendId", "GET id-2/c/abc", false},
	} {
		if got := webhookMatch(tc.pattern, tc.key); got != tc.want {
			t.Errorf("webhookMatch(%q, %q) = %v, want %v", tc.pattern, tc.key, got, tc.want)
		}
	}
}
