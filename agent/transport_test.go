package agent

import (
	"net/url"
	"strings"
	"testing"

	"genesis.dev/fleet/schema"
)

func TestCheckTransport(t *testing.T) {
	tests := []struct {
		url      string
		insecure bool
		want     string // "" means accepted
	}{
		{"https://fleet.example.com", false, ""},
		{"https://fleet.example.com", true, ""},
		{"http://127.0.0.1:8080", true, ""},
		{"http://127.0.0.1:8080/x?y", false, "reconciler_url http://127.0.0.1:8080 is plain http"},
		{"http://user:secret@fleet.example.com/", false, "reconciler_url http://fleet.example.com is plain http"},
		{"HTTP://fleet.example.com", false, "reconciler_url http://fleet.example.com is plain http"},
		{"ftp://fleet.example.com", true, `reconciler_url scheme "ftp": want https`},
		{"%zz", false, "reconciler_url is not a URL"},
	}
	for _, tc := range tests {
		t.Run(tc.url, func(t *testing.T) {
			err := CheckTransport(schema.AgentConfig{ReconcilerURL: tc.url}, tc.insecure)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if (got == "") != (tc.want == "") || !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzCheckTransport: any URL is judged without a panic, and a refusal
// never repeats the URL's password.
func FuzzCheckTransport(f *testing.F) {
	f.Add("http://u:pw-s3cret-1@h/", false)
	f.Add("ftp://u:pw-s3cret-1@h/", false)
	f.Add("https://h", true)
	f.Fuzz(func(t *testing.T, raw string, insecure bool) {
		err := CheckTransport(schema.AgentConfig{ReconcilerURL: raw}, insecure)
		u, perr := url.Parse(raw)
		if err == nil || perr != nil || u.User == nil {
			return
		}
		pw, ok := u.User.Password()
		if ok && len(pw) >= 8 && !strings.Contains(u.Scheme+u.Host, pw) && strings.Contains(err.Error(), pw) {
			t.Errorf("%q: error %q repeats the password", raw, err)
		}
	})
}
