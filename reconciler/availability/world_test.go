package availability

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"hash/fnv"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// world is simulated tenants: a test CA, a few TLS servers on 127.0.0.1
// that answer every name of zone (certificate chosen by SNI: the zone's
// wildcard, signed by the CA) with n8n's /healthz, and a dialer that maps
// every name to one of them — or, for a tenant made down, to a closed
// port (a real refused connection).
type world struct {
	zone  string
	roots *x509.CertPool
	caDER []byte
	addrs []string
	// closed is a port nothing listens on.
	closed string

	mu     sync.Mutex
	down   map[string]bool // refused
	status map[string]int  // non-200 answers
	hits   map[string]int  // requests per host

	servers []*http.Server
}

func (w *world) close() {
	for _, s := range w.servers {
		s.Close()
	}
}

// testCA makes a CA and a leaf for names, signed by it.
func testCA(t testing.TB, names ...string) (*x509.CertPool, tls.Certificate) {
	pool, cert, _ := testCADER(t, names...)
	return pool, cert
}

func testCADER(t testing.TB, names ...string) (*x509.CertPool, tls.Certificate, []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "genesis test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return pool, tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}, caDER
}

// newWorld starts servers TLS servers for zone's names, closed at cleanup.
func newWorld(t testing.TB, zone string, servers int) *world {
	t.Helper()
	w := newWorldNoCleanup(t, zone, servers)
	t.Cleanup(w.close)
	return w
}

// newWorldNoCleanup is newWorld whose servers stay until close.
func newWorldNoCleanup(t testing.TB, zone string, servers int) *world {
	roots, cert, caDER := testCADER(t, "*."+zone)
	w := &world{zone: zone, roots: roots, caDER: caDER, down: map[string]bool{}, status: map[string]int{}, hits: map[string]int{}}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if !strings.HasSuffix(hello.ServerName, "."+zone) {
			return nil, fmt.Errorf("no certificate for %q", hello.ServerName)
		}
		return &cert, nil
	}}
	h := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		host := r.Host
		w.mu.Lock()
		w.hits[host]++
		code := w.status[host]
		w.mu.Unlock()
		if r.URL.Path != "/healthz" {
			http.NotFound(rw, r)
			return
		}
		if code != 0 {
			http.Error(rw, "unavailable", code)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.Write([]byte(`{"status":"ok"}`))
	})
	for range servers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, TLSConfig: cfg.Clone(), ErrorLog: nil, ReadHeaderTimeout: 10 * time.Second}
		srv.SetKeepAlivesEnabled(false)
		go srv.ServeTLS(ln, "", "")
		w.servers = append(w.servers, srv)
		w.addrs = append(w.addrs, ln.Addr().String())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	w.closed = ln.Addr().String()
	ln.Close()
	return w
}

// dial maps a name of the zone to its server (a closed port while down).
func (w *world) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(host, "."+w.zone) {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	w.mu.Lock()
	down := w.down[host]
	w.mu.Unlock()
	target := w.closed
	if !down {
		h := fnv.New32a()
		h.Write([]byte(host))
		target = w.addrs[int(h.Sum32())%len(w.addrs)]
	}
	var d net.Dialer
	return d.DialContext(ctx, network, target)
}

func (w *world) setDown(host string, down bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.down[host] = down
}

func (w *world) setStatus(host string, code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status[host] = code
}

// takeHits returns the requests per host since the last call.
func (w *world) takeHits() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.hits
	w.hits = map[string]int{}
	return out
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
