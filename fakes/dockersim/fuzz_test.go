package dockersim_test

import (
	"strings"
	"testing"

	"genesis.dev/fleet/fakes/dockersim"
)

func TestInterpolate(t *testing.T) {
	env := map[string]string{"V": "1.2.3", "E": ""}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tt := range []struct{ in, want, err string }{
		{"n8n:${V}", "n8n:1.2.3", ""},
		{"n8n:$V", "n8n:1.2.3", ""},
		{"${U:-1.0.0}", "1.0.0", ""},
		{"${E:-d}", "d", ""},
		{"${E-d}", "", ""},
		{"${U-d}", "d", ""},
		{"$$V", "$V", ""},
		{"${E:?set E}", "", "required variable E is missing a value: set E"},
		{"${V", "", "invalid interpolation format"},
		{"${1X}", "", "invalid interpolation format"},
	} {
		got, err := dockersim.Interpolate(tt.in, lookup)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Interpolate(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Interpolate(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// FuzzParseCompose: any compose file and environment is parsed or refused
// without a panic.
func FuzzParseCompose(f *testing.F) {
	f.Add([]byte("services:\n  n8n:\n    image: n8nio/n8n:${N8N_VERSION:-1}\n    environment:\n      A: $B\n"), "1.2.3")
	f.Add([]byte("services:\n  n8n:\n    environment: [\"A=${X:?no}\", B]\n"), "")
	f.Add([]byte("services: [1, 2]"), "x")
	f.Fuzz(func(t *testing.T, data []byte, v string) {
		lookup := func(k string) (string, bool) { return v, k == "N8N_VERSION" }
		_, _ = dockersim.ParseCompose(data, lookup)
		_, _ = dockersim.Interpolate(string(data), lookup)
	})
}
