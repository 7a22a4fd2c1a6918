package yamledit

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", name, diff)
	}
}

func TestGolden(t *testing.T) {
	doc, err := os.ReadFile("testdata/commented.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, golden string
		run          func() ([]byte, error)
	}{
		{"merge patch", "patched.golden.yaml", func() ([]byte, error) {
			return MergePatch(doc, []byte(`{"spec":{"state":"hibernated","n8n":{"version":"1.124.0"},"droplet":{"size":null},"domains":["track.acme.com","go.acme.com"],"hibernation":{"afterIdle":"72h"}}}`))
		}},
		{"replace", "replaced.golden.yaml", func() ([]byte, error) {
			return Replace(doc, []byte(`{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-acme","name":"Acme Corporation","tier":"pro"},"spec":{"state":"running","droplet":{"region":"fra1"},"domains":["track.acme.com"]}}`))
		}},
		{"new", "new.golden.yaml", func() ([]byte, error) {
			return New([]byte(`{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-new","name":"1984","tier":"starter"},"spec":{"state":"running","droplet":{"region":"nyc3"},"credentials":[{"name":"k","type":"openAiApi","sealed":"-----BEGIN AGE ENCRYPTED FILE-----\nAAAA\n-----END AGE ENCRYPTED FILE-----\n"}]}}`))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.run()
			if err != nil {
				t.Fatal(err)
			}
			golden(t, tt.golden, got)
		})
	}
}

func TestMergePatchRFC7386(t *testing.T) {
	// The examples of RFC 7386 appendix A, in YAML.
	tests := []struct{ doc, patch, want string }{
		{`{a: b}`, `{"a":"c"}`, "{a: c}\n"},
		{`{a: b}`, `{"b":"c"}`, "{a: b, b: c}\n"},
		{`{a: b}`, `{"a":null}`, "{}\n"},
		{`{a: b, b: c}`, `{"a":null}`, "{b: c}\n"},
		{`{a: [b]}`, `{"a":"c"}`, "{a: c}\n"},
		{`{a: c}`, `{"a":["b"]}`, "{a: [b]}\n"},
		{"a:\n  b: c\n", `{"a":{"b":"d","c":null}}`, "a:\n  b: d\n"},
		{"a:\n  - b: c\n", `{"a":[1]}`, "a:\n  - 1\n"},
		{"e: null\n", `{"a":1}`, "e: null\na: 1\n"},
		{"", `{"a":{"bb":{"ccc":null}}}`, "a:\n  bb: {}\n"},
		{"n: \"1984\"\n", `{"m":"1984","t":"true"}`, "n: \"1984\"\nm: \"1984\"\nt: \"true\"\n"},
	}
	for _, tt := range tests {
		got, err := MergePatch([]byte(tt.doc), []byte(tt.patch))
		if err != nil {
			t.Errorf("MergePatch(%q, %s): %v", tt.doc, tt.patch, err)
			continue
		}
		if diff := cmp.Diff(tt.want, string(got)); diff != "" {
			t.Errorf("MergePatch(%q, %s) (-want +got):\n%s", tt.doc, tt.patch, diff)
		}
	}
}

func TestRefused(t *testing.T) {
	deep := strings.Repeat(`{"a":`, MaxDepth+2) + "1" + strings.Repeat("}", MaxDepth+2)
	tests := []struct{ name, doc, patch, want string }{
		{"array patch", "a: 1\n", `[1]`, "patch: must be a JSON object"},
		{"scalar patch", "a: 1\n", `"x"`, "patch: must be a JSON object"},
		{"duplicate key", "a: 1\n", `{"a":1,"a":2}`, `patch: duplicate JSON key "a"`},
		{"trailing data", "a: 1\n", `{"a":1} {}`, "patch: unexpected data after the JSON value"},
		{"malformed", "a: 1\n", `{"a":`, "patch: malformed JSON: EOF"},
		{"too deep", "a: 1\n", deep, "patch: JSON nests deeper than 32 levels"},
		{"doc is a list", "- a\n", `{}`, "current file is not a YAML mapping"},
		{"two documents", "a: 1\n---\nb: 2\n", `{}`, "current file holds more than one YAML document"},
		{"bad yaml", "a: [\n", `{}`, "current file does not parse as YAML: yaml: line 1: did not find expected node content"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := MergePatch([]byte(tt.doc), []byte(tt.patch))
			if err == nil {
				t.Fatal("no error")
			}
			if diff := cmp.Diff(tt.want, err.Error()); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzMergePatch: no input panics, and a result always parses again and
// accepts an empty patch unchanged.
func FuzzMergePatch(f *testing.F) {
	doc, _ := os.ReadFile("testdata/commented.yaml")
	f.Add(doc, []byte(`{"spec":{"state":"absent"}}`))
	f.Add([]byte("a: &x 1\nb: *x\n"), []byte(`{"b":null}`))
	f.Add([]byte("a: !!binary aGk=\n"), []byte(`{"c":[1,2,{"d":null}]}`))
	f.Fuzz(func(t *testing.T, doc, patch []byte) {
		out, err := MergePatch(doc, patch)
		if err != nil {
			return
		}
		again, err := MergePatch(out, []byte(`{}`))
		if err != nil {
			t.Fatalf("result does not parse again: %v\n%s", err, out)
		}
		if string(again) != string(out) {
			t.Fatalf("empty patch changed the result:\n%s\n---\n%s", out, again)
		}
		_, _ = Replace(doc, patch)
	})
}

func TestUpsertItem(t *testing.T) {
	doc, err := os.ReadFile("testdata/commented.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := UpsertItem(doc, []string{"spec", "credentials"}, "name", []byte(`{"name":"gmail","type":"gmailOAuth2","sealed":"A\nB\n"}`))
	if err != nil {
		t.Fatal(err)
	}
	out, err = UpsertItem(out, []string{"spec", "credentials"}, "name", []byte(`{"name":"openai","type":"openAiApi","sealed":"C\nD\n"}`))
	if err != nil {
		t.Fatal(err)
	}
	out, err = UpsertItem(out, []string{"spec", "credentials"}, "name", []byte(`{"name":"gmail","type":"gmailOAuth2","sealed":"E\nF\n"}`))
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "upserted.golden.yaml", out)
	for _, bad := range []struct{ item, want string }{
		{`[1]`, "item must be a JSON object"},
		{`{"type":"x"}`, `item has no "name"`},
	} {
		if _, err := UpsertItem(doc, []string{"spec", "credentials"}, "name", []byte(bad.item)); err == nil || err.Error() != bad.want {
			t.Errorf("UpsertItem(%s) = %v, want %q", bad.item, err, bad.want)
		}
	}
	if _, err := UpsertItem(doc, []string{"spec", "state", "x"}, "name", []byte(`{"name":"a"}`)); err == nil || err.Error() != "spec.state is not a mapping" {
		t.Errorf("through a scalar: %v", err)
	}
}
