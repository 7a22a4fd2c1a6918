package console

import (
	"net/url"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseFilter: any query string is parsed or refused with an error,
// never a panic; what parses is written back (Query) and parses the same.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"", "state=ACTIVE_HEALTHY&tier=pro", "q=acme&after=ws-acme", "wave=3&version=1.2.3", "region=nyc3&account=do-1",
		"state=x", "wave=-1", "q=%00", "after=a&before=b", "state=PENDING&state=FAILED", "q=" + string(make([]byte, 200))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		got, err := ParseFilter(q)
		if err != nil {
			if err.Error() == "" {
				t.Errorf("%q: empty error", raw)
			}
			return
		}
		again, err := ParseFilter(got.Query(true))
		if err != nil {
			t.Fatalf("%q parsed as %+v, written back as %q, refused: %v", raw, got, got.Query(true).Encode(), err)
		}
		if !reflect.DeepEqual(again, got) {
			t.Errorf("%q: %+v, again %+v", raw, got, again)
		}
	})
}

// TestParseFilterErrors: each bad value's error names its field.
func TestParseFilterErrors(t *testing.T) {
	for _, tc := range []struct{ query, want string }{
		{"state=EXPLODED", `state: "EXPLODED" is not one of`},
		{"tier=gold", `tier: "gold" is not one of`},
		{"health=meh", `health: "meh" is not one of`},
		{"region=NYC%203", `region: "NYC 3" is not a region slug`},
		{"account=-x", `account: "-x" is not an account name`},
		{"version=1%200", `version: "1 0" is not an n8n version`},
		{"wave=x", `wave: "x" is not a wave number`},
		{"after=A", `after: "A" is not a workspace id`},
		{"after=ws-a&before=ws-b", "after, before: give one of them"},
		{"state=PENDING&state=FAILED", "state: given 2 times"},
		{"q=%01", "q: contains a control character"},
		{"q=%ff", "q: not UTF-8"},
	} {
		q, _ := url.ParseQuery(tc.query)
		_, err := ParseFilter(q)
		if err == nil || len(err.Error()) < len(tc.want) || err.Error()[:len(tc.want)] != tc.want {
			t.Errorf("%s: err = %v, want %q…", tc.query, err, tc.want)
		}
	}
}

// FuzzParseWatch: any query string gives an event stream's watch list or
// an error naming t, never a panic; what it gives is distinct workspace
// ids, at most maxWatch, in the order first given.
func FuzzParseWatch(f *testing.F) {
	for _, s := range []string{"", "t=ws-acme", "t=ws-acme&t=ws-beta&t=ws-acme", "t=A", "t=%ff", "t=ws-a&other=1", "t=" + string(make([]byte, 60))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		got, err := ParseWatch(q)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "t: ") || !utf8.ValidString(err.Error()) && utf8.ValidString(raw) {
				t.Errorf("%q: error %q", raw, err)
			}
			return
		}
		if len(got) > maxWatch {
			t.Errorf("%q: %d ids", raw, len(got))
		}
		seen := map[string]bool{}
		for _, id := range got {
			if !workspaceRe.MatchString(id) || seen[id] {
				t.Errorf("%q: id %q repeated or malformed", raw, id)
			}
			seen[id] = true
		}
		for _, id := range q["t"] {
			if !seen[id] {
				t.Errorf("%q: %q left out", raw, id)
			}
		}
	})
}
