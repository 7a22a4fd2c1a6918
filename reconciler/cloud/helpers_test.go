package cloud

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/reconciler/plan"
)

// env is a frozen simulator and a Pool whose clock is the simulator's:
// sleeps move simulated time forward instead of waiting (vclock), so
// backoffs, rate windows and boot waits cost (almost) no real time.
type env struct {
	t    testing.TB
	srv  *dosimtest.Server
	sim  *dosim.Sim
	pool *Pool
	reg  *prometheus.Registry
	// tokens by account name.
	tokens map[string]string
}

type envOpts struct {
	accounts []dosim.Account
	sim      dosim.Limits
	limits   Limits
	wrap     func(http.Handler) http.Handler
	// requireLease is Config.RequireLease.
	requireLease bool
}

func unlimitedSim() dosim.Limits { return dosim.Limits{RatePerMinute: -1, RatePerHour: -1} }

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	if o.accounts == nil {
		o.accounts = []dosim.Account{{Name: "a", Token: "tok-a", DropletLimit: 1000}}
	}
	var opts []dosimtest.Option
	if o.wrap != nil {
		opts = append(opts, dosimtest.WithMiddleware(o.wrap))
	}
	srv := dosimtest.Start(t, dosim.Config{Accounts: o.accounts, Limits: o.sim, Seed: 1}, opts...)
	srv.Sim.Freeze(true)
	e := &env{t: t, srv: srv, sim: srv.Sim, reg: prometheus.NewRegistry(), tokens: map[string]string{}}
	var accts []Account
	for _, a := range o.accounts {
		accts = append(accts, Account{Name: a.Name, Token: a.Token, BaseURL: srv.URL})
		e.tokens[a.Name] = a.Token
	}
	var err error
	e.pool, err = New(Config{
		Accounts:     accts,
		Limits:       o.limits,
		Logger:       slog.New(slog.DiscardHandler),
		Registerer:   e.reg,
		RequireLease: o.requireLease,
		Now:          srv.Sim.Now,
		SleepUntil:   (&vclock{sim: srv.Sim, sleepers: map[*time.Time]struct{}{}, quiet: func() bool { return e.pool.inFlight() == 0 }}).SleepUntil,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(e.pool.Close)
	return e
}

// vclock is virtual time on the simulator's frozen clock: a sleeper does
// not wait, the clock jumps to a deadline. To behave like a real clock (in
// which requests take milliseconds and minutes pass only while everybody
// waits), it moves only once the pool has settled — no request in flight
// for a while — and then only to the earliest deadline anybody sleeps for.
type vclock struct {
	sim   *dosim.Sim
	quiet func() bool

	mu       sync.Mutex
	sleepers map[*time.Time]struct{}
}

// settle is how long (real time) nothing may be in flight before the
// clock moves.
const settle = 2 * time.Millisecond

func (v *vclock) SleepUntil(ctx context.Context, until time.Time) error {
	if !until.After(v.sim.Now()) {
		return ctx.Err()
	}
	v.mu.Lock()
	v.sleepers[&until] = struct{}{}
	v.mu.Unlock()
	defer func() {
		v.mu.Lock()
		delete(v.sleepers, &until)
		v.mu.Unlock()
	}()
	quietSince := time.Time{}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !until.After(v.sim.Now()) {
			return nil
		}
		if !v.quiet() {
			quietSince = time.Time{}
		} else if quietSince.IsZero() {
			quietSince = time.Now()
		} else if time.Since(quietSince) >= settle {
			v.mu.Lock()
			first := true
			for t := range v.sleepers {
				first = first && !t.Before(until)
			}
			if first {
				v.sim.SetTime(until)
			}
			v.mu.Unlock()
			if first {
				return nil
			}
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// client is a plain godo client on account name, for setting the scene.
func (e *env) client(name string) *godo.Client { return e.srv.Client(e.tokens[name]) }

// droplets returns the simulator's droplets (all accounts) by name.
func (e *env) droplets() map[string][]map[string]any {
	out := map[string][]map[string]any{}
	for _, d := range e.sim.Snapshot().Droplets {
		n := d["name"].(string)
		out[n] = append(out[n], d)
	}
	return out
}

func (e *env) snapshots() []map[string]any { return e.sim.Snapshot().Snapshots }

func num(v any) int {
	switch x := v.(type) {
	case int:
		return x
	case float64:
		return int(x)
	case string:
		var n int
		fmt.Sscan(x, &n)
		return n
	}
	return 0
}

func createAction(ws, account string, alts ...string) plan.Action {
	return plan.Action{
		Kind: plan.Create, Workspace: ws, Account: account, Alternates: alts,
		Region: "nyc3", Size: "s-1vcpu-1gb", Image: "ubuntu-24-04-x64", Tier: "starter",
		Droplet: plan.DropletName(ws, 1), Gen: 1,
	}
}

// counter sums a counter metric's samples whose labels include want.
func (e *env) counter(name string, want map[string]string) float64 {
	e.t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		e.t.Fatalf("gather: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue metric
				}
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// steps records Progress calls.
type steps struct {
	mu  sync.Mutex
	got []string
}

func (s *steps) add(step string, _ Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, step)
}

func (s *steps) list() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got)
}
