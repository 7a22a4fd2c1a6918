// Package dosimtest starts the DigitalOcean simulator (package dosim) for a
// test: on 127.0.0.1 through httptest, stopped by the test's cleanup, with a
// godo client factory that builds clients exactly as production code should
// in tests (oauth2 static token, base URL at the server's root, fast retries).
package dosimtest

import (
	"context"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/digitalocean/godo"
	"golang.org/x/oauth2"

	"genesis.dev/fleet/fakes/dosim"
)

// Server is a running simulator.
type Server struct {
	// URL is the base URL, ending in "/", to give godo.SetBaseURL.
	URL string
	// Sim is the engine, for controls (clock, faults, limits, state).
	Sim *dosim.Sim
}

// Option changes how Start serves the simulator.
type Option func(*options)

type options struct {
	wrap func(http.Handler) http.Handler
}

// WithMiddleware wraps the simulator's handler, for example with a
// validating or recording middleware.
func WithMiddleware(wrap func(http.Handler) http.Handler) Option {
	return func(o *options) { o.wrap = wrap }
}

// Start builds a simulator from cfg, serves it on 127.0.0.1 and stops both
// (boot hooks included) when the test ends.
func Start(t testing.TB, cfg dosim.Config, opts ...Option) *Server {
	t.Helper()
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	sim, err := dosim.New(cfg)
	if err != nil {
		t.Fatalf("dosim.New: %v", err)
	}
	h := sim.Handler()
	if o.wrap != nil {
		h = o.wrap(h)
	}
	srv := httptest.NewServer(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sim.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dosim: %v", err)
		}
		srv.Close()
	})
	return &Server{URL: srv.URL + "/", Sim: sim}
}

// Client returns a godo client for token: oauth2 static token source,
// SetBaseURL at the simulator and retries with 10-50 ms waits (Retry-After
// still wins on 429 and 503).
func (s *Server) Client(token string) *godo.Client {
	return NewClient(s.URL, token)
}

// NewClient builds a godo client for a simulator at baseURL (ending in "/").
// It panics on an invalid URL, which is a bug in the test.
func NewClient(baseURL, token string) *godo.Client {
	hc := oauth2.NewClient(context.Background(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token}))
	c, err := godo.New(hc,
		godo.SetBaseURL(baseURL),
		godo.WithRetryAndBackoffs(godo.RetryConfig{
			RetryMax:     3,
			RetryWaitMin: godo.PtrTo(0.01),
			RetryWaitMax: godo.PtrTo(0.05),
		}),
	)
	if err != nil {
		panic("dosimtest: godo.New: " + err.Error())
	}
	return c
}

// CreateTagged creates one droplet for each of names through c, tagged
// tag, ten a request (CreateMultiple's limit), as a fleet is created
// through the API; the first error fails t.
func CreateTagged(t testing.TB, c *godo.Client, names []string, tag string) {
	t.Helper()
	for batch := range slices.Chunk(names, 10) {
		if _, _, err := c.Droplets.CreateMultiple(context.Background(), &godo.DropletMultiCreateRequest{Names: batch, Size: "s-1vcpu-1gb",
			Region: "fra1", Image: godo.DropletCreateImage{Slug: "debian-12-x64"}, Tags: []string{tag}}); err != nil {
			t.Fatalf("create %d droplets: %v", len(batch), err)
		}
	}
}

// ServeLate serves r with next, so the simulator carries it out, then
// calls wait; the answer is written back only when wait returns true (else
// 504). In a middleware it models a request DigitalOcean carried out whose
// answer came late or was lost (a client cut off, crashed or timed out).
func ServeLate(next http.Handler, w http.ResponseWriter, r *http.Request, wait func() bool) {
	rec := httptest.NewRecorder()
	next.ServeHTTP(rec, r)
	if !wait() {
		w.WriteHeader(http.StatusGatewayTimeout)
		return
	}
	maps.Copy(w.Header(), rec.Header())
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// StartDNS serves the simulator's hosted zones (every account's
// /v2/domains records) over DNS on 127.0.0.1, UDP and TCP on one free port,
// until the test ends, and returns the address ("127.0.0.1:PORT").
func StartDNS(t testing.TB, sim *dosim.Sim) string {
	t.Helper()
	srv, err := sim.ListenDNS("127.0.0.1:0")
	if err != nil {
		t.Fatalf("dosim: listen dns: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("dosim dns: %v", err)
		}
	})
	return srv.Addr()
}

// Resolver returns a pure-Go resolver that sends every query to the DNS
// server at addr (over UDP, or TCP when the resolver asks for it), instead
// of the system's name servers.
func Resolver(addr string) *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}
