package cloud

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the DigitalOcean request metrics of one Pool.
type metrics struct {
	requests  *prometheus.CounterVec
	remaining *prometheus.GaugeVec
	limited   *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	failovers *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genesis_do_requests_total",
			Help: "DigitalOcean API requests by account, endpoint and HTTP status (\"error\" when no answer came back, \"fenced\" when the leader lease was lost and the request not sent).",
		}, []string{"account", "endpoint", "code"}),
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "genesis_do_rate_remaining",
			Help: "The last RateLimit-Remaining DigitalOcean answered, per account.",
		}, []string{"account"}),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genesis_do_429_total",
			Help: "DigitalOcean answers of 429 Too Many Requests, per account.",
		}, []string{"account"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genesis_do_account_failovers_total",
			Help: "Creates moved to the next candidate account because this one kept failing (a 5xx storm, timeouts, a refused token) and provably made nothing, per account given up on.",
		}, []string{"account"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "genesis_do_request_duration_seconds",
			Help:    "DigitalOcean API request latency (after the rate budget let it go), by account and endpoint.",
			Buckets: prometheus.DefBuckets,
		}, []string{"account", "endpoint"}),
	}
	if reg != nil {
		// A second Pool on the same registry (genesis.yaml's accounts
		// changed: Pool.Adopt) shares the first one's series.
		var err error
		if m.requests, err = registered(reg, m.requests); err != nil {
			return nil, err
		}
		if m.remaining, err = registered(reg, m.remaining); err != nil {
			return nil, err
		}
		if m.limited, err = registered(reg, m.limited); err != nil {
			return nil, err
		}
		if m.duration, err = registered(reg, m.duration); err != nil {
			return nil, err
		}
		if m.failovers, err = registered(reg, m.failovers); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// transport sits between godo and the oauth2 transport of one account:
// every attempt godo makes waits for the account's budget, and every
// answer feeds the budget and the metrics.
type transport struct {
	account string
	base    http.RoundTripper
	budget  *budget
	m       *metrics
	now     func() time.Time
	// requireLease refuses a mutating request without a lease.
	requireLease bool
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	ep := endpointOf(req.Method, req.URL.Path)
	// A fenced request spends no budget: the cheap check first, the
	// lease's proof (a round trip to Postgres) once a token is held, just
	// before the request leaves.
	if l := LeaseFrom(ctx); l != nil && mutating(req.Method) {
		if err := l.Valid(); err != nil {
			return nil, t.refuse(req, ep, err)
		}
	}
	done, err := t.budget.acquire(ctx, priorityFrom(ctx))
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if err := fence(ctx, req.Method, t.requireLease); err != nil {
		done(nil)
		return nil, t.refuse(req, ep, err)
	}
	start := t.now()
	resp, err := t.base.RoundTrip(req)
	t.m.duration.WithLabelValues(t.account, ep).Observe(t.now().Sub(start).Seconds())
	done(resp)
	code := "error"
	if resp != nil {
		code = strconv.Itoa(resp.StatusCode)
		if rem, perr := strconv.Atoi(resp.Header.Get("RateLimit-Remaining")); perr == nil {
			t.m.remaining.WithLabelValues(t.account).Set(float64(rem))
		}
		if resp.StatusCode == http.StatusTooManyRequests {
			t.m.limited.WithLabelValues(t.account).Inc()
		}
	}
	t.m.requests.WithLabelValues(t.account, ep, code).Inc()
	return resp, err
}

// refuse answers a request the fence stopped: it is never sent.
func (t *transport) refuse(req *http.Request, ep string, err error) error {
	if req.Body != nil {
		req.Body.Close()
	}
	t.m.requests.WithLabelValues(t.account, ep, "fenced").Inc()
	return err
}

// endpointOf names a request for the metrics: a small fixed set.
func endpointOf(method, path string) string {
	_, rest, ok := strings.Cut(path, "/v2/")
	if !ok {
		return "other"
	}
	p := strings.Split(strings.Trim(rest, "/"), "/")
	switch {
	case p[0] == "droplets" && len(p) == 1:
		switch method {
		case http.MethodGet:
			return "droplets_list"
		case http.MethodPost:
			return "droplet_create"
		}
	case p[0] == "droplets" && len(p) == 2:
		switch method {
		case http.MethodGet:
			return "droplet_get"
		case http.MethodDelete:
			return "droplet_delete"
		}
	case p[0] == "droplets" && len(p) == 3 && p[2] == "actions" && method == http.MethodPost:
		return "droplet_action"
	case p[0] == "droplets" && len(p) == 4 && p[2] == "actions" && method == http.MethodGet,
		p[0] == "actions" && len(p) == 2 && method == http.MethodGet:
		return "action_get"
	case p[0] == "snapshots" && len(p) == 1 && method == http.MethodGet:
		return "snapshots_list"
	case p[0] == "snapshots" && len(p) == 2:
		switch method {
		case http.MethodGet:
			return "snapshot_get"
		case http.MethodDelete:
			return "snapshot_delete"
		}
	case p[0] == "account" && len(p) == 1:
		return "account_get"
	}
	return "other"
}

type prioKey struct{}

// Priorities outside plan.Kind: listing for Observe goes first, since
// every plan waits for it.
const prioObserve = -1

// withPriority marks ctx's requests with a scheduling priority (lower is
// sooner); the transport reads it when it queues for a token.
func withPriority(ctx context.Context, prio int) context.Context {
	return context.WithValue(ctx, prioKey{}, prio)
}

func priorityFrom(ctx context.Context) int {
	if p, ok := ctx.Value(prioKey{}).(int); ok {
		return p
	}
	return 100
}

// registered registers c on reg, or returns the collector of the same
// description registered before.
func registered[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}
