package activator

import (
	"strings"
	"testing"
)

func TestParseHost(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"WS-1.T.Genesis.Test", "ws-1.t.genesis.test", true},
		{"track.acme.com.:443", "track.acme.com", true},
		{"track.acme.com:8443", "track.acme.com", true},
		{"[::1]:443", "", false},
		{"a..b", "", false},
		{"-a.b", "", false},
		{"a b", "", false},
		{"", "", false},
		{"a:b:c", "", false},
		{strings.Repeat("a", 64) + ".b", "", false},
	} {
		got, ok := ParseHost(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseHost(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzParseHost: a parsed host is a lowercase DNS name without port or
// trailing dot, and parsing it again gives it back.
func FuzzParseHost(f *testing.F) {
	for _, s := range []string{"ws-1.t.genesis.test", "Track.Acme.com.:443", "[::1]:80", "a..b", "", ":", "x:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, ok := ParseHost(s)
		if !ok {
			if h != "" {
				t.Fatalf("refused %q but returned %q", s, h)
			}
			return
		}
		if h != strings.ToLower(h) || strings.ContainsAny(h, ":/ []") || strings.HasSuffix(h, ".") || len(h) > 253 {
			t.Fatalf("ParseHost(%q) = %q", s, h)
		}
		if again, ok := ParseHost(h); !ok || again != h {
			t.Fatalf("ParseHost(%q) = %q, %v; not stable", h, again, ok)
		}
	})
}

func TestMatchPixelPath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want bool
	}{
		{"/webhook/o/abc123", true},
		{"/webhook/o/abc.gif", true},
		{"/webhook/o/", false},
		{"/webhook/o/a/b", false},
		{"/webhook/c/abc", false},
		{"/webhook/o", false},
	} {
		if got := MatchPixelPath(DefaultPixelPaths, tc.path); got != tc.want {
			t.Errorf("MatchPixelPath(%q) = %v, want %v", tc.path, got, tc.want)
		}
	}
}

// FuzzPixelPath: a rejected pattern is named in its error; a pattern
// CheckPixelPath accepts never panics when matched, a literal pattern
// matches exactly itself, and "*" never crosses a slash.
func FuzzPixelPath(f *testing.F) {
	for _, s := range []string{"/webhook/o/*", "/t/*.gif", "/[a-", "relative/*", "/a\\", "/x/**"} {
		f.Add(s, "/webhook/o/abc")
	}
	f.Fuzz(func(t *testing.T, pattern, urlPath string) {
		if err := CheckPixelPath(pattern); err != nil {
			if err.Error() == "" || !strings.Contains(err.Error(), "pixel path") {
				t.Fatalf("CheckPixelPath(%q): error %q does not name the pattern", pattern, err)
			}
			return
		}
		matched := MatchPixelPath([]string{pattern}, urlPath)
		if !strings.ContainsAny(pattern, `*?[\`) && matched != (pattern == urlPath && !strings.HasSuffix(urlPath, "/")) {
			t.Fatalf("literal %q vs %q: matched %v", pattern, urlPath, matched)
		}
		if matched && strings.Count(pattern, "/") != strings.Count(urlPath, "/") && !strings.Contains(pattern, "[") && !strings.Contains(pattern, `\`) {
			t.Fatalf("%q matched %q across a slash", pattern, urlPath)
		}
	})
}
