// Package acmetest runs Pebble, Let's Encrypt's test ACME CA, as a real
// process for tests, so that certificates are obtained over the ACME
// protocol (RFC 8555) with real HTTP-01 and TLS-ALPN-01 validation instead
// of coming from Caddy's internal CA.
//
// The pieces and how they meet:
//
//   - Pebble serves its ACME API (DirectoryURL) over HTTPS with a
//     certificate this package makes for 127.0.0.1 and localhost, signed by
//     a throwaway CA written to ServerCAFile: an ACME client (Caddy's
//     trusted_roots_pem_files) trusts that file to talk to Pebble.
//   - Pebble signs the certificates it issues with a root and an
//     intermediate it generates at every start; its management interface
//     serves them (/roots/0, /intermediates/0). A TLS client of the issued
//     certificates trusts IssuerRoots, nothing else.
//   - To validate a name, Pebble's validation authority looks the name up
//     at the DNS server Options.DNSServer (A and AAAA queries over TCP) and
//     connects to the address found at Options.HTTPPort (HTTP-01) or
//     Options.TLSPort (TLS-ALPN-01). Several ACME clients on distinct
//     loopback addresses (Linux routes all of 127.0.0.0/8 to lo) can so be
//     validated on the same ports, each on its own address: the DNS decides
//     which one answers for a name.
//   - StartDNS runs pebble-challtestsrv (built with Pebble) as that DNS
//     server: it answers UDP and TCP on one loopback port, and its A
//     records are set over its management API (/add-a). Names without a
//     record get no address (its default answers are switched off).
//
// Pebble runs with PEBBLE_VA_NOSLEEP=1 (no random validation delay),
// PEBBLE_WFE_NONCEREJECT=0 (no deliberately rejected nonces) and
// PEBBLE_AUTHZREUSE=100 (valid authorizations are reused), so tests are
// fast and deterministic. Binary builds the pinned Pebble the first time
// the way scripts/build-pebble does (`make pebble`); a failed build fails
// the test.
package acmetest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/internal/procgroup"
	"genesis.dev/fleet/internal/testkit"
)

// Version is the Pebble release the tests run against.
const Version = "v2.10.3"

const module = "github.com/letsencrypt/pebble/v2"

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
	dir := filepath.Join(cache, "pebble", Version)
	bin := filepath.Join(dir, "pebble")
	if executable(bin) && executable(filepath.Join(dir, "pebble-challtestsrv")) {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("building pebble %s into %s", Version, dir)
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install",
		module+"/cmd/pebble@"+Version, module+"/cmd/pebble-challtestsrv@"+Version)
	cmd.Dir = dir // outside our module: go.mod and go.sum stay untouched
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		proxy, _ := exec.Command("go", "env", "GOPROXY").Output()
		t.Fatalf("building pebble %s failed (is the Go module proxy %s reachable? run scripts/build-pebble to pre-build): %v\n%s",
			Version, strings.TrimSpace(string(proxy)), err, tail(out, 4000))
	}
	t.Logf("built pebble in %s", time.Since(start).Round(time.Second))
	return bin
}

func executable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
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

	dir    string
	client *http.Client
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
	caFile, certFile, keyFile := serverCertificate(t, dir)
	listen, mgmt := testkit.FreeAddr(t), testkit.FreeAddr(t)
	var conf struct {
		Pebble map[string]any `json:"pebble"`
	}
	conf.Pebble = map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       opt.HTTPPort,
		"tlsPort":                        opt.TLSPort,
		"ocspResponderURL":               "",
		"keyAlgorithm":                   "ecdsa",
		"externalAccountBindingRequired": false,
	}
	raw, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	confFile := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(confFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	p := &Pebble{
		DirectoryURL:  "https://" + listen + "/dir",
		ServerCAFile:  caFile,
		ManagementURL: "https://" + mgmt,
		dir:           dir,
	}
	p.client = clientTrusting(t, caFile)
	cmd := exec.Command(bin, "-config", confFile, "-dnsserver", opt.DNSServer)
	cmd.Env = []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=100"}
	runLogged(t, "pebble", cmd, filepath.Join(dir, "pebble.log"), func() error {
		for _, u := range []string{p.DirectoryURL, p.ManagementURL + "/roots/0"} {
			if err := p.get(u, nil); err != nil {
				return err
			}
		}
		return nil
	})
	return p
}

// get fetches u from Pebble into out (when not nil), wanting a 200.
func (p *Pebble) get(u string, out *[]byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	if out != nil {
		*out = body
	}
	return nil
}

// certs fetches the PEM certificates at a management path.
func (p *Pebble) certs(t testing.TB, path string) []*x509.Certificate {
	t.Helper()
	var body []byte
	if err := p.get(p.ManagementURL+path, &body); err != nil {
		t.Fatalf("acmetest: %v", err)
	}
	var out []*x509.Certificate
	for rest := body; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatalf("acmetest: %s: %v", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		t.Fatalf("acmetest: %s: no certificate in %q", path, tail(body, 200))
	}
	return out
}

// Root is the root certificate Pebble issues under (/roots/0).
func (p *Pebble) Root(t testing.TB) *x509.Certificate {
	t.Helper()
	return p.certs(t, "/roots/0")[0]
}

// Intermediate is the certificate that signs the certificates Pebble
// issues (/intermediates/0); it chains to Root.
func (p *Pebble) Intermediate(t testing.TB) *x509.Certificate {
	t.Helper()
	return p.certs(t, "/intermediates/0")[0]
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
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Root(t).Raw})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
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

// clientTrusting is an HTTP client that trusts only the CA in caFile.
func clientTrusting(t testing.TB, caFile string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("acmetest: no certificate in %s", caFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// serverCertificate makes a throwaway CA and a certificate it signs for
// 127.0.0.1 and localhost (Pebble's ACME API and management interface),
// and writes the CA certificate, the leaf and its key as PEM files in dir.
func serverCertificate(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "acmetest Pebble API CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte, mode os.FileMode) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return write("api-ca.pem", "CERTIFICATE", caDER, 0o644),
		write("api-cert.pem", "CERTIFICATE", leafDER, 0o644),
		write("api-key.pem", "EC PRIVATE KEY", keyDER, 0o600)
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
