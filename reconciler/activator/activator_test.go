package activator

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/lifecycle"
)

// TestActivatorThousandRequests: 1,000 concurrent requests (some POSTs
// with bodies) over 25 hibernated tenants cause exactly one wake per
// tenant, never hold more than the bounds, and every request held is
// answered by its own tenant's droplet once it woke; the others get 503
// with Retry-After at once.
func TestActivatorThousandRequests(t *testing.T) {
	const tenants, perTenant, maxPer, maxTotal = 25, 40, 30, 600
	w := newWorld(t)
	w.wakeDelay = 300 * time.Millisecond
	for i := range tenants {
		w.add(fmt.Sprintf("ws-%02d", i), lifecycle.Hibernated, true)
	}
	reg := prometheus.NewRegistry()
	cfg := w.config(reg)
	cfg.MaxHeldPerTenant, cfg.MaxHeld = maxPer, maxTotal
	// Every held request must be answered by its droplet: a hold long
	// enough for a machine busy with other tests (the hold's own 503 is
	// TestActivatorHoldTimeout's).
	cfg.Hold = time.Minute
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	maxHeld, maxTenantHeld, admitted := 0, map[string]int{}, map[string]int{}
	h.onHold = func(ws string, n, total int) {
		mu.Lock()
		defer mu.Unlock()
		maxHeld = max(maxHeld, total)
		maxTenantHeld[ws] = max(maxTenantHeld[ws], n)
		admitted[ws]++
	}
	srv := serve(t, h)
	c := client()

	type result struct {
		ws, host, method, body string
		code                   int
		retryAfter, got        string
		err                    error
	}
	results := make([]result, tenants*perTenant)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range results {
		ws := fmt.Sprintf("ws-%02d", i%tenants)
		r := result{ws: ws, host: stable(ws), method: http.MethodGet}
		if i%2 == 1 {
			r.host = strings.ToUpper(domain(ws)) + ":443" // case and port do not matter
		}
		if i%5 == 0 {
			r.method, r.body = http.MethodPost, fmt.Sprintf("payload-%d", i)
		}
		results[i] = r
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest(r.method, srv.URL+fmt.Sprintf("/webhook/lead/%d", i), strings.NewReader(r.body))
			req.Host = r.host
			resp, err := c.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			results[i].code, results[i].retryAfter, results[i].got = resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
		})
	}
	close(start)
	wg.Wait()

	proxied, overflowed := map[string]int{}, 0
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("request %d: %v", i, r.err)
		case r.code == http.StatusOK:
			if want := fmt.Sprintf("%s %s /webhook/lead/%d %s", r.ws, r.method, i, r.body); r.got != want {
				t.Errorf("request %d answered %q, want %q", i, r.got, want)
			}
			proxied[r.ws]++
		case r.code == http.StatusServiceUnavailable && r.retryAfter != "" && strings.Contains(r.got, "is waking up"):
			overflowed++
		default:
			t.Errorf("request %d: %d %q (Retry-After %q)", i, r.code, r.got, r.retryAfter)
		}
	}
	for i := range tenants {
		ws := fmt.Sprintf("ws-%02d", i)
		if n := w.wakeCount(ws); n != 1 {
			t.Errorf("%s: %d wake calls, want 1", ws, n)
		}
		if maxTenantHeld[ws] > maxPer {
			t.Errorf("%s: %d requests held at once, bound %d", ws, maxTenantHeld[ws], maxPer)
		}
		if proxied[ws] != admitted[ws] {
			t.Errorf("%s: %d requests held, %d answered by its droplet", ws, admitted[ws], proxied[ws])
		}
	}
	if maxHeld > maxTotal {
		t.Errorf("%d requests held at once, bound %d", maxHeld, maxTotal)
	}
	if got := testutil.ToFloat64(h.m.requests.WithLabelValues(outOverflow)); int(got) != overflowed {
		t.Errorf("overflow metric %v, 503 answers %d", got, overflowed)
	}
	if got := testutil.ToFloat64(h.m.held); got != 0 {
		t.Errorf("held gauge after the run = %v", got)
	}
	if n := testutil.CollectAndCount(h.m.wakeLatency); n != 1 {
		t.Errorf("wake latency histogram: %d series", n)
	}
	t.Logf("max held %d (bound %d), max per tenant %d (bound %d), %d proxied, %d overflowed",
		maxHeld, maxTotal, maxOf(maxTenantHeld), maxPer, sum(proxied), overflowed)
}

func maxOf(m map[string]int) (n int) {
	for _, v := range m {
		n = max(n, v)
	}
	return n
}

func sum(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

// TestActivatorHoldTimeout: a tenant that does not come up within the
// hold time gets 503 with Retry-After and the waking page; the wake is
// asked for once for every request of the episode.
func TestActivatorHoldTimeout(t *testing.T) {
	w := newWorld(t)
	w.add("ws-slow", lifecycle.Hibernated, true)
	w.never["ws-slow"] = true
	cfg := w.config(prometheus.NewRegistry())
	cfg.Hold, cfg.RetryAfter = 150*time.Millisecond, 7*time.Second
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, h)
	for range 3 {
		resp, body := do(t, client(), srv, http.MethodGet, stable("ws-slow"), "/", "")
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") != "7" ||
			!strings.Contains(body, "ws-slow is waking up, retry in 7 s") {
			t.Errorf("held past the hold time: %d Retry-After %q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
		}
	}
	if n := w.wakeCount("ws-slow"); n != 1 {
		t.Errorf("%d wake calls, want 1", n)
	}
}

// TestActivatorTenantCap: past its per-tenant bound a tenant's requests
// get 503 at once, while another tenant's requests still get through.
func TestActivatorTenantCap(t *testing.T) {
	w := newWorld(t)
	w.add("ws-flood", lifecycle.Hibernated, true)
	w.add("ws-calm", lifecycle.Hibernated, true)
	w.never["ws-flood"] = true
	cfg := w.config(prometheus.NewRegistry())
	cfg.MaxHeldPerTenant, cfg.MaxHeld, cfg.Hold = 3, 5, 30*time.Second
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, h)
	c := client()
	var wg sync.WaitGroup
	codes := make(chan int, 3)
	for range 3 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
			req.Host = stable("ws-flood")
			resp, err := c.Do(req)
			if err != nil {
				codes <- 0
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	testkit.WaitFor(t, "3 flood requests held", func() bool { return testutil.ToFloat64(h.m.held) == 3 })
	resp, body := do(t, c, srv, http.MethodGet, stable("ws-flood"), "/", "")
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("4th flood request: %d Retry-After %q %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	resp, body = do(t, c, srv, http.MethodGet, domain("ws-calm"), "/hello", "")
	if resp.StatusCode != http.StatusOK || body != "ws-calm GET /hello " {
		t.Errorf("other tenant during the flood: %d %q", resp.StatusCode, body)
	}
	h.Close() // the flood's held requests end with 503
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusServiceUnavailable {
			t.Errorf("held flood request ended with %d, want 503", code)
		}
	}
}

// TestActivatorBodyTooLarge: a body past MaxBody gets 413, declared or
// chunked.
func TestActivatorBodyTooLarge(t *testing.T) {
	w := newWorld(t)
	w.add("ws-a", lifecycle.Hibernated, true)
	cfg := w.config(prometheus.NewRegistry())
	cfg.MaxBody = 1024
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, h)
	big := strings.Repeat("x", 2048)
	if resp, _ := do(t, client(), srv, http.MethodPost, stable("ws-a"), "/", big); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("declared large body: %d, want 413", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", io.MultiReader(strings.NewReader(big))) // no length: chunked
	req.Host = stable("ws-a")
	resp, err := client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked large body: %d, want 413", resp.StatusCode)
	}
	if resp, body := do(t, client(), srv, http.MethodPost, stable("ws-a"), "/small", "ok"); resp.StatusCode != http.StatusOK || body != "ws-a POST /small ok" {
		t.Errorf("small body: %d %q", resp.StatusCode, body)
	}
}

// TestActivatorPixels: open pixels are answered at once with a GIF while
// the tenant sleeps, and replayed to its droplet after the wake in arrival
// order; past MaxPixels the oldest are dropped and counted.
func TestActivatorPixels(t *testing.T) {
	w := newWorld(t)
	w.add("ws-mail", lifecycle.Hibernated, true)
	gate := make(chan struct{})
	w.gate["ws-mail"] = gate
	cfg := w.config(prometheus.NewRegistry())
	cfg.MaxPixels = 4
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, h)
	c := client()
	for i := 1; i <= 6; i++ {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/webhook/o/send-%d?x=%d", srv.URL, i, i), nil)
		req.Host = domain("ws-mail")
		req.Header.Set("User-Agent", fmt.Sprintf("mail-client-%d", i))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/gif" ||
			!strings.Contains(resp.Header.Get("Cache-Control"), "no-store") || string(b) != string(gif) {
			t.Fatalf("pixel %d: %d %v %q", i, resp.StatusCode, resp.Header, b)
		}
	}
	if n := w.wakeCount("ws-mail"); n != 1 {
		t.Errorf("%d wake calls for the pixels, want 1", n)
	}
	w.mu.Lock()
	early := len(w.received["ws-mail"])
	w.mu.Unlock()
	if early != 0 {
		t.Fatalf("%d pixels reached a droplet before the wake", early)
	}
	close(gate)
	testkit.WaitFor(t, "4 pixels replayed", func() bool { return testutil.ToFloat64(h.m.replayed) == 4 })
	w.mu.Lock()
	var got []string
	for _, r := range w.received["ws-mail"] {
		got = append(got, r.URL.RequestURI()+" "+r.Header.Get("User-Agent"))
		if _, err := time.Parse(time.RFC3339Nano, r.Header.Get("X-Genesis-Activator-Arrived")); err != nil {
			t.Errorf("replayed pixel without its arrival time: %v", err)
		}
		if r.Host != domain("ws-mail") {
			t.Errorf("replayed with Host %q", r.Host)
		}
	}
	w.mu.Unlock()
	want := []string{"/webhook/o/send-3?x=3 mail-client-3", "/webhook/o/send-4?x=4 mail-client-4",
		"/webhook/o/send-5?x=5 mail-client-5", "/webhook/o/send-6?x=6 mail-client-6"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("replayed:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n := testutil.ToFloat64(h.m.dropped.WithLabelValues("overflow")); n != 2 {
		t.Errorf("dropped (overflow) = %v, want 2", n)
	}
	// Up now: a pixel goes straight to the droplet.
	if resp, body := do(t, c, srv, http.MethodGet, domain("ws-mail"), "/webhook/o/send-7", ""); resp.StatusCode != http.StatusOK || body != "ws-mail GET /webhook/o/send-7 " {
		t.Errorf("pixel of an up tenant: %d %q", resp.StatusCode, body)
	}
}

// TestActivatorRefused: a tenant git declares hibernated gets 503 at once
// without a wake; a wake refused by the reconciler ends the held requests
// with the same page.
func TestActivatorRefused(t *testing.T) {
	w := newWorld(t)
	w.add("ws-off", lifecycle.Hibernated, false)
	w.add("ws-late", lifecycle.Hibernated, true)
	w.refuse["ws-late"] = true
	cfg := w.config(prometheus.NewRegistry())
	cfg.Hold = time.Minute // a refusal must not wait for it
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, h)
	for _, ws := range []string{"ws-off", "ws-late"} {
		resp, body := do(t, client(), srv, http.MethodGet, stable(ws), "/", "")
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, ws+" is hibernated") {
			t.Errorf("%s: %d %q", ws, resp.StatusCode, body)
		}
	}
	if n := w.wakeCount("ws-off"); n != 0 {
		t.Errorf("ws-off: %d wake calls, want 0", n)
	}
	if n := w.wakeCount("ws-late"); n != 1 {
		t.Errorf("ws-late: %d wake calls, want 1", n)
	}
}

// TestActivatorUnknownHost: an unknown host gets 404 and no certificate;
// a hibernated tenant's names get one, a running tenant's do not.
func TestActivatorUnknownHost(t *testing.T) {
	w := newWorld(t)
	w.add("ws-hib", lifecycle.Hibernated, true)
	w.add("ws-up", lifecycle.ActiveHealthy, true)
	w.add("ws-boot", lifecycle.Booting, true)
	h, err := New(w.config(prometheus.NewRegistry()))
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, h)
	if resp, _ := do(t, client(), srv, http.MethodGet, "nobody.example", "/", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown host: %d, want 404", resp.StatusCode)
	}
	if resp, _ := do(t, client(), srv, http.MethodGet, "bad host!", "/", ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad host: %d, want 400", resp.StatusCode)
	}
	ask := serveAsk(t, h)
	testkit.WaitFor(t, "the status table", func() bool { return h.statuses.Load() != nil })
	for _, tc := range []struct {
		domain string
		want   int
	}{
		{"nobody.example", http.StatusForbidden},
		{stable("ws-hib"), http.StatusOK},
		{strings.ToUpper(domain("ws-hib")) + ".", http.StatusOK},
		{stable("ws-boot"), http.StatusOK},
		{stable("ws-up"), http.StatusForbidden},
		{domain("ws-up"), http.StatusForbidden},
		{"", http.StatusBadRequest},
	} {
		resp, err := http.Get(ask.URL + "/ask?domain=" + tc.domain)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("ask %q: %d, want %d", tc.domain, resp.StatusCode, tc.want)
		}
	}
}

func TestNewRejects(t *testing.T) {
	w := newWorld(t)
	for name, mod := range map[string]func(*Config){
		"no lookup":          func(c *Config) { c.Lookup = nil },
		"tenant cap = total": func(c *Config) { c.MaxHeld, c.MaxHeldPerTenant = 10, 10 },
		"bad pixel pattern":  func(c *Config) { c.PixelPaths = []string{"/webhook/o/["} },
		"relative pixel":     func(c *Config) { c.PixelPaths = []string{"webhook/o/*"} },
		"port":               func(c *Config) { c.DropletPort = 70000 },
		"negative hold":      func(c *Config) { c.Hold = -time.Second },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := w.config(prometheus.NewRegistry())
			mod(&cfg)
			if _, err := New(cfg); err == nil {
				t.Error("New accepted it")
			}
		})
	}
}

// TestActivatorHibernatedAgain: a tenant woken, then hibernated again
// within UpTTL, is not proxied to its gone droplet: once a status read
// says it no longer runs there, the next request starts a new wake.
func TestActivatorHibernatedAgain(t *testing.T) {
	w := newWorld(t)
	w.add("ws-a", lifecycle.Hibernated, true)
	cfg := w.config(prometheus.NewRegistry())
	cfg.UpTTL = time.Hour
	h, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := serve(t, h)
	if resp, body := do(t, client(), srv, http.MethodGet, stable("ws-a"), "/one", ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "ws-a GET /one") {
		t.Fatalf("first wake: %d %q", resp.StatusCode, body)
	}
	// Hibernated again: its droplet is gone.
	w.mu.Lock()
	old := w.status["ws-a"].IP
	w.droplets[old].Close()
	delete(w.droplets, old)
	w.status["ws-a"] = Status{Lifecycle: lifecycle.Hibernated}
	w.mu.Unlock()
	testkit.WaitFor(t, "the status read after the hibernation", func() bool {
		tbl := h.statuses.Load()
		return tbl != nil && tbl.m["ws-a"].Lifecycle == lifecycle.Hibernated
	})
	resp, body := do(t, client(), srv, http.MethodGet, stable("ws-a"), "/two", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "ws-a GET /two") {
		t.Fatalf("after a second hibernation: %d %q", resp.StatusCode, body)
	}
	if n := w.wakeCount("ws-a"); n != 2 {
		t.Errorf("%d wake calls, want 2 (one per hibernation)", n)
	}
}

// TestActivatorDropletNotReadyYet: a woken droplet reported healthy that
// still refuses connections (its Caddy binding its listener) or fails the
// TLS handshake (its Caddy still getting the name's certificate on
// demand) is retried, not answered 502: nothing was sent, so the held
// POST arrives once and whole.
func TestActivatorDropletNotReadyYet(t *testing.T) {
	for name, late := range map[string]func(*world){
		"not listening":  func(w *world) { w.late["ws-a"] = 400 * time.Millisecond },
		"no certificate": func(w *world) { w.certLate["ws-a"] = 700 * time.Millisecond },
	} {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			w.add("ws-a", lifecycle.Hibernated, true)
			late(w)
			h, err := New(w.config(prometheus.NewRegistry()))
			if err != nil {
				t.Fatal(err)
			}
			srv := serve(t, h)
			resp, body := do(t, client(), srv, http.MethodPost, stable("ws-a"), "/webhook/x", "payload")
			if resp.StatusCode != 200 || body != "ws-a POST /webhook/x payload" {
				t.Errorf("%d %q", resp.StatusCode, body)
			}
			w.mu.Lock()
			n := len(w.bodies["ws-a"])
			w.mu.Unlock()
			if n != 1 {
				t.Errorf("the droplet received %d requests, want 1", n)
			}
		})
	}
}
