package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/godo"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/oauth2"
)

// DefaultBaseURL is DigitalOcean's API.
const DefaultBaseURL = "https://api.digitalocean.com/"

// Account is one DigitalOcean account (team) and its API token.
type Account struct {
	Name  string
	Token string
	// BaseURL is the API root, ending in "/" (DefaultBaseURL when empty;
	// the simulator's URL in tests).
	BaseURL string
	// Regions the account serves; informational here (the planner picks
	// accounts).
	Regions []string
}

// Limits tune the scheduler. Zero fields take the defaults.
type Limits struct {
	// PerMinute and PerHour are DigitalOcean's per-token limits (250 and
	// 5,000). Negative means unlimited.
	PerMinute int
	PerHour   int
	// MaxInFlight is how many jobs (Execute calls) run at once per
	// account (10). A job holds its slot while it waits for a boot or an
	// action.
	MaxInFlight int
	// MaxAttempts bounds the tries of one request on transient errors (5).
	// 429s are waited out by the budget and bounded separately
	// (MaxRateLimited, 20).
	MaxAttempts    int
	MaxRateLimited int
	// RetryBase and RetryMax shape the jittered exponential backoff
	// between tries (1s, 30s).
	RetryBase time.Duration
	RetryMax  time.Duration
	// PollMin and PollMax shape the backoff of waits on a boot or an
	// action (2s doubling up to 5s: a droplet that boots in the seed's
	// 15 s is seen at 16 s, where a 15 s cap saw it at 29 s; ten waits
	// of an account poll at most 120 times a minute, within its budget).
	PollMin time.Duration
	PollMax time.Duration
	// WaitTimeout bounds one wait on a boot or an action (15m).
	WaitTimeout time.Duration
	// RequestTimeout bounds one HTTP request in real time (30s).
	RequestTimeout time.Duration
}

func (l Limits) withDefaults() Limits {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defD := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.PerMinute, 250)
	def(&l.PerHour, 5000)
	if l.PerMinute < 0 {
		l.PerMinute = unlimited
	}
	if l.PerHour < 0 {
		l.PerHour = unlimited
	}
	def(&l.MaxInFlight, 10)
	def(&l.MaxAttempts, 5)
	def(&l.MaxRateLimited, 20)
	defD(&l.RetryBase, time.Second)
	defD(&l.RetryMax, 30*time.Second)
	defD(&l.PollMin, 2*time.Second)
	defD(&l.PollMax, 5*time.Second)
	defD(&l.WaitTimeout, 15*time.Minute)
	defD(&l.RequestTimeout, 30*time.Second)
	return l
}

// Config configures a Pool.
type Config struct {
	Accounts []Account
	Limits   Limits
	// Logger receives structured logs (discarded when nil).
	Logger *slog.Logger
	// Registerer receives the genesis_do_* metrics (not registered when
	// nil).
	Registerer prometheus.Registerer
	// Now is the clock of the rate budget and of waits (time.Now when
	// nil). SleepUntil returns once Now reads until or later, or ctx ends
	// (a timer when nil). Tests run both on the simulator's clock; an
	// absolute deadline lets a virtual clock jump straight to it.
	Now        func() time.Time
	SleepUntil func(ctx context.Context, until time.Time) error
	// Transport is the HTTP transport under the oauth2 one (a clone of
	// http.DefaultTransport per account when nil).
	Transport http.RoundTripper
	// RequireLease refuses (ErrFenced) every mutating request whose
	// context carries no Lease (WithLease): the reconciler sets it, so a
	// path that forgot its lease fails instead of acting unfenced.
	RequireLease bool
}

// Pool holds one godo client, rate budget and job scheduler per account.
// It is safe for concurrent use.
type Pool struct {
	log        *slog.Logger
	lim        Limits
	now        func() time.Time
	sleepUntil func(context.Context, time.Time) error
	// mu guards accounts, names and idle, which Adopt replaces; an
	// *account taken from them stays usable after.
	m        *metrics
	mu       sync.RWMutex
	accounts map[string]*account
	names    []string
	idle     []*http.Transport
}

// account is one account's client and scheduler.
type account struct {
	name    string
	regions []string
	client  *godo.Client
	budget  *budget
	slots   *slots
	// conf is what it was built from (Adopt keeps an account whose token
	// and API did not change, with its budget and slots).
	conf Account
}

// New builds a Pool. It makes no requests.
func New(cfg Config) (*Pool, error) {
	if len(cfg.Accounts) == 0 {
		return nil, errors.New("cloud: no accounts")
	}
	p := &Pool{
		log:        cfg.Logger,
		lim:        cfg.Limits.withDefaults(),
		now:        cfg.Now,
		sleepUntil: cfg.SleepUntil,
		accounts:   map[string]*account{},
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	p.log = p.log.With("component", "cloud")
	if p.now == nil {
		p.now = time.Now
	}
	if p.sleepUntil == nil {
		now := p.now
		p.sleepUntil = func(ctx context.Context, t time.Time) error { return sleepTimer(ctx, t.Sub(now())) }
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("cloud: register metrics: %w", err)
	}
	p.m = m
	for _, a := range cfg.Accounts {
		if a.Name == "" || a.Token == "" {
			return nil, fmt.Errorf("cloud: account %q: name and token are required", a.Name)
		}
		if _, dup := p.accounts[a.Name]; dup {
			return nil, fmt.Errorf("cloud: account %q listed twice", a.Name)
		}
		base := a.BaseURL
		if base == "" {
			base = DefaultBaseURL
		}
		if !strings.HasSuffix(base, "/") {
			base += "/"
		}
		rt := cfg.Transport
		if rt == nil {
			t := http.DefaultTransport.(*http.Transport).Clone()
			t.MaxIdleConnsPerHost = p.lim.MaxInFlight + 4
			p.idle = append(p.idle, t)
			rt = t
		}
		b := newBudget(p.lim.PerMinute, p.lim.PerHour, p.now, p.sleepUntil)
		hc := &http.Client{
			Timeout: p.lim.RequestTimeout,
			Transport: &transport{
				account: a.Name,
				base: &oauth2.Transport{
					Source: oauth2.StaticTokenSource(&oauth2.Token{AccessToken: a.Token}),
					Base:   rt,
				},
				budget:       b,
				m:            m,
				now:          p.now,
				requireLease: cfg.RequireLease,
			},
		}
		// No godo retries: they would send a create again blindly. Our
		// retries look for the droplet by name before every new POST.
		client, err := godo.New(hc, godo.SetBaseURL(base), godo.SetUserAgent("genesis-reconciler"))
		if err != nil {
			return nil, fmt.Errorf("cloud: account %s: %w", a.Name, err)
		}
		m.limited.WithLabelValues(a.Name) // 0 until the first 429
		m.failovers.WithLabelValues(a.Name)
		p.accounts[a.Name] = &account{
			name:    a.Name,
			regions: slices.Clone(a.Regions),
			client:  client,
			budget:  b,
			slots:   newSlots(p.lim.MaxInFlight),
			conf:    a,
		}
		p.names = append(p.names, a.Name)
	}
	return p, nil
}

// Accounts returns the account names in configuration order.
func (p *Pool) Accounts() []string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return slices.Clone(p.names)
}

// Adopt takes next's accounts (a Pool built from a changed genesis.yaml):
// an account whose token and API are unchanged keeps its rate budget, job
// slots and client (only its regions are updated); a new or changed one
// comes from next; one next lacks is dropped — jobs already running in it
// finish with the account they hold. It returns the names added, changed
// and removed. next must not be used after.
func (p *Pool) Adopt(next *Pool) (added, changed, removed []string) {
	next.mu.Lock()
	accts, names, idle := next.accounts, next.names, next.idle
	next.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	merged := make(map[string]*account, len(accts))
	for _, name := range names {
		nac, old := accts[name], p.accounts[name]
		switch {
		case old == nil:
			added = append(added, name)
			merged[name] = nac
		case old.conf.Token != nac.conf.Token || old.conf.BaseURL != nac.conf.BaseURL:
			changed = append(changed, name)
			merged[name] = nac
		default:
			old.regions, old.conf.Regions = slices.Clone(nac.regions), slices.Clone(nac.conf.Regions)
			merged[name] = old
		}
	}
	for _, name := range p.names {
		if merged[name] == nil {
			removed = append(removed, name)
		}
	}
	p.accounts, p.names = merged, slices.Clone(names)
	p.idle = append(p.idle, idle...)
	p.log.Info("accounts updated", "added", added, "changed", changed, "removed", removed)
	return added, changed, removed
}

// Close releases idle connections.
func (p *Pool) Close() {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, t := range p.idle {
		t.CloseIdleConnections()
	}
}

// inFlight returns how many requests are in flight in every account.
func (p *Pool) inFlight() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	n := 0
	for _, ac := range p.accounts {
		n += ac.budget.active()
	}
	return n
}

func (p *Pool) account(name, op string) (*account, error) {
	p.mu.RLock()
	ac := p.accounts[name]
	p.mu.RUnlock()
	if ac == nil {
		return nil, terminalf(name, op, "unknown account")
	}
	return ac, nil
}

// sleep waits d on the Pool's clock.
func (p *Pool) sleep(ctx context.Context, d time.Duration) error {
	return p.sleepUntil(ctx, p.now().Add(d))
}

func sleepTimer(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backoff returns the wait before try n+1 (n ≥ 1): full jitter over an
// exponential capped at RetryMax.
func (p *Pool) backoff(n int) time.Duration {
	d := p.lim.RetryBase << min(n-1, 16)
	if d <= 0 || d > p.lim.RetryMax {
		d = p.lim.RetryMax
	}
	return d/2 + rand.N(d/2+1)
}

// call runs one request through retries: transient errors are tried again
// after a jittered backoff up to MaxAttempts, 429s as long as the budget
// keeps waiting them out (MaxRateLimited), anything else returns at once.
func (p *Pool) call(ctx context.Context, ac *account, op string, fn func(context.Context) (*godo.Response, error)) error {
	tries, limited := 0, 0
	for {
		resp, err := fn(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("account %s: %s: %w", ac.name, op, context.Cause(ctx))
		}
		e := classify(ac.name, op, err)
		if e.Kind != KindTransient {
			return e
		}
		var wait time.Duration
		if resp != nil && resp.StatusCode == http.StatusTooManyRequests {
			// The budget is closed until Retry-After; a little jitter
			// keeps the waiters from arriving at once.
			limited++
			if limited > p.lim.MaxRateLimited {
				return e
			}
			wait = rand.N(p.lim.RetryBase/4 + 1)
		} else {
			tries++
			if tries >= p.lim.MaxAttempts {
				return e
			}
			wait = p.backoff(tries)
		}
		p.log.Debug("retrying", "account", ac.name, "op", op, "status", e.Status, "wait", wait, "err", err)
		if err := p.sleep(ctx, wait); err != nil {
			return fmt.Errorf("account %s: %s: %w", ac.name, op, err)
		}
	}
}
