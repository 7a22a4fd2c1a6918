package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/auth"
)

// slowConn is one misbehaving client connection and how it ended.
type slowConn struct {
	kind   string
	conn   net.Conn
	closed time.Duration // when the server closed it (0: still open)
}

// openSlowClients opens n connections of each kind against addr: silent
// (connects, sends nothing), idle (one keep-alive request, then nothing) and
// dripping (a POST whose body comes a byte every 200 ms).
func openSlowClients(t *testing.T, addr string, n int) []*slowConn {
	t.Helper()
	var out []*slowConn
	for i := range 3 * n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		sc := &slowConn{conn: c}
		switch i % 3 {
		case 0:
			sc.kind = "silent"
		case 1:
			sc.kind = "idle"
			fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("idle client's request: %v", err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		case 2:
			sc.kind = "dripping"
			fmt.Fprintf(c, "POST /v1/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
			go func() {
				for range 100 { // 20 s at most
					time.Sleep(200 * time.Millisecond)
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}()
		}
		out = append(out, sc)
	}
	return out
}

// watchClosed records, for each connection, when the server closed it,
// waiting at most limit.
func watchClosed(conns []*slowConn, limit time.Duration) {
	start := time.Now()
	var wg sync.WaitGroup
	for _, sc := range conns {
		wg.Go(func() {
			sc.conn.SetReadDeadline(start.Add(limit))
			_, err := io.Copy(io.Discard, sc.conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return // still open at the limit
			}
			sc.closed = time.Since(start)
		})
	}
	wg.Wait()
}

// TestSlowClientsAreCut: silent, idle keep-alive and dripping clients are
// disconnected by the server's timeouts while /healthz keeps answering, and
// a connection limit (40) below their number queues the rest instead of running
// the process out of files. Bounded: 60 connections, at most 12 s.
func TestSlowClientsAreCut(t *testing.T) {
	w := newWorld(t, 1, 0)
	p := w.start("--http-read-header-timeout", "1s", "--http-read-timeout", "3s", "--http-idle-timeout", "1s", "--max-connections", "40")
	p.waitReady(t)
	http.DefaultClient.CloseIdleConnections()
	addr := strings.TrimPrefix(p.url, "http://")
	conns := openSlowClients(t, addr, 20)
	// While they are held, a new client is served.
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(p.url + "/healthz")
	if err != nil {
		t.Fatalf("/healthz while 60 slow clients are connected: %v", err)
	}
	resp.Body.Close()
	watchClosed(conns, 12*time.Second)
	held := map[string]int{}
	latest := map[string]time.Duration{}
	for _, sc := range conns {
		if sc.closed == 0 {
			held[sc.kind]++
		}
		latest[sc.kind] = max(latest[sc.kind], sc.closed)
	}
	t.Logf("closed by the server after at most: silent %s, idle %s, dripping %s; held after 12 s: %v",
		latest["silent"].Round(100*time.Millisecond), latest["idle"].Round(100*time.Millisecond), latest["dripping"].Round(100*time.Millisecond), held)
	if len(held) != 0 {
		t.Errorf("connections still open after 12 s: %v (want none)", held)
	}
	if !strings.Contains(p.logs.String(), "max_connections=40") {
		t.Error("the start log line does not give the connection limit")
	}
}

// TestUnauthenticatedFlood: a client sending bogus tokens and credentials
// gets --unauth-burst 401s, then 429 with Retry-After before any handler
// runs; /healthz still answers it, and a token holder at another address is
// unaffected (here: behind a trusted proxy that names another client).
func TestUnauthenticatedFlood(t *testing.T) {
	w := newWorld(t, 1, 0)
	toks := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(toks, []byte(`{"name":"dash","sha256":"`+auth.Hash("tok-dash")+`","scopes":["dashboard"]}`+"\n"), 0o600)
	p := w.start("--tokens", toks, "--unauth-burst", "10", "--trusted-proxies", "127.0.0.2")
	get := func(path, token, from string) *http.Response {
		t.Helper()
		dialer := &net.Dialer{}
		if from != "" {
			dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
		}
		c := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}, Timeout: 5 * time.Second}
		req, _ := http.NewRequest("GET", p.url+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if from == "127.0.0.2" {
			req.Header.Set("X-Forwarded-For", "198.51.100.9")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	testkit.WaitFor(t, "readiness", func() bool { return get("/readyz", "", "").StatusCode == 200 })
	codes := map[int]int{}
	for i := range 40 {
		path := "/v1/fleet"
		if i%2 == 1 {
			path = "/v1/manifest" // a bogus agent credential
		}
		resp := get(path, fmt.Sprintf("bogus-%d", i), "")
		codes[resp.StatusCode]++
		if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
			t.Error("429 without Retry-After")
		}
	}
	if codes[401] != 10 || codes[429] != 30 {
		t.Errorf("answers to 40 bogus requests: %v, want 10 × 401 then 30 × 429", codes)
	}
	if got := get("/healthz", "", "").StatusCode; got != 200 {
		t.Errorf("/healthz of the throttled client: %d", got)
	}
	if got := get("/v1/fleet", "tok-dash", "127.0.0.2").StatusCode; got != 200 {
		t.Errorf("a dashboard behind a trusted proxy: %d, want 200", got)
	}
	body := scrape(t, p.url+"/metrics", "127.0.0.3")
	for _, want := range []string{`genesis_http_unauthenticated_total{kind="api"} 5`, `genesis_http_unauthenticated_total{kind="agent"} 5`,
		"genesis_http_throttled_total 30", "genesis_insecure_no_auth 0"} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// scrape reads url from the local address from.
func scrape(t *testing.T, url, from string) string {
	t.Helper()
	dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c := &http.Client{Transport: &http.Transport{DialContext: dialer.DialContext}, Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
