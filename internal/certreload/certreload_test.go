package certreload

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/internal/certreload/certtest"
	"genesis.dev/fleet/internal/syncio"
)

// server is an HTTPS server on 127.0.0.1 that serves r's certificate, and
// a client that trusts every certificate in roots and opens a new
// connection (a new handshake) per request.
type server struct {
	url    string
	client *http.Client
}

func startServer(t *testing.T, r *Reloader, roots ...certtest.Pair) server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, _ *http.Request) { io.WriteString(rw, "ok") }),
		ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(tls.NewListener(ln, r.TLSConfig()))
	t.Cleanup(func() { srv.Close() })
	pool := x509.NewCertPool()
	for _, p := range roots {
		pool.AddCert(p.Cert)
	}
	return server{url: "https://" + ln.Addr().String() + "/", client: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true},
	}}
}

// served is the common name of the certificate a new connection gets.
func (s server) served(t *testing.T) string {
	t.Helper()
	resp, err := s.client.Get(s.url)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.TLS.PeerCertificates[0].Subject.CommonName
}

// install replaces a file the way a rotation does: a new file renamed over
// the old one.
func install(t *testing.T, path string, content []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestRotation rotates the files while a client connects repeatedly: every
// handshake succeeds, the new certificate is served once the files change,
// and the metrics count the reload.
func TestRotation(t *testing.T) {
	dir := t.TempDir()
	a, b := certtest.New(t, dir, "cert-a"), certtest.New(t, dir, "cert-b")
	live := filepath.Join(dir, "live")
	if err := os.Mkdir(live, 0o700); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(live, "tls.crt"), filepath.Join(live, "tls.key")
	install(t, certFile, a.CertPEM)
	install(t, keyFile, a.KeyPEM)
	reg := prometheus.NewRegistry()
	r, err := New(Config{CertFile: certFile, KeyFile: keyFile, CheckEvery: time.Nanosecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, r, a, b)
	if got := s.served(t); got != "cert-a" {
		t.Fatalf("served %s, want cert-a", got)
	}

	// A client connecting over and over while the pair is replaced:
	// bounded in count, never a failed handshake.
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 2000; i++ {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := s.client.Get(s.url)
			if err != nil {
				errs <- err
				return
			}
			resp.Body.Close()
		}
	}()
	// The key first, then the certificate: between the two renames the
	// pair does not match, and the old certificate keeps being served.
	install(t, keyFile, b.KeyPEM)
	install(t, certFile, b.CertPEM)
	got := s.served(t)
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("a handshake during the rotation failed: %v", err)
	default:
	}
	if got != "cert-b" {
		t.Errorf("after the rotation served %s, want cert-b", got)
	}
	if ok := testutil.ToFloat64(r.reloads.WithLabelValues("ok")); ok < 1 {
		t.Errorf("reloads ok = %v, want at least 1", ok)
	}
	if got, want := testutil.ToFloat64(r.notAfter), float64(b.Cert.NotAfter.Unix()); got != want {
		t.Errorf("not_after = %v, want %v", got, want)
	}
}

// TestBrokenPairKeepsServing replaces the pair with a broken one: the old
// certificate is still served, the failure is logged once and counted, and
// the next good pair is picked up.
func TestBrokenPairKeepsServing(t *testing.T) {
	tests := []struct {
		name      string
		breakIt   func(t *testing.T, certFile, keyFile string, other certtest.Pair)
		wantInLog string
	}{
		{"key does not match", func(t *testing.T, certFile, keyFile string, other certtest.Pair) {
			install(t, keyFile, other.KeyPEM)
		}, "private key does not match public key"},
		{"certificate half written", func(t *testing.T, certFile, keyFile string, other certtest.Pair) {
			install(t, certFile, other.CertPEM[:len(other.CertPEM)/2])
		}, "failed to find any PEM data in certificate input"},
		{"key file gone", func(t *testing.T, certFile, keyFile string, other certtest.Pair) {
			if err := os.Remove(keyFile); err != nil {
				t.Fatal(err)
			}
		}, "no such file or directory"},
		{"not pem at all", func(t *testing.T, certFile, keyFile string, other certtest.Pair) {
			install(t, certFile, []byte("hello\n"))
			install(t, keyFile, []byte("world\n"))
		}, "failed to find any PEM data"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			a, b, c := certtest.New(t, dir, "cert-a"), certtest.New(t, dir, "cert-b"), certtest.New(t, dir, "cert-c")
			var logs syncio.Buffer
			var now atomic.Int64 // the handshakes read it in the server's goroutines
			now.Store(1_800_000_000)
			clock := func() time.Time { return time.Unix(now.Load(), 0) }
			r, err := New(Config{CertFile: a.CertFile, KeyFile: a.KeyFile, Now: clock,
				Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			s := startServer(t, r, a, b, c)
			tc.breakIt(t, a.CertFile, a.KeyFile, b)

			// Not checked again before CheckEvery has passed.
			if got := s.served(t); got != "cert-a" {
				t.Fatalf("served %s, want cert-a", got)
			}
			now.Add(int64(DefaultCheckEvery / time.Second))
			for i := 0; i < 3; i++ {
				if got := s.served(t); got != "cert-a" {
					t.Fatalf("after the broken rotation served %s, want the old cert-a", got)
				}
				now.Add(int64(DefaultCheckEvery / time.Second))
			}
			if got := testutil.ToFloat64(r.reloads.WithLabelValues("error")); got != 1 {
				t.Errorf("reload errors = %v, want 1 (once per change, not per handshake)", got)
			}
			if got := strings.Count(logs.String(), "tls certificate reload failed"); got != 1 {
				t.Errorf("%d failure lines, want 1:\n%s", got, logs.String())
			}
			if !strings.Contains(logs.String(), tc.wantInLog) || !strings.Contains(logs.String(), `"component":"tls"`) {
				t.Errorf("log %s, want %q and the tls component", logs.String(), tc.wantInLog)
			}
			if bytes.Contains([]byte(logs.String()), []byte("PRIVATE KEY")) {
				t.Errorf("a key in the logs:\n%s", logs.String())
			}

			// The next good pair is served.
			install(t, a.CertFile, c.CertPEM)
			install(t, a.KeyFile, c.KeyPEM)
			if got := s.served(t); got != "cert-c" {
				t.Errorf("after the fix served %s, want cert-c", got)
			}
		})
	}
}

func TestNewRefuses(t *testing.T) {
	dir := t.TempDir()
	a, b := certtest.New(t, dir, "cert-a"), certtest.New(t, dir, "cert-b")
	tests := []struct {
		name       string
		cert, key  string
		wantSubstr string
	}{
		{"no key", a.CertFile, "", "a certificate file and a key file are both required"},
		{"missing file", filepath.Join(dir, "nope.crt"), a.KeyFile, "nope.crt"},
		{"mismatched pair", a.CertFile, b.KeyFile, "private key does not match public key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{CertFile: tc.cert, KeyFile: tc.key})
			if err == nil {
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tc.wantSubstr) {
				t.Errorf("error %q, want it to contain %q", err, tc.wantSubstr)
			}
			if errors.Unwrap(err) == nil && tc.name != "no key" {
				t.Errorf("error %q wraps nothing", err)
			}
		})
	}
}

// TestOldClientRefused: a client that offers only TLS 1.1 gets no
// handshake.
func TestOldClientRefused(t *testing.T) {
	dir := t.TempDir()
	a := certtest.New(t, dir, "cert-a")
	r, err := New(Config{CertFile: a.CertFile, KeyFile: a.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, r, a)
	pool := x509.NewCertPool()
	pool.AddCert(a.Cert)
	s.client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}}
	if _, err := s.client.Get(s.url); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("a TLS 1.1 client: err %v, want a protocol version alert", err)
	}
}
