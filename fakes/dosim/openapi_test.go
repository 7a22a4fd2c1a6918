package dosim_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// specPath is DigitalOcean's own OpenAPI description of the simulated
// endpoints (copied from shared/reference/digitalocean, Apache-2.0).
const specPath = "testdata/openapi-subset.yaml"

var (
	specOnce   sync.Once
	specRouter routers.Router
	specErr    error
)

// loadSpec loads the contract once per test binary. Three workarounds, all
// for places where the document says less than DigitalOcean (and godo) do:
//
//   - the subset references the security scheme bearer_auth but does not
//     define it (kin-openapi refuses the document); it is added back as an
//     HTTP bearer scheme.
//   - kin-openapi reads OpenAPI 3.0 literally: `allOf: [{nullable: true, ...},
//     {description}]` (next_backup_window, backup_policy) does not make the
//     property nullable, so DigitalOcean's own examples fail. The outer schema
//     is marked nullable when one allOf member is.
//   - godo sends `"ssh_keys": null` when there are none, which DigitalOcean
//     accepts but the description types as a non-nullable array; ssh_keys and
//     volumes are marked nullable.
//   - the record create body requires `flags` and `tag` of NS, TXT and SRV
//     records, attributes only CAA records use; godo leaves an empty tag
//     out (omitempty) and DigitalOcean accepts that, so flags and tag are
//     dropped from those types' required lists.
//
// Example validation stays on: after the first workaround every example in
// the document validates.
func loadSpec() (routers.Router, error) {
	specOnce.Do(func() {
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromFile(specPath)
		if err != nil {
			specErr = err
			return
		}
		doc.Servers = nil // serve at any host: the simulator runs on 127.0.0.1
		// The subset references bearer_auth but lost its definition when it
		// was cut down; restore it as DigitalOcean defines it.
		if doc.Components.SecuritySchemes == nil {
			doc.Components.SecuritySchemes = openapi3.SecuritySchemes{}
		}
		doc.Components.SecuritySchemes["bearer_auth"] = &openapi3.SecuritySchemeRef{
			Value: openapi3.NewSecurityScheme().WithType("http").WithScheme("bearer"),
		}
		seen := map[*openapi3.Schema]bool{}
		var walk func(*openapi3.SchemaRef)
		walk = func(ref *openapi3.SchemaRef) {
			if ref == nil || ref.Value == nil || seen[ref.Value] {
				return
			}
			s := ref.Value
			seen[s] = true
			for _, sub := range s.AllOf {
				walk(sub)
				if sub.Value != nil && sub.Value.Nullable {
					s.Nullable = true
				}
			}
			for _, l := range [][]*openapi3.SchemaRef{s.OneOf, s.AnyOf} {
				for _, sub := range l {
					walk(sub)
				}
			}
			walk(s.Items)
			walk(s.Not)
			for name, p := range s.Properties {
				walk(p)
				if name == "ssh_keys" || name == "volumes" {
					p.Value.Nullable = true
				}
			}
		}
		for _, ref := range doc.Components.Schemas {
			walk(ref)
		}
		for _, name := range []string{"domain_record_ns", "domain_record_txt", "domain_record_srv"} {
			ref := doc.Components.Schemas[name]
			if ref == nil || ref.Value == nil {
				specErr = fmt.Errorf("schema %s is missing", name)
				return
			}
			for _, sub := range ref.Value.AllOf {
				sub.Value.Required = slices.DeleteFunc(sub.Value.Required, func(f string) bool { return f == "flags" || f == "tag" })
			}
		}
		for _, pi := range doc.Paths.Map() {
			for _, op := range pi.Operations() {
				if op.RequestBody != nil && op.RequestBody.Value != nil {
					for _, mt := range op.RequestBody.Value.Content {
						walk(mt.Schema)
					}
				}
				for _, r := range op.Responses.Map() {
					if r.Value != nil {
						for _, mt := range r.Value.Content {
							walk(mt.Schema)
						}
					}
				}
			}
		}
		for _, r := range doc.Components.Responses {
			for _, mt := range r.Value.Content {
				walk(mt.Schema)
			}
		}
		specRouter, specErr = legacy.NewRouter(doc)
	})
	return specRouter, specErr
}

// contract is a middleware that checks every request the simulator accepts
// (2xx) and every response it sends against the OpenAPI description.
type contract struct {
	router routers.Router

	mu       sync.Mutex
	failures []string
	checked  int
	statuses map[int]int
}

func newContract(t testing.TB) *contract {
	t.Helper()
	r, err := loadSpec()
	if err != nil {
		t.Fatalf("load OpenAPI description: %v", err)
	}
	c := &contract{router: r, statuses: map[int]int{}}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, f := range c.failures {
			t.Error(f)
		}
	})
	return c
}

func (c *contract) fail(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures = append(c.failures, fmt.Sprintf(format, args...))
}

// Checked reports how many responses were validated.
func (c *contract) Checked() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.checked
}

type recorder struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	r.body.Write(b)
	return r.ResponseWriter.Write(b)
}

func (c *contract) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v2/") {
			next.ServeHTTP(w, r)
			return
		}
		var reqBody []byte
		if r.Body != nil {
			reqBody, _ = io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(reqBody))
		}
		rec := &recorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		if rec.status == 0 {
			return // the client went away (timeout fault)
		}
		c.mu.Lock()
		c.statuses[rec.status]++
		c.mu.Unlock()
		check := r.Clone(context.Background())
		check.Body = io.NopCloser(bytes.NewReader(reqBody))
		route, params, err := c.router.FindRoute(check)
		if err != nil {
			if rec.status != http.StatusNotFound {
				c.fail("%s %s: answered %d for a route the description does not have", r.Method, r.URL, rec.status)
			}
			return
		}
		in := &openapi3filter.RequestValidationInput{
			Request:    check,
			PathParams: params,
			Route:      route,
			Options: &openapi3filter.Options{
				AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
				IncludeResponseStatus: true,
				MultiError:            true,
			},
		}
		if rec.status >= 200 && rec.status < 300 {
			if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
				c.fail("%s %s: accepted request does not match the description: %v\nbody: %s", r.Method, r.URL, err, reqBody)
			}
		}
		out := &openapi3filter.ResponseValidationInput{
			RequestValidationInput: in,
			Status:                 rec.status,
			Header:                 rec.Header(),
			Options:                in.Options,
		}
		out.SetBodyBytes(rec.body.Bytes())
		if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
			c.fail("%s %s: %d response does not match the description: %v\nbody: %s", r.Method, r.URL, rec.status, err, truncateBytes(rec.body.Bytes()))
		}
		c.mu.Lock()
		c.checked++
		c.mu.Unlock()
	})
}

func truncateBytes(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "..."
	}
	return string(b)
}
