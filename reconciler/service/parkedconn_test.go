package service

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/internal/certreload"
	"genesis.dev/fleet/internal/certreload/certtest"
	"genesis.dev/fleet/internal/testkit"
)

// parkServerEnv names the transport a re-run of this test binary serves
// parked requests over: BenchmarkParkedConnMemory's server process (see
// TestMain), so that the clients' memory is not in the figure.
const parkServerEnv = "GENESIS_PARK_SERVER"

// parkCertEnv and parkKeyEnv name the park server's certificate and key
// files (certtest's, made by the benchmark).
const parkCertEnv, parkKeyEnv = "GENESIS_PARK_CERT", "GENESIS_PARK_KEY"

// parkedMem is what the park server reports at GET /mem, after two
// collections.
type parkedMem struct {
	HeapAlloc, StackInuse uint64
	Goroutines            int
	// Parked counts the requests held now, H2 those of them over HTTP/2.
	Parked, H2 int64
}

// parkServer serves, on a loopback port it prints, GET /park (held until
// the client goes, as a manifest long-poll is held) and GET /mem, through
// newServer with the replica's default timeouts, in plain HTTP/1.1
// ("http1"), or TLS offering HTTP/1.1 only ("tls-http1") or HTTP/2 first
// as a replica does ("tls-h2": internal/certreload's configuration, as
// --tls-cert gives it). It stops
// when its standard input closes (its parent is gone). It returns the
// process's exit code.
func parkServer(mode string) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if mode != "http1" {
		// The replica's own TLS set-up (--tls-cert, --tls-key): HTTP/2
		// offered first; tls-http1 offers HTTP/1.1 only.
		r, err := certreload.New(certreload.Config{CertFile: os.Getenv(parkCertEnv), KeyFile: os.Getenv(parkKeyEnv),
			Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		cfg := r.TLSConfig()
		if mode == "tls-http1" {
			cfg = cfg.Clone()
			cfg.NextProtos = []string{"http/1.1"}
		}
		ln = tls.NewListener(ln, cfg)
	}
	var parked, h2 atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /park", func(w http.ResponseWriter, r *http.Request) {
		parked.Add(1)
		if r.ProtoMajor == 2 {
			h2.Add(1)
		}
		<-r.Context().Done()
		parked.Add(-1)
		if r.ProtoMajor == 2 {
			h2.Add(-1)
		}
	})
	mux.HandleFunc("GET /mem", func(w http.ResponseWriter, r *http.Request) {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		json.NewEncoder(w).Encode(parkedMem{HeapAlloc: m.HeapAlloc, StackInuse: m.StackInuse, Goroutines: runtime.NumGoroutine(), Parked: parked.Load(), H2: h2.Load()})
	})
	srv := newServer(mux, Defaults().HTTP)
	go srv.Serve(ln)
	fmt.Println(ln.Addr().String())
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// BenchmarkParkedConnMemory is what one agent's connection with its
// manifest long-poll parked costs a replica's server, by transport: the
// server process's live heap (heap-B/conn) and goroutine stacks
// (stack-B/conn) with 2,000 such connections, less the same with none
// (the same-run baseline). genesis-load scale parks its agents over plain
// HTTP/1.1 (http1); agents on droplets reach a replica over TLS, and Go's
// client takes HTTP/2 when offered (tls-h2, what a replica offers).
func BenchmarkParkedConnMemory(b *testing.B) {
	const conns = 2000
	for _, mode := range []string{"http1", "tls-http1", "tls-h2"} {
		b.Run(mode, func(b *testing.B) {
			var heap, stack, goroutines float64
			for range b.N {
				h, s, g := parkedCost(b, mode, conns)
				heap, stack, goroutines = heap+h, stack+s, goroutines+g
			}
			n := float64(b.N * conns)
			b.ReportMetric(heap/n, "heap-B/conn")
			b.ReportMetric(stack/n, "stack-B/conn")
			b.ReportMetric(goroutines/n, "goroutines/conn")
		})
	}
}

// TestParkedConnMemory holds BenchmarkParkedConnMemory's measurement to
// what it says, with 20 connections: every request parks, over HTTP/2
// exactly when TLS offers it, and adds goroutines (2 a connection over
// HTTP/1.1, 3 over HTTP/2) and memory to the server process.
func TestParkedConnMemory(t *testing.T) {
	for mode, perConn := range map[string]float64{"http1": 2, "tls-http1": 2, "tls-h2": 3} {
		heap, stack, goroutines := parkedCost(t, mode, 20)
		if goroutines != 20*perConn || heap <= 0 || stack <= 0 {
			t.Errorf("%s: 20 parked connections added %.0f goroutines, %.0f B of heap, %.0f B of stacks; want %.0f goroutines and more of both", mode, goroutines, heap, stack, 20*perConn)
		}
	}
}

// parkedCost starts a park server in mode, parks n requests on it, each
// on a connection of its own, and returns what they added to its live
// heap, its stacks and its goroutine count.
func parkedCost(b testing.TB, mode string, n int) (heap, stack, goroutines float64) {
	b.Helper()
	ctx, cancel := context.WithCancel(b.Context())
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	pair := certtest.New(b, b.TempDir(), "park")
	cmd.Env = append(os.Environ(), parkServerEnv+"="+mode, parkCertEnv+"="+pair.CertFile, parkKeyEnv+"="+pair.KeyFile)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait()
	}()
	addr, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("park server: %v", err)
	}
	base := "http://" + strings.TrimSpace(addr)
	if mode != "http1" {
		base = "https://" + strings.TrimSpace(addr)
	}
	roots := pair.Pool()
	// A transport of its own for each connection, as each agent has.
	client := func() *http.Client {
		t := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: mode == "tls-h2", DisableCompression: true}
		if mode != "tls-h2" {
			t.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		return &http.Client{Transport: t}
	}
	mem := func() parkedMem {
		c := client()
		defer c.Transport.(*http.Transport).CloseIdleConnections()
		resp, err := c.Get(base + "/mem")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var m parkedMem
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			b.Fatal(err)
		}
		return m
	}
	before := mem()
	for range n {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/park", nil)
			if resp, err := client().Do(req); err == nil {
				resp.Body.Close()
			}
		}()
	}
	var after parkedMem
	testkit.Poll{Every: 100 * time.Millisecond, Within: 2 * time.Minute}.Until(b, fmt.Sprintf("%d requests parked over %s", n, mode), func() bool {
		after = mem()
		return after.Parked == int64(n)
	})
	if want := map[bool]int64{true: int64(n), false: 0}[mode == "tls-h2"]; after.H2 != want {
		b.Fatalf("%s: %d of %d parked requests over HTTP/2, want %d", mode, after.H2, n, want)
	}
	return float64(after.HeapAlloc) - float64(before.HeapAlloc), float64(after.StackInuse) - float64(before.StackInuse), float64(after.Goroutines - before.Goroutines)
}
