// Package acmetest runs Pebble, Let's Encrypt's test ACME CA, for tests:
// a thin wrapper over internal/pebble (whose doc explains the pieces: the
// API certificate clients trust through ServerCAFile, the issuing root and
// intermediate served by the management interface, validation through
// Options.DNSServer at HTTPPort and TLSPort) that takes a testing.TB, runs
// Pebble in t.TempDir() until the test ends and prints its log when the
// test failed.
//
// It also runs the DNS server Pebble validates names with: StartDNS runs
// pebble-challtestsrv (built with Pebble) as that server. It answers UDP
// and TCP on one loopback port, and its A records are set over its
// management API (/add-a). Names without a record get no address (its
// default answers are switched off). Several ACME clients on distinct
// loopback addresses (Linux routes all of 127.0.0.0/8 to lo) can so be
// validated on the same ports, each on its own address: the DNS decides
// which one answers for a name.
//
// Binary builds the pinned Pebble the first time the way
// scripts/build-pebble does (`make pebble`); a failed build fails the test.
package acmetest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/internal/pebble"
	"genesis.dev/fleet/internal/procgroup"
	"genesis.dev/fleet/internal/testkit"
)

// Version is the Pebble release the tests run against.
const Version = pebble.Version

// Binary returns the pinned pebble binary, building it (and
// pebble-challtestsrv, next to it) into the cache directory the first time
// as scripts/build-pebble does: $GENESIS_CACHE/pebble/<version>/, or
// <repo>/.cache/pebble/<version>/. A failed build fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	cache := os.Getenv("GENESIS_CACHE")
	if cache == "" {
		cache = filepath.Join(testkit.ModuleRoot(t), ".cache")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	bin, err := pebble.Build(ctx, cache)
	if err != nil {
		t.Fatalf("acmetest: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("built pebble %s into %s in %s", Version, filepath.Dir(bin), d.Round(time.Second))
	}
	return bin
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Options configure a Pebble.
type Options struct {
	// DNSServer is the host:port of the DNS server Pebble resolves the
	// names to validate with (Pebble's -dnsserver; it queries over TCP).
	// Required: the system resolver knows nothing of test names.
	DNSServer string
	// HTTPPort and TLSPort are the ports Pebble connects to, on the
	// address a name resolves to, for HTTP-01 and TLS-ALPN-01
	// validation. Required.
	HTTPPort, TLSPort int
}

// Pebble is a running Pebble.
type Pebble struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:<port>/dir.
	DirectoryURL string
	// ServerCAFile is a PEM file of the CA that signed the certificate of
	// Pebble's ACME API and management interface: what an ACME client
	// must trust to talk to Pebble (not what issued certificates chain to).
	ServerCAFile string
	// ManagementURL is the base URL of Pebble's management interface.
	ManagementURL string

	dir string
	srv *pebble.Server
}

// Start runs Pebble on free ports of 127.0.0.1 until the test ends, and
// returns once its ACME directory answers. Pebble's log goes to a file in
// a temporary directory and is printed if the test failed.
func Start(t testing.TB, opt Options) *Pebble {
	t.Helper()
	if _, _, err := net.SplitHostPort(opt.DNSServer); err != nil {
		t.Fatalf("acmetest: Options.DNSServer %q: want host:port", opt.DNSServer)
	}
	for _, p := range []int{opt.HTTPPort, opt.TLSPort} {
		if p < 1 || p > 65535 {
			t.Fatalf("acmetest: Options.HTTPPort and TLSPort must be ports, got %d and %d", opt.HTTPPort, opt.TLSPort)
		}
	}
	bin := Binary(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "pebble.log") // where pebble.Start logs when Options.Log is nil
	var srv *pebble.Server
	t.Cleanup(func() {
		if srv != nil {
			if err := srv.Stop(); err != nil {
				t.Errorf("acmetest: %v", err)
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("pebble log (%s):\n%s", logPath, tail(b, 8000))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := pebble.Start(ctx, pebble.Options{
		Bin: bin, Dir: dir, DNSServer: opt.DNSServer, HTTPPort: opt.HTTPPort, TLSPort: opt.TLSPort,
	})
	if err != nil {
		t.Fatalf("acmetest: %v", err)
	}
	return &Pebble{
		DirectoryURL:  srv.DirectoryURL,
		ServerCAFile:  srv.ServerCAFile,
		ManagementURL: srv.ManagementURL,
		dir:           dir,
		srv:           srv,
	}
}

// Root is the root certificate Pebble issues under (/roots/0).
func (p *Pebble) Root(t testing.TB) *x509.Certificate {
	t.Helper()
	c, err := p.srv.Root(context.Background())
	if err != nil {
		t.Fatalf("acmetest: %v", err)
	}
	return c
}

// Intermediate is the certificate that signs the certificates Pebble
// issues (/intermediates/0); it chains to Root.
func (p *Pebble) Intermediate(t testing.TB) *x509.Certificate {
	t.Helper()
	c, err := p.srv.Intermediate(context.Background())
	if err != nil {
		t.Fatalf("acmetest: %v", err)
	}
	return c
}

// IssuerRoots is a pool of the root certificates Pebble issues under: what
// a TLS client of a Pebble-issued certificate trusts.
func (p *Pebble) IssuerRoots(t testing.TB) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(p.Root(t))
	return pool
}

// IssuerRootsFile writes the root certificates Pebble issues under to a
// PEM file (for SSL_CERT_FILE or a non-Go client) and returns its path.
func (p *Pebble) IssuerRootsFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(p.dir, "issuer-roots.pem")
	if err := p.srv.WriteIssuerRoots(context.Background(), path); err != nil {
		t.Fatalf("acmetest: %v", err)
	}
	return path
}

// DNS is a running pebble-challtestsrv serving DNS only.
type DNS struct {
	// Addr is the DNS server's host:port (UDP and TCP): Options.DNSServer.
	Addr string
	// ManagementURL is the base URL of its HTTP management API.
	ManagementURL string
}

// StartDNS runs pebble-challtestsrv as a DNS server on a free port of
// 127.0.0.1 until the test ends. It knows no names until AddA.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	bin := filepath.Join(filepath.Dir(Binary(t)), "pebble-challtestsrv")
	d := &DNS{Addr: testkit.FreeAddr(t), ManagementURL: "http://" + testkit.FreeAddr(t)}
	// Only the DNS server and the management API: the challenge servers
	// are the ACME client's business, and no default A/AAAA answers, so an
	// unknown name resolves to nothing.
	cmd := exec.Command(bin, "-dnsserver", d.Addr, "-management", strings.TrimPrefix(d.ManagementURL, "http://"),
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-defaultIPv4", "", "-defaultIPv6", "")
	cmd.Env = []string{}
	runLogged(t, "pebble-challtestsrv", cmd, filepath.Join(t.TempDir(), "challtestsrv.log"), func() error {
		if err := d.post("/clear-a", map[string]any{"host": "probe.invalid"}); err != nil {
			return err
		}
		c, err := net.DialTimeout("tcp", d.Addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return d
}

func (d *DNS) post(path string, body any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.ManagementURL+path, bytes.NewReader(raw))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s %s", path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// AddA makes host resolve to the IPv4 addresses ips (replacing earlier ones).
func (d *DNS) AddA(t testing.TB, host string, ips ...string) {
	t.Helper()
	if err := d.post("/add-a", map[string]any{"host": host, "addresses": ips}); err != nil {
		t.Fatalf("acmetest: set A %s → %v: %v", host, ips, err)
	}
}

// ClearA removes host's A records.
func (d *DNS) ClearA(t testing.TB, host string) {
	t.Helper()
	if err := d.post("/clear-a", map[string]any{"host": host}); err != nil {
		t.Fatalf("acmetest: clear A %s: %v", host, err)
	}
}

// Resolver resolves through the DNS server only (Go's resolver, so
// /etc/hosts and the system's servers play no part).
func (d *DNS) Resolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var dialer net.Dialer
		return dialer.DialContext(ctx, network, d.Addr)
	}}
}

// runLogged starts cmd with its output in logPath, polls ready until it
// succeeds (failing the test if the process exits or 60 s pass), and stops
// the process when the test ends, printing the log if the test failed.
func runLogged(t testing.TB, name string, cmd *exec.Cmd, logPath string, ready func() error) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := procgroup.Start(cmd); err != nil {
		logf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	showLog := func() string {
		b, _ := os.ReadFile(logPath)
		return string(tail(b, 8000))
	}
	t.Cleanup(func() {
		procgroup.Stop(cmd, done, 5*time.Second)
		logf.Close()
		if t.Failed() {
			t.Logf("%s log (%s):\n%s", name, logPath, showLog())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := ready()
		if err == nil {
			return
		}
		select {
		case <-done:
			t.Fatalf("%s exited at start: %v\n%s", name, waitErr, showLog())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after 60s (last: %v)", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
