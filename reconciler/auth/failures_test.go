package auth

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock is a settable clock.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time { return c.now }

// failingServer answers 401 unless the request carries "Bearer good", and
// counts the requests that reached it.
func failingServer(reached *int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*reached++
		if r.Header.Get("Authorization") != "Bearer good" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Write([]byte("ok"))
	})
}

func TestFailuresThrottleAndRefill(t *testing.T) {
	clk := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	f := NewFailures(FailuresConfig{Rate: 1, Burst: 5, Now: clk.Now, Registerer: reg,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	reached := 0
	h := f.Wrap(failingServer(&reached))
	do := func(addr, token string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/v1/fleet", nil)
		r.RemoteAddr = addr
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	for i := range 5 {
		if got := do("192.0.2.1:1000", "bad").Code; got != 401 {
			t.Fatalf("failure %d: %d, want 401", i+1, got)
		}
	}
	// The bucket is empty: refused before the handler runs, even with a
	// good token (the client is judged, not the request).
	for _, tok := range []string{"bad", "good"} {
		w := do("192.0.2.1:1001", tok)
		if w.Code != 429 || w.Header().Get("Retry-After") != "1" {
			t.Errorf("token %s after the burst: %d Retry-After %q, want 429 and 1", tok, w.Code, w.Header().Get("Retry-After"))
		}
	}
	if reached != 5 {
		t.Errorf("handler reached %d times, want 5", reached)
	}
	// Probes still answer.
	for _, path := range []string{"/healthz", "/readyz"} {
		r := httptest.NewRequest("GET", path, nil)
		r.RemoteAddr = "192.0.2.1:1002"
		r.Header.Set("Authorization", "Bearer good")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			t.Errorf("%s of a throttled client: %d, want 200", path, w.Code)
		}
	}
	reached -= 2
	// Another client is not affected.
	if got := do("192.0.2.2:1000", "good").Code; got != 200 {
		t.Errorf("another client: %d, want 200", got)
	}
	// One failure regained per second.
	clk.now = clk.now.Add(time.Second)
	if got := do("192.0.2.1:1000", "good").Code; got != 200 {
		t.Errorf("after 1s: %d, want 200", got)
	}
	if got := testutil.ToFloat64(f.failures.WithLabelValues("api")); got != 5 {
		t.Errorf("genesis_http_unauthenticated_total{kind=api} = %v, want 5", got)
	}
	if got := testutil.ToFloat64(f.throttled); got != 2 {
		t.Errorf("genesis_http_throttled_total = %v, want 2", got)
	}
	if n, err := testutil.GatherAndCount(reg, "genesis_http_unauthenticated_total"); err != nil || n != 3 {
		t.Errorf("unauthenticated series = %d (%v), want 3 (every kind from the start)", n, err)
	}
	if !strings.Contains(logs.String(), "client throttled") || !strings.Contains(logs.String(), "client=192.0.2.1") {
		t.Errorf("no throttle log line:\n%s", logs.String())
	}
}

// TestFailuresLogIsRateLimited: a flood writes logBurst lines a window and
// then one line counting the rest.
func TestFailuresLogIsRateLimited(t *testing.T) {
	clk := &fakeClock{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	var logs bytes.Buffer
	f := NewFailures(FailuresConfig{Rate: 0.001, Burst: 1, Now: clk.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	reached := 0
	h := f.Wrap(failingServer(&reached))
	for range 1000 {
		r := httptest.NewRequest("GET", "/v1/manifest", nil)
		r.RemoteAddr = "198.51.100.7:5"
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	if got := strings.Count(logs.String(), "client throttled"); got != logBurst {
		t.Errorf("%d throttle lines for 999 throttled requests, want %d", got, logBurst)
	}
	clk.now = clk.now.Add(logEvery)
	r := httptest.NewRequest("GET", "/v1/manifest", nil)
	r.RemoteAddr = "198.51.100.7:5"
	h.ServeHTTP(httptest.NewRecorder(), r)
	if !strings.Contains(logs.String(), "suppressed=989") {
		t.Errorf("no summary of the 989 suppressed lines:\n%s", logs.String())
	}
	if reached != 1 {
		t.Errorf("handler reached %d times, want 1", reached)
	}
	if got := testutil.ToFloat64(f.failures.WithLabelValues("agent")); got != 1 {
		t.Errorf("agent failures = %v, want 1", got)
	}
}

func TestFailuresClient(t *testing.T) {
	proxies, err := ParsePrefixes("10.0.0.0/8, 192.0.2.10")
	if err != nil {
		t.Fatal(err)
	}
	f := NewFailures(FailuresConfig{TrustedProxies: proxies})
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"direct v4", "203.0.113.5:4000", nil, "203.0.113.5"},
		{"direct ignores forwarded", "203.0.113.5:4000", []string{"198.51.100.1"}, "203.0.113.5"},
		{"v6 by its /64", "[2001:db8:1:2:3:4:5:6]:4000", nil, "2001:db8:1:2::"},
		{"v4-mapped v6", "[::ffff:203.0.113.5]:4000", nil, "203.0.113.5"},
		{"through a proxy", "10.1.2.3:4000", []string{"198.51.100.1"}, "198.51.100.1"},
		{"through two proxies", "10.1.2.3:4000", []string{"198.51.100.1, 192.0.2.10"}, "198.51.100.1"},
		{"spoofed left hops ignored", "10.1.2.3:4000", []string{"1.1.1.1, 198.51.100.1"}, "198.51.100.1"},
		{"several headers", "10.1.2.3:4000", []string{"1.1.1.1", "198.51.100.1"}, "198.51.100.1"},
		{"malformed hop stops", "10.1.2.3:4000", []string{"198.51.100.1, garbage"}, "10.1.2.3"},
		{"proxy without header", "10.1.2.3:4000", nil, "10.1.2.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := f.Client(r).String(); got != tc.want {
				t.Errorf("Client = %s, want %s", got, tc.want)
			}
		})
	}
	if _, err := ParsePrefixes("10.0.0.0/33"); err == nil {
		t.Error("a bad prefix parsed")
	}
}

// TestFailuresBoundedMemory: a flood from more addresses than MaxClients
// keeps the table at its bound.
func TestFailuresBoundedMemory(t *testing.T) {
	f := NewFailures(FailuresConfig{Rate: 0.001, Burst: 2, MaxClients: 100})
	reached := 0
	h := f.Wrap(failingServer(&reached))
	for i := range 1000 {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}).String() + ":1"
		h.ServeHTTP(httptest.NewRecorder(), r)
	}
	if n := len(f.clients); n > 100 {
		t.Errorf("%d clients tracked, want at most 100", n)
	}
}
