package yamledit

import (
	"errors"
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

func lowerOnly(k string) error {
	for _, c := range k {
		if c < 'a' || c > 'z' {
			return errors.New("not a-z")
		}
	}
	return nil
}

func TestParseJSON(t *testing.T) {
	deep := strings.Repeat(`{"a":`, MaxDepth+2)
	list := func(n int) string { return `{"a":[` + strings.TrimSuffix(strings.Repeat("1,", n), ",") + `]}` }
	tests := []struct {
		name, in string
		fields   []string // when want is ""
		want     string
	}{
		{"fields", `{"spec":{"state":"x","n":{"v":"1"},"d":["a"],"e":{}},"m":null}`, []string{"m", "spec.d", "spec.e", "spec.n.v", "spec.state"}, ""},
		{"not an object", `[{"a":1}]`, nil, ""},
		{"key refused", `{"a":{"b\nc":1}}`, nil, `field "a.b\nc": not a-z`},
		{"key in a list item", `{"a":[{"b":1},{"c":{"D":2}}]}`, nil, `field "a[1].c.D": not a-z`},
		{"duplicate", `{"a":{"b":1,"b":2}}`, nil, `duplicate JSON key "a.b"`},
		{"deepest accepted", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1), nil, ""},
		{"one level too deep", strings.Repeat("[", MaxDepth+2) + strings.Repeat("]", MaxDepth+2), nil, "JSON nests deeper than 32 levels"},
		{"scalar too deep", strings.Repeat("[", MaxDepth+1) + "1" + strings.Repeat("]", MaxDepth+1), nil, "JSON nests deeper than 32 levels"},
		// Nothing past the limit is read: what follows it would be malformed.
		{"deep, then garbage", deep + "\x00\x01 not JSON", nil, "JSON nests deeper than 32 levels"},
		{"most values accepted", list(MaxValues - 2), []string{"a"}, ""},
		{"one value too many", list(MaxValues - 1), nil, "JSON holds more than 2000 values (object members and array items)"},
		{"too many, then garbage", list(MaxValues) + "\x00 not JSON", nil, "JSON holds more than 2000 values (object members and array items)"},
		{"strings hide structure", `{"a":"{{{{[[[[,,,,::::\"{{{{"}`, []string{"a"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := ParseJSON([]byte(tt.in), lowerOnly)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Fatalf("got error %q, want %q", got, tt.want)
			}
			if err == nil {
				if diff := cmp.Diff(tt.fields, v.Fields()); diff != "" {
					t.Errorf("fields (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestValueAppliedTwice: applying a Value does not change it, so a writer
// that retries on a new base gets the same result.
func TestValueAppliedTwice(t *testing.T) {
	v, err := ParseJSON([]byte(`{"spec":{"state":"hibernated","n8n":{"version":"1.124.0"}}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("testdata/commented.yaml")
	if err != nil {
		t.Fatal(err)
	}
	first, err := v.MergeInto(doc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.MergeInto([]byte("spec: # c\n  state: running # s\n")); err != nil {
		t.Fatal(err)
	}
	again, err := v.MergeInto(doc)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(first), string(again)); diff != "" {
		t.Errorf("second application differs (-first +again):\n%s", diff)
	}
}

// FuzzParseJSON: the byte prescan never refuses what the token decoder
// accepts, and every field a Value names passes the key rule.
func FuzzParseJSON(f *testing.F) {
	f.Add([]byte(`{"spec":{"state":"absent","d":[1,{"x":[]}]}}`))
	f.Add([]byte(`["\"[",{"a":"\\"},[[]],{}]`))
	f.Add([]byte(strings.Repeat("[", MaxDepth+1) + "1" + strings.Repeat("]", MaxDepth+1)))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, derr := decode(data, lowerOnly)
		if perr := prescan(data); derr == nil && perr != nil {
			t.Fatalf("prescan refuses what the decoder accepts: %v", perr)
		}
		v, err := ParseJSON(data, lowerOnly)
		if err != nil {
			return
		}
		for _, f := range v.Fields() {
			for _, k := range strings.Split(f, ".") {
				if lowerOnly(k) != nil {
					t.Fatalf("field %q has a refused key", f)
				}
			}
		}
	})
}
