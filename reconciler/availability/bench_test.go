package availability

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// benchServerEnv makes the test binary a server of simulated tenants
// (benchServe) instead of running tests: the benchmark's CPU figures then
// count the prober alone, not the TLS servers answering it.
const benchServerEnv = "GENESIS_PROBE_BENCH_SERVER"

// benchServers is what the server process prints: its CA and addresses.
type benchServers struct {
	CA    string   `json:"ca"`
	Addrs []string `json:"addrs"`
}

// benchServe starts 4 TLS servers on 127.0.0.1 answering every name of
// zone (certificate by SNI), prints benchServers and serves until stdin
// closes.
func benchServe() {
	t := &testing.T{}
	w := newWorldNoCleanup(t, zone, 4)
	ca := base64.StdEncoding.EncodeToString(w.caDER)
	json.NewEncoder(os.Stdout).Encode(benchServers{CA: ca, Addrs: w.addrs})
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// BenchmarkProber15000 measures one round over 15,000 simulated tenants
// (4 TLS servers on loopback in another process, every name mapped to
// them; real Postgres; the default concurrency, 64): requests a second
// achieved, CPU seconds of the prober's process per round, and the ratio
// to what a 60 s interval needs (15,000 / 60 = 250 requests a second).
func BenchmarkProber15000(b *testing.B) {
	const tenants = 15000
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), benchServerEnv+"=1")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	var srv benchServers
	if err := json.NewDecoder(stdout).Decode(&srv); err != nil {
		b.Fatal(err)
	}
	der, _ := base64.StdEncoding.DecodeString(srv.CA)
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, _ := net.SplitHostPort(addr)
		var d net.Dialer
		return d.DialContext(ctx, network, srv.Addrs[ShardOf(host)%len(srv.Addrs)])
	}
	st := openStore(b)
	c := &clock{now: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)}
	p := New(Config{Store: st, Replica: "bench", Targets: fixed(tenants), Interval: time.Minute, Timeout: 10 * time.Second,
		RootCAs: roots, DialContext: dial, Now: c.Now, Registerer: prometheus.NewRegistry()})
	ctx := context.Background()
	if res, err := p.Round(ctx); err != nil || res.Up != tenants { // warm: the day's rows exist
		b.Fatalf("warm-up round: %+v, %v", res, err)
	}
	c.Advance(time.Minute)
	b.ResetTimer()
	var wall, cpu time.Duration
	for range b.N {
		before := rusage()
		start := time.Now()
		res, err := p.Round(ctx)
		wall += time.Since(start)
		cpu += rusage() - before
		if err != nil || res.Up != tenants || res.Stored != tenants {
			b.Fatalf("round: %+v, %v", res, err)
		}
		c.Advance(time.Minute)
	}
	b.StopTimer()
	rounds := float64(b.N)
	reqs := tenants * rounds / wall.Seconds()
	b.ReportMetric(reqs, "req/s")
	b.ReportMetric(reqs/(tenants/60.0), "x-needed")
	b.ReportMetric(cpu.Seconds()/rounds, "cpu-s/round")
	b.ReportMetric(100*cpu.Seconds()/rounds/60, "%core@60s")
}

// rusage is this process's user+system CPU time so far.
func rusage() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
