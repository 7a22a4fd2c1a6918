package agent

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/schema"
)

const configJSON = `{"reconciler_url":"https://fleet.example.com","signing_keys":["-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"],"workspace":"ws-acme","droplet_name":"genesis-ws-acme","token":"tok"}`

func gzipB64(s string) string {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write([]byte(s))
	w.Close()
	return base64.StdEncoding.EncodeToString(buf.Bytes())
}

func TestConfigFromUserData(t *testing.T) {
	want := schema.AgentConfig{
		ReconcilerURL: "https://fleet.example.com",
		SigningKeys:   []string{"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n"},
		Workspace:     "ws-acme", DropletName: "genesis-ws-acme", Token: "tok",
	}
	indent := func(s string) string { return "      " + strings.ReplaceAll(s, "\n", "\n      ") }
	good := []struct{ name, doc string }{
		{"literal block", "#cloud-config\npackage_update: true\nwrite_files:\n  - path: /etc/other\n    content: x\n  - path: " + schema.AgentConfigPath + "\n    permissions: '0600'\n    content: |\n" + indent(configJSON) + "\nruncmd:\n  - [systemctl, start, genesis-agent]\n"},
		{"base64", "#cloud-config\nwrite_files:\n- path: " + schema.AgentConfigPath + "\n  encoding: b64\n  content: " + base64.StdEncoding.EncodeToString([]byte(configJSON)) + "\n"},
		{"gzip+base64", "#cloud-config\nwrite_files:\n- path: " + schema.AgentConfigPath + "\n  encoding: gz+b64\n  content: " + gzipB64(configJSON) + "\n"},
	}
	for _, tc := range good {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ConfigFromUserData([]byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(got, want); diff != "" {
				t.Errorf("(-got +want):\n%s", diff)
			}
		})
	}
	bad := []struct{ name, doc, want string }{
		{"not cloud-config", "#!/bin/sh\necho hi\n", "not a #cloud-config"},
		{"no entry", "#cloud-config\nwrite_files:\n- path: /etc/x\n  content: y\n", "no write_files entry"},
		{"two entries", "#cloud-config\nwrite_files:\n- path: " + schema.AgentConfigPath + "\n  content: '{}'\n- path: " + schema.AgentConfigPath + "\n  content: '{}'\n", "two write_files"},
		{"unknown encoding", "#cloud-config\nwrite_files:\n- path: " + schema.AgentConfigPath + "\n  encoding: rot13\n  content: x\n", "unknown encoding"},
		{"bad base64", "#cloud-config\nwrite_files:\n- path: " + schema.AgentConfigPath + "\n  encoding: b64\n  content: '!!'\n", "base64"},
		{"unknown field", "#cloud-config\nwrite_files:\n- path: " + schema.AgentConfigPath + "\n  content: '{\"workspace\":\"a\",\"extra\":1}'\n", "unknown field"},
		{"duplicate key", "#cloud-config\nwrite_files:\n- path: " + schema.AgentConfigPath + "\n  content: '{\"workspace\":\"a\",\"workspace\":\"b\"}'\n", "duplicate key"},
		{"bad yaml", "#cloud-config\nwrite_files: [\n", "user data"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ConfigFromUserData([]byte(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func FuzzConfigFromUserData(f *testing.F) {
	f.Add([]byte("#cloud-config\nwrite_files:\n- path: " + schema.AgentConfigPath + "\n  content: '" + configJSON + "'\n"))
	f.Add([]byte("#cloud-config\nwrite_files:\n- path: " + schema.AgentConfigPath + "\n  encoding: gz+b64\n  content: " + gzipB64(configJSON) + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ConfigFromUserData(data)
		ParseConfig(data)
	})
}

func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		used, total uint64
		bad         bool
	}{
		{"linux", "MemTotal:        2030612 kB\nMemFree:          112340 kB\nMemAvailable:    1030612 kB\nBuffers:  1 kB\n", 1000000 * 1024, 2030612 * 1024, false},
		{"available above total", "MemTotal: 10 kB\nMemAvailable: 20 kB\n", 0, 10240, false},
		{"no available", "MemTotal: 10 kB\n", 0, 0, true},
		{"garbage number", "MemTotal: x kB\nMemAvailable: 1 kB\n", 0, 0, true},
		{"wrong unit", "MemTotal: 1 MB\nMemAvailable: 1 kB\n", 0, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			used, total, err := parseMeminfo([]byte(tc.in))
			if (err != nil) != tc.bad || used != tc.used || total != tc.total {
				t.Errorf("parseMeminfo = %d, %d, %v; want %d, %d, bad=%v", used, total, err, tc.used, tc.total, tc.bad)
			}
		})
	}
}

func FuzzParseMeminfo(f *testing.F) {
	f.Add([]byte("MemTotal: 2030612 kB\nMemAvailable: 1030612 kB\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		used, total, err := parseMeminfo(data)
		if err == nil && used > total {
			t.Fatalf("used %d > total %d", used, total)
		}
	})
}
