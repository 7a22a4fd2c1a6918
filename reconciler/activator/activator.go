// Package activator wakes a hibernated tenant on its first request, as
// Knative's activator and Fly.io's auto-start do.
//
// A hibernated tenant's stable name (<workspace>.<zone>) points at the
// activator's address, and so do the tracking domains its customers CNAME
// to that name. A Caddy in front (Render) terminates TLS with on-demand
// certificates, which it asks Handler.Ask for, and reverse-proxies every
// request to the Handler. The Handler:
//
//  1. resolves the request's Host to a tenant from the desired state in
//     memory (Config.Lookup): unknown → 404; a tenant git declares
//     hibernated (no wake through traffic) → 503 at once;
//  2. answers an open pixel (Config.PixelPaths) at once with a 1×1 GIF and
//     queues it for replay (pixel.go);
//  3. otherwise buffers the body (Config.MaxBody, 413 past it) and holds
//     the request, within the bounds per tenant and in total (503 with
//     Retry-After past them, so one tenant's flood cannot starve others);
//  4. the first request of a tenant starts its wake episode: one goroutine
//     per tenant that asks for the wake once (Config.Wake; it retries only a
//     failed call) and polls the tenant's status (Config.Status) every
//     Config.PollInterval, however many requests wait: requests never poll;
//  5. when the tenant is ACTIVE_HEALTHY with an IP, every held request is
//     proxied to https://<ip>:<DropletPort> with the original Host as Host
//     and SNI, verified against Config.RootCAs; a request still waiting
//     after Config.Hold gets 503 with Retry-After and a small page, while
//     the wake goes on for the next ones.
//
// After a tenant is up, requests that still reach the activator (DNS
// caches hold the old record for up to its TTL) are proxied at once while
// the episode is fresh (Config.UpTTL); activity is recorded (Config.Touch)
// when the tenant comes up and at most every Config.TouchEvery after, so
// idle hibernation does not put it back to sleep at once.
//
// All state is in memory and per process: every replica can run an
// activator (they share nothing; the wake itself is idempotent in
// Postgres, so two replicas' first requests ask for one wake).
package activator

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// Defaults used when a Config leaves a field zero.
const (
	DefaultHold             = 20 * time.Second
	DefaultMaxHeld          = 10000
	DefaultMaxHeldPerTenant = 200
	DefaultMaxBody          = 1 << 20
	DefaultDropletPort      = 443
	DefaultPollInterval     = 500 * time.Millisecond
	DefaultWakeTimeout      = 5 * time.Minute
	DefaultUpTTL            = time.Minute
	DefaultRetryAfter       = 5 * time.Second
	DefaultMaxPixels        = 1000
	DefaultAskRefresh       = 2 * time.Second
	DefaultTouchEvery       = time.Minute
	DefaultReplayTimeout    = 10 * time.Second
)

// DefaultPixelPaths match the open pixel the golden email-sequence
// template puts in every email: GET <tracking domain>/webhook/o/<sendId>
// (templates/workflows/email-sequence.json, answered by click-tracker.json's
// "o/:sendId" webhook).
var DefaultPixelPaths = []string{"/webhook/o/*"}

// ErrWakeRefused is what Config.Wake returns when the tenant must not be
// woken by traffic (git declares it hibernated, or it is not known to the
// fleet): held requests get 503 at once.
var ErrWakeRefused = errors.New("wake refused")

// Tenant is what the desired state says of a host's tenant.
type Tenant struct {
	Workspace string
	// WakeAllowed is false when git declares the tenant hibernated: only a
	// commit of state: running wakes it, not traffic.
	WakeAllowed bool
}

// Status is a tenant's observed state.
type Status struct {
	Lifecycle lifecycle.State
	// IP is the droplet's public address ("" without a droplet).
	IP string
}

// Up reports whether the tenant's droplet serves: ACTIVE_HEALTHY with an IP.
func (s Status) Up() bool { return s.Lifecycle == lifecycle.ActiveHealthy && s.IP != "" }

// served reports whether a healthy (or still serving) droplet answers for
// the tenant, so its names do not point at the activator and the activator
// must not get certificates for them.
func (s Status) served() bool {
	switch s.Lifecycle {
	case lifecycle.ActiveHealthy, lifecycle.ActiveDegraded, lifecycle.ActiveCritical,
		lifecycle.Destroying, lifecycle.Destroyed, "":
		return true
	}
	return false
}

// Config is what a Handler needs. Lookup, Status, Statuses and Wake are
// required; zero bounds take the defaults above.
type Config struct {
	// Lookup maps a normalized host name (lowercase, no port, no trailing
	// dot) to its tenant, from memory (the desired state): a tenant's
	// stable name or one of its tracking domains.
	Lookup func(host string) (Tenant, bool)
	// Status reads one tenant's observed state; a wake episode calls it
	// every PollInterval.
	Status func(ctx context.Context, workspace string) (Status, error)
	// Statuses reads every tenant's observed state; Run calls it every
	// AskRefresh to keep the table Ask answers from.
	Statuses func(ctx context.Context) (map[string]Status, error)
	// Wake asks for the tenant's droplet back (production:
	// Reconciler.Wake, with "already waking or running" mapped to nil).
	// ErrWakeRefused: traffic must not wake it. It is called once per
	// wake episode, again only after it failed.
	Wake func(ctx context.Context, workspace string) error
	// Touch records the tenant's activity (store.RecordActivity); nil
	// records nothing.
	Touch func(ctx context.Context, workspace string) error

	// Hold is how long a request waits for its tenant (default 20 s).
	Hold time.Duration
	// MaxHeld and MaxHeldPerTenant bound the requests held at once, in
	// total and per tenant (defaults 10,000 and 200); MaxHeldPerTenant
	// must be below MaxHeld, so one tenant cannot take every slot.
	MaxHeld, MaxHeldPerTenant int
	// MaxBody bounds a held request's body, buffered in memory (default
	// 1 MiB; past it 413). At most MaxHeld × MaxBody bytes are buffered.
	MaxBody int64
	// DropletPort is the droplets' HTTPS port (default 443).
	DropletPort int
	// RootCAs verify the droplets' certificates (nil: the system roots).
	RootCAs *x509.CertPool
	// Dial, when set, dials the droplets (tests map droplet addresses to
	// local servers); default a net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// PixelPaths are the open pixels' path patterns (path.Match syntax,
	// GET and HEAD only); nil means DefaultPixelPaths, empty none.
	PixelPaths []string
	// MaxPixels bounds the pixels queued per tenant (default 1,000); the
	// oldest is dropped past it.
	MaxPixels int
	// PollInterval is how often a waking tenant's status is read (default
	// 500 ms).
	PollInterval time.Duration
	// WakeTimeout ends a wake episode that did not bring the tenant up
	// (default 5 min); the next request starts a new one.
	WakeTimeout time.Duration
	// UpTTL is how long a woken tenant's address is trusted without
	// reading its status again (default 1 min).
	UpTTL time.Duration
	// RetryAfter is the Retry-After of a 503 (default 5 s).
	RetryAfter time.Duration
	// AskRefresh is how often Run reads every tenant's status for Ask
	// (default 2 s).
	AskRefresh time.Duration
	// TouchEvery is the least time between two Touch calls of a tenant
	// (default 1 min).
	TouchEvery time.Duration
	// ReplayTimeout bounds one replayed pixel (default 10 s).
	ReplayTimeout time.Duration

	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Handler is the activator: an http.Handler for every request to a
// hibernated tenant's names, and Ask for Caddy's on-demand TLS. Run keeps
// Ask's table fresh; Close stops the wake episodes. Safe for concurrent
// use.
type Handler struct {
	cfg    Config
	log    *slog.Logger
	m      *metrics
	pixels []string
	proxy  *httputil.ReverseProxy
	rt     *http.Transport
	now    func() time.Time

	mu      sync.Mutex
	tenants map[string]*tenant
	held    int
	closed  bool

	// statuses is Ask's table (Run refreshes it).
	statuses atomic.Pointer[statusTable]

	stop chan struct{}
	wg   sync.WaitGroup
	// onHold, when set (tests), is called under mu after a request is
	// admitted, with its tenant's and the total held count.
	onHold func(workspace string, tenantHeld, total int)
}

type statusTable struct {
	at time.Time
	m  map[string]Status
}

// New checks cfg, fills its defaults and returns the Handler.
func New(cfg Config) (*Handler, error) {
	if cfg.Lookup == nil || cfg.Status == nil || cfg.Statuses == nil || cfg.Wake == nil {
		return nil, errors.New("activator: Lookup, Status, Statuses and Wake are required")
	}
	cfg.Hold = cmp.Or(cfg.Hold, DefaultHold)
	cfg.MaxHeld = cmp.Or(cfg.MaxHeld, DefaultMaxHeld)
	cfg.MaxHeldPerTenant = cmp.Or(cfg.MaxHeldPerTenant, DefaultMaxHeldPerTenant)
	cfg.MaxBody = cmp.Or(cfg.MaxBody, DefaultMaxBody)
	cfg.DropletPort = cmp.Or(cfg.DropletPort, DefaultDropletPort)
	cfg.MaxPixels = cmp.Or(cfg.MaxPixels, DefaultMaxPixels)
	cfg.PollInterval = cmp.Or(cfg.PollInterval, DefaultPollInterval)
	cfg.WakeTimeout = cmp.Or(cfg.WakeTimeout, DefaultWakeTimeout)
	cfg.UpTTL = cmp.Or(cfg.UpTTL, DefaultUpTTL)
	cfg.RetryAfter = cmp.Or(cfg.RetryAfter, DefaultRetryAfter)
	cfg.AskRefresh = cmp.Or(cfg.AskRefresh, DefaultAskRefresh)
	cfg.TouchEvery = cmp.Or(cfg.TouchEvery, DefaultTouchEvery)
	cfg.ReplayTimeout = cmp.Or(cfg.ReplayTimeout, DefaultReplayTimeout)
	switch {
	case cfg.Hold < 0 || cfg.PollInterval < 0 || cfg.WakeTimeout < 0 || cfg.UpTTL < 0 || cfg.RetryAfter < 0 ||
		cfg.AskRefresh < 0 || cfg.TouchEvery < 0 || cfg.ReplayTimeout < 0:
		return nil, errors.New("activator: negative duration")
	case cfg.MaxHeld < 0 || cfg.MaxHeldPerTenant < 0 || cfg.MaxBody < 0 || cfg.MaxPixels < 0:
		return nil, errors.New("activator: negative bound")
	case cfg.MaxHeldPerTenant >= cfg.MaxHeld:
		return nil, fmt.Errorf("activator: requests held per tenant (%d) must be below the total (%d), or one tenant can take every slot",
			cfg.MaxHeldPerTenant, cfg.MaxHeld)
	case cfg.DropletPort < 1 || cfg.DropletPort > 65535:
		return nil, fmt.Errorf("activator: droplet port %d out of range", cfg.DropletPort)
	}
	pixels := DefaultPixelPaths
	if cfg.PixelPaths != nil {
		pixels = cfg.PixelPaths
	}
	for _, p := range pixels {
		if err := CheckPixelPath(p); err != nil {
			return nil, fmt.Errorf("activator: %w", err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := cfg.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	h := &Handler{
		cfg: cfg, log: log.With("component", "activator"), pixels: pixels,
		now: cfg.Now, tenants: make(map[string]*tenant), stop: make(chan struct{}),
	}
	if h.now == nil {
		h.now = time.Now
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	h.m = m
	h.rt, h.proxy = h.newProxy()
	return h, nil
}

// Run refreshes Ask's table of tenant statuses every AskRefresh and drops
// idle tenants' state until ctx ends.
func (h *Handler) Run(ctx context.Context) error {
	t := time.NewTicker(h.cfg.AskRefresh)
	defer t.Stop()
	for {
		h.refresh(ctx)
		h.sweep()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// refresh reads every tenant's status into Ask's table. A failed read
// keeps the last table (logged).
func (h *Handler) refresh(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, h.cfg.AskRefresh*2)
	defer cancel()
	m, err := h.cfg.Statuses(rctx)
	if err != nil {
		if ctx.Err() == nil {
			h.log.Warn("read tenant statuses failed", "err", err)
		}
		return
	}
	h.statuses.Store(&statusTable{at: h.now(), m: m})
}

// Close ends the wake episodes and waits for their goroutines; requests
// still held get 503. The caller stops serving first.
func (h *Handler) Close() {
	h.mu.Lock()
	if !h.closed {
		h.closed = true
		close(h.stop)
	}
	h.mu.Unlock()
	h.wg.Wait()
	h.rt.CloseIdleConnections()
}

// Outcomes of a request, the values of genesis_activator_requests_total's
// outcome label.
const (
	outProxied     = "proxied"
	outPixel       = "pixel"
	outTimeout     = "timeout"
	outOverflow    = "overflow"
	outRefused     = "refused"
	outUnknown     = "unknown_host"
	outTooLarge    = "too_large"
	outBadRequest  = "bad_request"
	outUpstreamErr = "upstream_error"
	outCanceled    = "canceled"
)

// ServeHTTP holds the request until its tenant is up and proxies it there
// (package doc).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	arrived := h.now()
	host, ok := ParseHost(r.Host)
	if !ok {
		h.m.requests.WithLabelValues(outBadRequest).Inc()
		http.Error(w, "bad host", http.StatusBadRequest)
		return
	}
	tn, ok := h.cfg.Lookup(host)
	if !ok {
		h.m.requests.WithLabelValues(outUnknown).Inc()
		http.Error(w, "unknown host", http.StatusNotFound)
		return
	}
	ws := tn.Workspace
	if !tn.WakeAllowed {
		h.m.requests.WithLabelValues(outRefused).Inc()
		h.refusedPage(w, ws)
		return
	}
	if h.isPixel(r) {
		h.servePixel(w, r, ws, host, arrived)
		return
	}
	if r.ContentLength > h.cfg.MaxBody {
		h.m.requests.WithLabelValues(outTooLarge).Inc()
		http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
		return
	}
	t, ep, ok := h.admit(ws, arrived)
	if !ok {
		h.m.requests.WithLabelValues(outOverflow).Inc()
		h.wakingPage(w, ws, http.StatusServiceUnavailable)
		return
	}
	defer h.release(t)
	body, err := readBody(w, r, h.cfg.MaxBody)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			h.m.requests.WithLabelValues(outTooLarge).Inc()
			http.Error(w, "request body too large", http.StatusRequestEntityTooLarge)
			return
		}
		h.m.requests.WithLabelValues(outCanceled).Inc()
		return
	}
	wait := time.NewTimer(h.cfg.Hold - h.now().Sub(arrived))
	defer wait.Stop()
	select {
	case <-ep.done:
	case <-wait.C:
		h.m.requests.WithLabelValues(outTimeout).Inc()
		h.log.Info("request held past the hold time", "tenant", ws, "hold", h.cfg.Hold)
		h.wakingPage(w, ws, http.StatusServiceUnavailable)
		return
	case <-r.Context().Done():
		h.m.requests.WithLabelValues(outCanceled).Inc()
		return
	}
	switch {
	case ep.ip != "":
		h.forward(w, r, ws, host, ep, body)
	case ep.refused:
		h.m.requests.WithLabelValues(outRefused).Inc()
		h.refusedPage(w, ws)
	default: // the episode ended without the tenant up (timeout, Close)
		h.m.requests.WithLabelValues(outTimeout).Inc()
		h.wakingPage(w, ws, http.StatusServiceUnavailable)
	}
}

// forward proxies a request to the tenant's droplet and records activity.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, ws, host string, ep *episode, body []byte) {
	pi := &proxyInfo{ip: ep.ip, ep: ep, h: h}
	out := r.WithContext(context.WithValue(r.Context(), proxyKey{}, pi))
	out.Body, out.ContentLength = bodyOf(body), int64(len(body))
	out.GetBody = func() (io.ReadCloser, error) { return bodyOf(body), nil }
	if body == nil {
		out.Body, out.GetBody = http.NoBody, nil
	}
	h.proxy.ServeHTTP(w, out)
	if pi.failed {
		h.m.requests.WithLabelValues(outUpstreamErr).Inc()
		return
	}
	h.m.requests.WithLabelValues(outProxied).Inc()
	h.touch(ws, false)
}

// retryAfter is RetryAfter in whole seconds, at least 1.
func (h *Handler) retryAfter() int {
	return max(1, int((h.cfg.RetryAfter+time.Second-1)/time.Second))
}

func (h *Handler) wakingPage(w http.ResponseWriter, ws string, code int) {
	n := h.retryAfter()
	w.Header().Set("Retry-After", strconv.Itoa(n))
	writePage(w, code, wakingPage, ws, n)
}

func (h *Handler) refusedPage(w http.ResponseWriter, ws string) {
	writePage(w, http.StatusServiceUnavailable, hibernatedPage, ws, 0)
}
