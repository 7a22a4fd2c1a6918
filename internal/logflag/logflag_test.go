package logflag

import (
	"bytes"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	tests := []struct {
		format, level, wantErr, wantOut string
	}{
		{"json", "info", "", `"msg":"hello"`},
		{"text", "debug", "", "msg=hello"},
		{"text", "error", "", ""},
		{"xml", "info", `--log-format: want text or json, got "xml"`, ""},
		{"json", "loud", "--log-level:", ""},
	}
	for _, tt := range tests {
		var buf bytes.Buffer
		log, err := New(&buf, tt.format, tt.level)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New(%q, %q) err = %v, want %q", tt.format, tt.level, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello")
		if got := buf.String(); (tt.wantOut == "") != (got == "") || !strings.Contains(got, tt.wantOut) {
			t.Errorf("New(%q, %q) wrote %q, want %q", tt.format, tt.level, got, tt.wantOut)
		}
	}
}
