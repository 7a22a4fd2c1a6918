package stateapi_test

import (
	"testing"
)

// FuzzWrites sends arbitrary bodies to the write endpoints of a real API on
// a real bare repository: nothing panics or answers 5xx, and a refused
// request never moves the branch.
func FuzzWrites(f *testing.F) {
	f.Add(0, []byte(`{"spec":{"state":"hibernated"}}`))
	f.Add(0, []byte(`{"spec":{"domains":null,"n8n":{"version":"1.2.3"}}}`))
	f.Add(0, []byte(`{"spec":{"credentials":[{"name":"x"}]}}`))
	f.Add(1, []byte(`{"apiVersion":"genesis.dev/v1","kind":"Tenant","metadata":{"id":"ws-acme","name":"A","tier":"pro"},"spec":{"state":"running","droplet":{"region":"nyc3"}}}`))
	f.Add(2, []byte(`{"name":"k","type":"openAiApi","data":{"apiKey":"x"}}`))
	f.Add(2, []byte(`{"name":"k","type":"openAiApi","sealed":"-----BEGIN AGE ENCRYPTED FILE-----\n"}`))
	f.Add(3, []byte(`{"metadata":{"id":"ws-fuzz"},"spec":[]}`))
	f.Add(0, []byte(`{"a":{"b":{"c":{"d":{"e":null}}}}}`))
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
	})
}
