package activator

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// BenchmarkActivatorHold measures what the activator adds to a request
// once its tenant is up (the requests DNS caches still send it): each
// iteration sends one request straight to the droplet (the baseline) and
// one through the activator, and reports both and their ratio.
func BenchmarkActivatorHold(b *testing.B) {
	w := newWorld(b)
	w.add("ws-bench", lifecycle.ActiveHealthy, true)
	h, err := New(w.config(prometheus.NewRegistry()))
	if err != nil {
		b.Fatal(err)
	}
	srv := serve(b, h)
	w.mu.Lock()
	ip := w.status["ws-bench"].IP
	w.mu.Unlock()
	direct := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: w.ca.pool},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return w.dial(ctx, network, net.JoinHostPort(ip, "18443"))
		},
	}}
	through := client()
	send := func(c *http.Client, url string) {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Host = stable("ws-bench")
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("%s: %d", url, resp.StatusCode)
		}
	}
	directURL := "https://" + stable("ws-bench") + ":18443/webhook/lead/1"
	send(direct, directURL) // warm both connections up
	send(through, srv.URL+"/webhook/lead/1")
	var tDirect, tThrough time.Duration
	for b.Loop() {
		t0 := time.Now()
		send(direct, directURL)
		t1 := time.Now()
		send(through, srv.URL+"/webhook/lead/1")
		tThrough += time.Since(t1)
		tDirect += t1.Sub(t0)
	}
	n := float64(b.N)
	b.ReportMetric(float64(tDirect.Nanoseconds())/n, "direct-ns/req")
	b.ReportMetric(float64(tThrough.Nanoseconds())/n, "activator-ns/req")
	b.ReportMetric(float64(tThrough)/float64(tDirect), "activator/direct")
}
