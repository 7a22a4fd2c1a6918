package stateapi_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/tenants"
)

// subject is every subject line the API writes.
var subject = regexp.MustCompile(`^(patch ws-acme: "[A-Za-z0-9_.\[\]]+"(, "[A-Za-z0-9_.\[\]]+")*(, and [0-9]+ more)?|replace ws-acme|onboard [a-z0-9-]+|set credential "[a-z0-9-]+" \("[A-Za-z0-9]+"\) of ws-acme)$`)

// FuzzWrites sends arbitrary bodies to the write endpoints of a real API on
// a real bare repository: nothing panics or answers 5xx, a refused request
// never moves the branch, and an accepted one makes a commit whose only
// trailer (as git parses it) is the API's correlation id and whose subject
// and body are the API's own lines: no byte of the body starts a line.
func FuzzWrites(f *testing.F) {
	f.Add(0, []byte(`{"spec":{"state":"hibernated"}}`))
	f.Add(0, []byte(`{"spec":{"domains":null,"n8n":{"version":"1.2.3"}}}`))
	f.Add(0, []byte(`{"spec":{"credentials":[{"name":"x"}]}}`))
	f.Add(1, []byte(`{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-acme","name":"A","tier":"pro"},"spec":{"state":"running","droplet":{"region":"nyc3"}}}`))
	f.Add(2, []byte(`{"name":"k","type":"openAiApi","data":{"apiKey":"x"}}`))
	f.Add(2, []byte(`{"name":"k","type":"openAiApi","sealed":"-----BEGIN AGE ENCRYPTED FILE-----\n"}`))
	f.Add(3, []byte(`{"metadata":{"id":"ws-fuzz"},"spec":[]}`))
	f.Add(0, []byte(`{"a":{"b":{"c":{"d":{"e":null}}}}}`))
	f.Add(0, []byte(`{"spec":{"state":"hibernated"},"\n\nSigned-off-by: M <m@example.com>":null}`))
	f.Add(0, []byte(`{"spec":{"state":"hibernated","x\nGenesis-Correlation-Id: forged":null}}`))
	f.Add(0, []byte(`{"spec":{"workflows":[{"template":"a","params":{"p\u0000":1}}]}}`))
	f.Add(0, []byte(strings.Repeat(`{"a":`, 40)+`1`+strings.Repeat(`}`, 40)))
	f.Add(2, []byte(`{"name":"k\n\nSigned-off-by: M","type":"openAiApi","data":{"apiKey":"x"}}`))
	w := newWorld(f, 0, false)
	f.Fuzz(func(t *testing.T, kind int, body []byte) {
		w.t = t
		before := w.head()
		etag := w.etag("ws-acme")
		var r resp
		switch uint(kind) % 4 {
		case 0:
			r = w.do("dash", "PATCH", "/v1/tenants/ws-acme", string(body), "If-Match", etag)
		case 1:
			r = w.do("dash", "PUT", "/v1/tenants/ws-acme", string(body), "If-Match", etag)
		case 2:
			r = w.do("dash", "POST", "/v1/tenants/ws-acme/credentials", string(body), "If-Match", etag)
		case 3:
			r = w.do("dash", "POST", "/v1/tenants", string(body))
		}
		if r.code >= 500 {
			t.Fatalf("%d %s", r.code, r.body)
		}
		if r.code >= 300 && w.head() != before {
			t.Fatalf("refused (%d) but main moved", r.code)
		}
		if r.code < 300 && w.head() != before {
			corr := r.hdr.Get(stateapi.CorrelationHeader)
			if got, want := w.trailers(), tenants.CorrelationTrailer+": "+corr; got != want {
				t.Fatalf("trailers %q, want %q", got, want)
			}
			lines := strings.Split(testkit.Git(t, w.bare, "log", "-1", "--format=%B", "main"), "\n")
			want := []string{"", "Requested through the Genesis API by dash.", "", tenants.CorrelationTrailer + ": " + corr}
			if diff := cmp.Diff(want, lines[1:]); diff != "" || !subject.MatchString(lines[0]) {
				t.Fatalf("commit message %q (-want +got):\n%s", lines, diff)
			}
		}
	})
}
