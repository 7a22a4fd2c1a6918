package schema

import (
	"strings"
	"testing"
)

func TestDecodeStrict(t *testing.T) {
	type doc struct {
		A int            `json:"a"`
		B map[string]int `json:"b"`
		C []struct {
			D string `json:"d"`
		} `json:"c"`
	}
	tests := []struct {
		in, wantErr string
	}{
		{`{"a":1,"b":{"x":1,"y":2},"c":[{"d":"e"},{"d":"f"}]}`, ""},
		{`{"a":1,"a":2}`, `duplicate key "a"`},
		{`{"b":{"x":1,"x":2}}`, `duplicate key "x"`},
		{`{"c":[{"d":"e","d":"f"}]}`, `duplicate key "d"`},
		{`{"c":[{"d":"a"},{"d":"b"}],"a":1}`, ""},
		{`{"a":1} {"a":2}`, "trailing data"},
		{`{"a":1}x`, "trailing data"},
		{`{"a":1,"z":2}`, `unknown field "z"`},
		{``, "empty JSON"},
		{`{"a":`, "unexpected"},
		{strings.Repeat("[", 100) + strings.Repeat("]", 100), "nested too deeply"},
		{`{"b":{"a":1},"a":1}`, ""},
	}
	for _, tt := range tests {
		var d doc
		err := DecodeStrict([]byte(tt.in), &d)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: unexpected error %v", tt.in, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: err = %v, want %q", tt.in, err, tt.wantErr)
		}
	}
}

func FuzzDecodeStrict(f *testing.F) {
	f.Add([]byte(`{"_type":"genesis.manifest.v1","workspace":"ws-a","version":1,"domains":["a.b"]}`))
	f.Add([]byte(`{"a":{"a":{"a":[1,2,{"b":null}]}}}`))
	f.Add([]byte(`{"seq":1,"components":{"n8n":{"ok":true}}}`))
	f.Add([]byte(`{"seq":1,"swap_used_bytes":1073741824,"swap_total_bytes":4294967296,"components":{"swap":{"ok":true}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m Manifest
		_ = DecodeStrict(data, &m)
		var h Heartbeat
		_ = DecodeStrict(data, &h)
	})
}
