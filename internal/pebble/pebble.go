// Package pebble runs Pebble, Let's Encrypt's test ACME CA, as a real
// process, so that certificates are obtained over the ACME protocol
// (RFC 8555) with real HTTP-01 and TLS-ALPN-01 validation instead of coming
// from Caddy's internal CA. The demo runs it; internal/acmetest wraps it
// for tests.
//
// The pieces and how they meet:
//
//   - Build compiles the pinned Pebble (Version) and its companion
//     pebble-challtestsrv into a cache directory the first time, the way
//     scripts/build-pebble does: `go install module@version` run outside
//     our module, so go.mod and go.sum stay untouched.
//   - Pebble serves its ACME API (Server.DirectoryURL) over HTTPS with a
//     certificate Start makes for 127.0.0.1 and localhost, signed by a
//     throwaway CA written to Server.ServerCAFile: an ACME client (Caddy's
//     trusted_roots_pem_files) trusts that file to talk to Pebble.
//   - Pebble signs the certificates it issues with a root and an
//     intermediate it generates at every start; its management interface
//     serves them (/roots/0, /intermediates/0). A TLS client of the issued
//     certificates trusts the root (WriteIssuerRoots), nothing else.
//   - To validate a name, Pebble's validation authority looks the name up
//     at the DNS server Options.DNSServer (A and AAAA queries over TCP) and
//     connects to the address found at Options.HTTPPort (HTTP-01) or
//     Options.TLSPort (TLS-ALPN-01). Several ACME clients on distinct
//     loopback addresses can so be validated on the same ports, each on its
//     own address: the DNS decides which one answers for a name.
//
// Pebble runs with PEBBLE_VA_NOSLEEP=1 (no random validation delay),
// PEBBLE_WFE_NONCEREJECT=0 (no deliberately rejected nonces) and
// PEBBLE_AUTHZREUSE=100 (valid authorizations are reused), so runs are fast
// and deterministic. It runs in a process group of its own
// (internal/procgroup) until Stop.
package pebble

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"genesis.dev/fleet/internal/procgroup"
)

// Version is the Pebble release Build builds.
const Version = "v2.10.3"

const module = "github.com/letsencrypt/pebble/v2"

// readyTimeout bounds how long Start waits for Pebble to answer.
const readyTimeout = 30 * time.Second

// logTailSize is how much of Pebble's output an error of Start carries.
const logTailSize = 8000

// Build returns the pebble binary under cacheDir/pebble/<Version>/,
// building pebble and pebble-challtestsrv there first when missing (go
// install outside our module, as scripts/build-pebble does; an error names
// the Go proxy).
func Build(ctx context.Context, cacheDir string) (string, error) {
	if cacheDir == "" {
		return "", errors.New("build pebble: no cache directory")
	}
	dir := filepath.Join(cacheDir, "pebble", Version)
	bin := filepath.Join(dir, "pebble")
	if executable(bin) && executable(filepath.Join(dir, "pebble-challtestsrv")) {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("build pebble %s: %w", Version, err)
	}
	cmd := exec.CommandContext(ctx, "go", "install",
		module+"/cmd/pebble@"+Version, module+"/cmd/pebble-challtestsrv@"+Version)
	cmd.Dir = dir // outside our module: go.mod and go.sum stay untouched
	// GOFLAGS from the caller (e.g. -mod=vendor) would not apply to a
	// module@version install.
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		proxy, _ := exec.CommandContext(ctx, "go", "env", "GOPROXY").Output()
		return "", fmt.Errorf("build pebble %s into %s (is the Go module proxy %s reachable? run scripts/build-pebble to pre-build): %w\n%s",
			Version, dir, strings.TrimSpace(string(proxy)), err, tail(out, 4000))
	}
	if !executable(bin) {
		return "", fmt.Errorf("build pebble %s: go install left no %s", Version, bin)
	}
	return bin, nil
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
	// Bin is the pebble binary (see Build). Required.
	Bin string
	// Dir is where Pebble's config, the certificate of its API (a fresh
	// throwaway CA and a leaf for 127.0.0.1 and localhost) and its log go.
	// Required; it must exist.
	Dir string
	// DNSServer is the host:port of the DNS server Pebble resolves the
	// names to validate with (Pebble's -dnsserver; it queries over TCP).
	// Required: the system resolver knows nothing of test names.
	DNSServer string
	// HTTPPort and TLSPort are the ports Pebble connects to, on the
	// address a name resolves to, for HTTP-01 and TLS-ALPN-01
	// validation. Required.
	HTTPPort, TLSPort int
	// Log receives Pebble's output; nil means Dir/pebble.log.
	Log io.Writer
}

func (o Options) validate() error {
	if o.Bin == "" {
		return errors.New("pebble: Options.Bin is required")
	}
	if o.Dir == "" {
		return errors.New("pebble: Options.Dir is required")
	}
	if fi, err := os.Stat(o.Dir); err != nil {
		return fmt.Errorf("pebble: Options.Dir: %w", err)
	} else if !fi.IsDir() {
		return fmt.Errorf("pebble: Options.Dir %s is not a directory", o.Dir)
	}
	if _, _, err := net.SplitHostPort(o.DNSServer); err != nil {
		return fmt.Errorf("pebble: Options.DNSServer %q: want host:port", o.DNSServer)
	}
	for _, p := range []int{o.HTTPPort, o.TLSPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("pebble: Options.HTTPPort and TLSPort must be ports, got %d and %d", o.HTTPPort, o.TLSPort)
		}
	}
	return nil
}

// Server is a running Pebble.
type Server struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:<port>/dir.
	DirectoryURL string
	// ServerCAFile is a PEM file of the CA that signed the certificate of
	// Pebble's ACME API and management interface: what an ACME client
	// must trust to talk to Pebble (not what issued certificates chain to).
	ServerCAFile string
	// ManagementURL is the base URL of Pebble's management interface.
	ManagementURL string

	cmd     *exec.Cmd
	done    chan struct{} // closed when cmd has exited; waitErr is then set
	waitErr error
	logFile *os.File // the log Start opened (Options.Log nil), closed by Stop
	tail    *tailBuffer
	tr      *http.Transport
	client  *http.Client // trusts ServerCAFile only

	stopOnce sync.Once
	stopErr  error
}

// Start runs Pebble on free ports of 127.0.0.1 (env PEBBLE_VA_NOSLEEP=1,
// PEBBLE_WFE_NONCEREJECT=0, PEBBLE_AUTHZREUSE=100) and returns once its
// directory and /roots/0 answer, within 30 s. ctx bounds that wait only:
// the process runs until Stop. On failure the process is stopped and the
// error carries the tail of Pebble's output.
func Start(ctx context.Context, o Options) (*Server, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	caFile, certFile, keyFile, err := serverCertificate(o.Dir)
	if err != nil {
		return nil, fmt.Errorf("pebble: api certificate: %w", err)
	}
	listen, err := freeAddr()
	if err != nil {
		return nil, err
	}
	mgmt, err := freeAddr()
	if err != nil {
		return nil, err
	}
	var conf struct {
		Pebble map[string]any `json:"pebble"`
	}
	conf.Pebble = map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       o.HTTPPort,
		"tlsPort":                        o.TLSPort,
		"ocspResponderURL":               "",
		"keyAlgorithm":                   "ecdsa",
		"externalAccountBindingRequired": false,
	}
	raw, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("pebble: config: %w", err)
	}
	confFile := filepath.Join(o.Dir, "pebble-config.json")
	if err := os.WriteFile(confFile, raw, 0o600); err != nil {
		return nil, fmt.Errorf("pebble: config: %w", err)
	}
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("pebble: no certificate in %s", caFile)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}

	s := &Server{
		DirectoryURL:  "https://" + listen + "/dir",
		ServerCAFile:  caFile,
		ManagementURL: "https://" + mgmt,
		done:          make(chan struct{}),
		tail:          &tailBuffer{max: logTailSize},
		tr:            tr,
		client:        &http.Client{Transport: tr, Timeout: 10 * time.Second},
	}
	logw := o.Log
	if logw == nil {
		f, err := os.Create(filepath.Join(o.Dir, "pebble.log"))
		if err != nil {
			return nil, fmt.Errorf("pebble: log: %w", err)
		}
		s.logFile, logw = f, f
	}
	out := io.MultiWriter(logw, s.tail)
	s.cmd = exec.Command(o.Bin, "-config", confFile, "-dnsserver", o.DNSServer)
	s.cmd.Env = []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=100"}
	s.cmd.Stdout, s.cmd.Stderr = out, out
	if err := procgroup.Start(s.cmd); err != nil {
		if s.logFile != nil {
			s.logFile.Close()
		}
		return nil, fmt.Errorf("pebble: start %s: %w", o.Bin, err)
	}
	go func() { s.waitErr = s.cmd.Wait(); close(s.done) }()

	if err := s.waitReady(ctx); err != nil {
		_ = s.Stop()
		return nil, fmt.Errorf("%w\npebble output (tail):\n%s", err, s.tail.String())
	}
	return s, nil
}

// waitReady polls the directory and /roots/0 until both answer, the
// process exits, ctx ends or readyTimeout passes.
func (s *Server) waitReady(ctx context.Context) error {
	wctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		err := s.ready(wctx)
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("pebble exited at start: %v", s.waitErr)
		case <-wctx.Done():
			if ctx.Err() != nil {
				return fmt.Errorf("wait for pebble: %w (last: %v)", ctx.Err(), err)
			}
			return fmt.Errorf("pebble not ready after %s (last: %v)", readyTimeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *Server) ready(ctx context.Context) error {
	for _, u := range []string{s.DirectoryURL, s.ManagementURL + "/roots/0"} {
		if _, err := s.get(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

// get fetches u from Pebble, wanting a 200.
func (s *Server) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return body, nil
}

// cert fetches the first PEM certificate at a management path.
func (s *Server) cert(ctx context.Context, path string) (*x509.Certificate, error) {
	body, err := s.get(ctx, s.ManagementURL+path)
	if err != nil {
		return nil, fmt.Errorf("pebble: %w", err)
	}
	b, _ := pem.Decode(body)
	if b == nil {
		return nil, fmt.Errorf("pebble: %s: no certificate in %q", path, tail(body, 200))
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pebble: %s: %w", path, err)
	}
	return c, nil
}

// Root is the root certificate Pebble issues under (management /roots/0).
func (s *Server) Root(ctx context.Context) (*x509.Certificate, error) {
	return s.cert(ctx, "/roots/0")
}

// Intermediate is the certificate that signs the certificates Pebble
// issues (/intermediates/0); it chains to Root.
func (s *Server) Intermediate(ctx context.Context) (*x509.Certificate, error) {
	return s.cert(ctx, "/intermediates/0")
}

// WriteIssuerRoots writes the root certificates Pebble issues under (what a
// TLS client of a Pebble-issued certificate trusts) to path as PEM, mode
// 0644 (for SSL_CERT_FILE or a non-Go client).
func (s *Server) WriteIssuerRoots(ctx context.Context, path string) error {
	root, err := s.Root(ctx)
	if err != nil {
		return err
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("pebble: issuer roots: %w", err)
	}
	if err := os.Chmod(path, 0o644); err != nil {
		return fmt.Errorf("pebble: issuer roots: %w", err)
	}
	return nil
}

// Stop ends Pebble and its process group (SIGTERM, SIGKILL after 5 s) and
// closes the log Start opened. It may be called more than once.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		procgroup.Stop(s.cmd, s.done, 5*time.Second)
		s.tr.CloseIdleConnections()
		if s.logFile != nil {
			if err := s.logFile.Close(); err != nil {
				s.stopErr = fmt.Errorf("pebble: close log: %w", err)
			}
		}
	})
	return s.stopErr
}

// freeAddr returns a loopback address ("127.0.0.1:port") that was free a
// moment ago, for Pebble to listen on.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pebble: free port: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		return "", fmt.Errorf("pebble: free port: %w", err)
	}
	return addr, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

// serverCertificate makes a throwaway CA and a certificate it signs for
// 127.0.0.1 and localhost (Pebble's ACME API and management interface),
// and writes the CA certificate, the leaf and its key as PEM files in dir.
func serverCertificate(dir string) (caFile, certFile, keyFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	now := time.Now()
	caSerial, err := serial()
	if err != nil {
		return "", "", "", err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: "genesis Pebble API CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return "", "", "", err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return "", "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", "", err
	}
	leafSerial, err := serial()
	if err != nil {
		return "", "", "", err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: leafSerial,
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
		return "", "", "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", "", err
	}
	files := []struct {
		name, typ string
		der       []byte
		mode      os.FileMode
	}{
		{"api-ca.pem", "CERTIFICATE", caDER, 0o644},
		{"api-cert.pem", "CERTIFICATE", leafDER, 0o644},
		{"api-key.pem", "EC PRIVATE KEY", keyDER, 0o600},
	}
	var paths [3]string
	for i, f := range files {
		paths[i] = filepath.Join(dir, f.name)
		if err := os.WriteFile(paths[i], pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			return "", "", "", err
		}
	}
	return paths[0], paths[1], paths[2], nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}
