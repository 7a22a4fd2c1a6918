package auth

import (
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/internal/loglimit"
)

// Defaults of FailuresConfig.
const (
	DefaultFailureRate  = 0.2 // one failure every 5 s, sustained
	DefaultFailureBurst = 30
	DefaultMaxClients   = 100_000
	// logEvery is how often a throttled client is logged at most, and how
	// often a summary of suppressed lines is written.
	logEvery = time.Minute
	// logBurst is how many throttle log lines a logEvery may hold.
	logBurst = 10
)

// FailuresConfig configures a Failures limiter.
type FailuresConfig struct {
	// Rate is the failures per second a client's bucket regains, Burst its
	// size; defaults DefaultFailureRate and DefaultFailureBurst.
	Rate  float64
	Burst int
	// MaxClients bounds the clients tracked at once (memory); when full,
	// refilled buckets are dropped first, then arbitrary ones.
	MaxClients int
	// TrustedProxies are the peers whose X-Forwarded-For names the client.
	TrustedProxies []netip.Prefix
	Now            func() time.Time
	Logger         *slog.Logger
	Registerer     prometheus.Registerer
}

// Failures limits unauthenticated failures per client. Every 401 and 403
// the reconciler answers (an unknown API token, a bogus agent credential, a
// refused enrollment token, a badly signed webhook) is free to send and
// costs the server something. A
// Failures limiter gives each client address a bucket of them: each such
// answer spends one, the bucket refills at Rate per second, and a client
// whose bucket is empty gets 429 with Retry-After for every request until it
// has refilled enough, before any handler (or database) runs. Log lines about
// it are rate-limited too, so a flood cannot fill the disk.
//
// A client is its peer address (an IPv6 address by its /64, which one host
// usually holds whole). Behind a proxy or load balancer listed in
// TrustedProxies, the client is the right-most X-Forwarded-For address that
// is not itself a trusted proxy; without that list every client behind the
// proxy would share one bucket, and one of them could lock out the rest.
type Failures struct {
	cfg FailuresConfig
	log *slog.Logger

	mu      sync.RWMutex
	clients map[netip.Addr]*bucket
	logs    *loglimit.Limiter

	failures  *prometheus.CounterVec
	throttled prometheus.Counter
	tracked   prometheus.GaugeFunc
}

// failureKinds label genesis_http_unauthenticated_total.
var failureKinds = []string{"api", "agent", "hook"}

// NewFailures makes a limiter and registers its metrics on
// cfg.Registerer (when not nil).
func NewFailures(cfg FailuresConfig) *Failures {
	if cfg.Rate <= 0 {
		cfg.Rate = DefaultFailureRate
	}
	if cfg.Burst <= 0 {
		cfg.Burst = DefaultFailureBurst
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = DefaultMaxClients
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	f := &Failures{cfg: cfg, log: cfg.Logger.With("component", "http"), clients: map[netip.Addr]*bucket{},
		logs: loglimit.New(logEvery, logBurst)}
	f.failures = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_http_unauthenticated_total",
		Help: "Requests answered 401 or 403 (unknown token or credential, refused enrollment, bad webhook signature), by route kind (api, agent, hook)."},
		[]string{"kind"})
	for _, k := range failureKinds {
		f.failures.WithLabelValues(k)
	}
	f.throttled = prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_http_throttled_total",
		Help: "Requests refused with 429 because their client sent too many unauthenticated requests."})
	f.tracked = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "genesis_http_failing_clients",
		Help: "Clients with recent unauthenticated failures tracked by the limiter."}, func() float64 {
		f.mu.RLock()
		defer f.mu.RUnlock()
		return float64(len(f.clients))
	})
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(f.failures, f.throttled, f.tracked)
	}
	return f
}

// Wrap serves h, answering 429 to clients over their failure budget and
// counting h's 401 and 403 answers against the client.
func (f *Failures) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			// Probes answer whoever shares an address with a flood, so
			// a flood cannot get the replica restarted.
			h.ServeHTTP(w, r)
			return
		}
		client := f.Client(r)
		if wait := f.wait(client); wait > 0 {
			f.throttled.Inc()
			f.logThrottled(client, r, wait)
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			api.WriteProblem(w, http.StatusTooManyRequests, "too many unauthenticated requests from this address; retry later")
			return
		}
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == http.StatusUnauthorized || sw.code == http.StatusForbidden {
			f.failures.WithLabelValues(routeKind(r.URL.Path)).Inc()
			f.spend(client)
		}
	})
}

// routeKind is the label of a path.
func routeKind(path string) string {
	switch {
	case path == "/v1/enroll" || path == "/v1/manifest" || path == "/v1/heartbeat":
		return "agent"
	case strings.HasPrefix(path, "/hooks/"):
		return "hook"
	}
	return "api"
}

// Client is the address r is counted against: the peer, or behind a trusted
// proxy the right-most untrusted X-Forwarded-For address; an IPv6 address
// by its /64.
func (f *Failures) Client(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	peer = peer.Unmap()
	if f.trusted(peer) {
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // a malformed hop: trust nothing left of it
			}
			peer = a.Unmap()
			if !f.trusted(peer) {
				break
			}
		}
	}
	if peer.Is6() {
		p, _ := peer.Prefix(64)
		return p.Addr()
	}
	return peer
}

func (f *Failures) trusted(a netip.Addr) bool {
	for _, p := range f.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// refill brings b up to now; f.mu is held.
func (f *Failures) refill(b *bucket, now time.Time) {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(float64(f.cfg.Burst), b.tokens+el*f.cfg.Rate)
		b.last = now
	}
}

// wait is how long client must wait before its next request (0: now).
func (f *Failures) wait(client netip.Addr) time.Duration {
	f.mu.RLock()
	_, ok := f.clients[client]
	f.mu.RUnlock()
	if !ok { // the fast path: a client that never failed
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.clients[client]
	if !ok {
		return 0
	}
	f.refill(b, f.cfg.Now())
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) / f.cfg.Rate * float64(time.Second))
}

// spend takes one failure from client's bucket.
func (f *Failures) spend(client netip.Addr) {
	now := f.cfg.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.clients[client]
	if !ok {
		if len(f.clients) >= f.cfg.MaxClients {
			f.prune(now)
		}
		b = &bucket{tokens: float64(f.cfg.Burst), last: now}
		f.clients[client] = b
	}
	f.refill(b, now)
	b.tokens = math.Max(b.tokens-1, 0)
}

// prune drops refilled buckets, and if none was, arbitrary ones, until a
// tenth of MaxClients is free; f.mu is held.
func (f *Failures) prune(now time.Time) {
	for k, b := range f.clients {
		f.refill(b, now)
		if b.tokens >= float64(f.cfg.Burst) {
			delete(f.clients, k)
		}
	}
	for k := range f.clients {
		if len(f.clients) < f.cfg.MaxClients-f.cfg.MaxClients/10 {
			break
		}
		delete(f.clients, k)
	}
}

// logThrottled writes at most logBurst lines per logEvery, then one line
// saying how many it left out.
func (f *Failures) logThrottled(client netip.Addr, r *http.Request, wait time.Duration) {
	ok, suppressed := f.logs.Allow("throttled", f.cfg.Now())
	if suppressed > 0 {
		f.log.Warn("throttle log lines suppressed", "suppressed", suppressed, "window", logEvery.String())
	}
	if ok {
		f.log.Warn("client throttled: too many unauthenticated requests", "client", client.String(),
			"method", r.Method, "path", r.URL.Path, "retry_after", wait.Round(time.Second).String())
	}
}

// statusWriter remembers the status code a handler wrote. Unwrap lets
// http.ResponseController reach the connection (flushes, deadlines).
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ParsePrefixes reads a comma-separated list of CIDR prefixes or single
// addresses (for --trusted-proxies).
func ParsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil {
				return nil, err
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}
