package cloud

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/reconciler/plan"
)

// BenchmarkProvision1000 creates 1,000 droplets over 4 simulated accounts
// through Execute, against the simulator at DigitalOcean's real limits
// (250 requests a minute and 5,000 an hour per token) with the budget at
// the same limits. Time is the simulator's frozen clock, moved only by the
// Pool's sleeps (and never while a request is in flight), so minutes of
// rate-limited work take a second of real time and the figures do not
// depend on the machine.
//
// Metrics:
//   - rate_ratio: how close to the rate limits the run went. For each
//     account with N requests, the fastest the sliding windows allow is
//     T_min(N) = max over windows (limit L, span W) of W·(⌈N/L⌉−1): a full
//     burst at once, then one more each time the window turns over. The
//     bound of the run is the largest T_min over the accounts, and
//     rate_ratio = bound / simulated duration (1.0 = as fast as DigitalOcean
//     permits for the requests made; above 1 would mean 429s).
//   - req/s and bound_req/s: achieved requests per simulated second over
//     all accounts, and the steady-state bound (accounts × 250/60). The
//     achieved figure can beat the steady bound on short runs because the
//     first minute's burst is free.
//   - 429s: DigitalOcean refusals (goal 0).
//   - req/droplet: requests per create (find by name, POST, poll).
//
// Sub-benchmarks: boot=0s (droplets active at once: the scheduler against
// the rate limits alone) and boot=60s (DigitalOcean's usual boot time: a
// job holds its account slot while it polls, so MaxInFlight, not the rate
// limit, bounds the run).
func BenchmarkProvision1000(b *testing.B) {
	for _, boot := range []time.Duration{0, time.Minute} {
		b.Run("boot="+boot.String(), func(b *testing.B) { provision(b, boot) })
	}
}

func provision(b *testing.B, boot time.Duration) {
	const droplets, nAccounts = 1000, 4
	const perMinute, perHour = 250, 5000
	for b.Loop() {
		b.StopTimer()
		var accts []dosim.Account
		var names []string
		for i := range nAccounts {
			name := fmt.Sprintf("acct%d", i)
			accts = append(accts, dosim.Account{Name: name, Token: "tok-" + name, DropletLimit: droplets})
			names = append(names, name)
		}
		e := newEnv(b, envOpts{
			accounts: accts,
			sim:      dosim.Limits{RatePerMinute: perMinute, RatePerHour: perHour, BootDelay: dosim.Duration(boot)},
			limits:   Limits{PerMinute: perMinute, PerHour: perHour},
		})
		start := e.sim.Now()
		b.StartTimer()

		runCreates(b, e.pool, names, droplets)

		b.StopTimer()
		took := e.sim.Now().Sub(start)
		var bound time.Duration
		total := 0.0
		for _, name := range names {
			n := e.counter("genesis_do_requests_total", map[string]string{"account": name})
			total += n
			bound = max(bound, minTime(int(n), perMinute, time.Minute), minTime(int(n), perHour, time.Hour))
		}
		if got := len(e.droplets()); got != droplets {
			b.Fatalf("%d droplets, want %d", got, droplets)
		}
		b.ReportMetric(bound.Seconds()/took.Seconds(), "rate_ratio")
		b.ReportMetric(total/took.Seconds(), "req/s")
		b.ReportMetric(nAccounts*perMinute/60.0, "bound_req/s")
		b.ReportMetric(e.counter("genesis_do_429_total", nil), "429s")
		b.ReportMetric(total/droplets, "req/droplet")
		b.ReportMetric(took.Seconds(), "sim_s")
		b.StartTimer()
	}
}

// minTime is the shortest time in which a sliding window of limit per span
// lets n requests through, starting empty.
func minTime(n, limit int, span time.Duration) time.Duration {
	if n <= limit {
		return 0
	}
	return span * time.Duration(int(math.Ceil(float64(n)/float64(limit)))-1)
}

// BenchmarkDecodeDropletPage decodes one page of 200 droplets as the
// simulator lists them (GET /v2/droplets?tag_name=genesis&per_page=200,
// ~1.4 KB of JSON a droplet) into what an observation reads
// (listedDroplet), against the same-run baseline of godo.Droplet, which
// godo's Droplets.ListByTag decodes: ns/op and B/op. At 100,000 droplets
// every pass of the leader decodes 500 such pages.
func BenchmarkDecodeDropletPage(b *testing.B) {
	srv := dosimtest.Start(b, dosim.Config{
		Accounts: []dosim.Account{{Name: "bench", Token: "t", DropletLimit: 200}},
		Limits:   dosim.Limits{RatePerMinute: -1, RatePerHour: -1},
	})
	c := srv.Client("t")
	ctx := context.Background()
	names := make([]string, 200)
	for i := range names {
		names[i] = plan.DropletName(fmt.Sprintf("ws-%03d", i), 1)
	}
	dosimtest.CreateTagged(b, c, names, "genesis")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/v2/droplets?tag_name=genesis&per_page=200", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("listed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var root struct {
				Droplets []listedDroplet `json:"droplets"`
			}
			if err := json.Unmarshal(page, &root); err != nil || len(root.Droplets) != 200 {
				b.Fatalf("%d droplets, %v", len(root.Droplets), err)
			}
		}
	})
	b.Run("godo", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var root struct {
				Droplets []godo.Droplet `json:"droplets"`
			}
			if err := json.Unmarshal(page, &root); err != nil || len(root.Droplets) != 200 {
				b.Fatalf("%d droplets, %v", len(root.Droplets), err)
			}
		}
	})
}
