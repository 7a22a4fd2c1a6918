package activator

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/lifecycle"
)

// zone is the test fleet's DNS zone.
const zone = "t.genesis.test"

// dropletPort is the droplets' HTTPS port in tests (a high port; the
// world's Dial maps each fake droplet address to its local server).
const dropletPort = 18443

// ca is a test certificate authority that issues the droplets' certificates.
type ca struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newCA(t testing.TB) *ca {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "activator test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &ca{cert: cert, key: key, pool: pool}
}

// issue returns a server certificate for names.
func (c *ca) issue(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// world is the fleet around a Handler under test: tenants with a stable
// name and one tracking domain each, their observed status, and their
// droplets, each a TLS server on 127.0.0.1 started by the tenant's wake.
type world struct {
	t  testing.TB
	ca *ca

	mu        sync.Mutex
	tenants   map[string]Tenant // by host
	status    map[string]Status
	wakes     map[string]int
	droplets  map[string]*httptest.Server // by fake droplet IP
	received  map[string][]*http.Request  // by workspace, in arrival order
	bodies    map[string][]string
	wakeDelay time.Duration
	// gate, when set for a tenant, holds its wake until closed.
	gate map[string]chan struct{}
	// refuse makes Wake return ErrWakeRefused for these tenants.
	refuse map[string]bool
	// never keeps these tenants WAKING forever.
	never map[string]bool
	// late: these tenants report ACTIVE_HEALTHY this long before their
	// droplet's listener accepts connections (refused meanwhile).
	late map[string]time.Duration
	// certLate: these tenants' droplets fail TLS handshakes this long
	// after they report ACTIVE_HEALTHY (the certificate still being
	// obtained).
	certLate map[string]time.Duration
}

func newWorld(t testing.TB) *world {
	return &world{t: t, ca: newCA(t), tenants: map[string]Tenant{}, status: map[string]Status{}, wakes: map[string]int{},
		droplets: map[string]*httptest.Server{}, received: map[string][]*http.Request{}, bodies: map[string][]string{},
		wakeDelay: 100 * time.Millisecond, gate: map[string]chan struct{}{}, refuse: map[string]bool{}, never: map[string]bool{},
		late: map[string]time.Duration{}, certLate: map[string]time.Duration{}}
}

func stable(ws string) string { return ws + "." + zone }
func domain(ws string) string { return "track." + ws + ".example" }

// add declares a tenant in state st (wakeAllowed: git declares running).
func (w *world) add(ws string, st lifecycle.State, wakeAllowed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	tn := Tenant{Workspace: ws, WakeAllowed: wakeAllowed}
	w.tenants[stable(ws)] = tn
	w.tenants[domain(ws)] = tn
	w.status[ws] = Status{Lifecycle: st}
	if st == lifecycle.ActiveHealthy {
		w.status[ws] = Status{Lifecycle: st, IP: w.startDropletLocked(ws)}
	}
}

func (w *world) lookup(host string) (Tenant, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	tn, ok := w.tenants[host]
	return tn, ok
}

func (w *world) statusOf(_ context.Context, ws string) (Status, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	st, ok := w.status[ws]
	if !ok {
		return Status{}, fmt.Errorf("no tenant %s", ws)
	}
	return st, nil
}

func (w *world) statuses(context.Context) (map[string]Status, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]Status, len(w.status))
	for k, v := range w.status {
		out[k] = v
	}
	return out, nil
}

// wake is the tenant's wake: after wakeDelay (or its gate), its droplet
// starts and its status turns ACTIVE_HEALTHY with the droplet's address.
func (w *world) wake(_ context.Context, ws string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.wakes[ws]++
	if w.refuse[ws] {
		return fmt.Errorf("%w: git declares %s hibernated", ErrWakeRefused, ws)
	}
	if w.status[ws].Lifecycle != lifecycle.Hibernated {
		return nil // already waking or running
	}
	w.status[ws] = Status{Lifecycle: lifecycle.Waking}
	if w.never[ws] {
		return nil
	}
	gate, delay := w.gate[ws], w.wakeDelay
	go func() {
		if gate != nil {
			<-gate
		}
		time.Sleep(delay)
		w.mu.Lock()
		defer w.mu.Unlock()
		w.status[ws] = Status{Lifecycle: lifecycle.Booting}
		ip := w.startDropletLocked(ws)
		w.status[ws] = Status{Lifecycle: lifecycle.ActiveHealthy, IP: ip}
		if d := w.late[ws]; d > 0 {
			srv := w.droplets[ip]
			delete(w.droplets, ip)
			time.AfterFunc(d, func() {
				w.mu.Lock()
				w.droplets[ip] = srv
				w.mu.Unlock()
			})
		}
	}()
	return nil
}

// startDropletLocked starts ws's droplet: a TLS server on 127.0.0.1 with a
// certificate for the tenant's names, answering "<ws> <method> <path>
// <body>"; it returns the droplet's fake public address.
func (w *world) startDropletLocked(ws string) string {
	ip := fmt.Sprintf("198.51.100.%d", len(w.droplets)+1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		host, _ := ParseHost(r.Host)
		if r.TLS == nil || r.TLS.ServerName != host {
			http.Error(rw, "SNI does not match Host", http.StatusMisdirectedRequest)
			return
		}
		w.mu.Lock()
		w.received[ws] = append(w.received[ws], r)
		w.bodies[ws] = append(w.bodies[ws], string(b))
		w.mu.Unlock()
		fmt.Fprintf(rw, "%s %s %s %s", ws, r.Method, r.URL.Path, b)
	}))
	cert := w.ca.issue(w.t, stable(ws), domain(ws))
	from := time.Now().Add(w.certLate[ws])
	srv.TLS = &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if time.Now().Before(from) {
			return nil, errors.New("no certificate yet")
		}
		return &cert, nil
	}}
	srv.StartTLS()
	w.t.Cleanup(srv.Close)
	w.droplets[ip] = srv
	return ip
}

// dial maps a droplet's fake address to its local server; the port must
// be the configured droplet port.
func (w *world) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if port != fmt.Sprint(dropletPort) {
		return nil, fmt.Errorf("dial %s: not the droplet port", addr)
	}
	w.mu.Lock()
	srv := w.droplets[host]
	w.mu.Unlock()
	if srv == nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	var d net.Dialer
	return d.DialContext(ctx, network, srv.Listener.Addr().String())
}

func (w *world) wakeCount(ws string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wakes[ws]
}

// config is a Handler config on w with test-sized timings.
func (w *world) config(reg prometheus.Registerer) Config {
	return Config{
		Lookup: w.lookup, Status: w.statusOf, Statuses: w.statuses, Wake: w.wake,
		Dial: w.dial, DropletPort: dropletPort, RootCAs: w.ca.pool,
		PollInterval: 10 * time.Millisecond, AskRefresh: 20 * time.Millisecond,
		Hold: 10 * time.Second, Registerer: reg,
	}
}

// serve starts h on 127.0.0.1 with its Run loop; everything stops when
// the test ends (the handler first, so held requests are answered).
func serve(t testing.TB, h *Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; h.Close() })
	return srv
}

// client is an HTTP client for many concurrent requests to one server.
func client() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2000, Proxy: nil}, Timeout: 60 * time.Second}
}

// get sends method to srv with Host host.
func do(t testing.TB, c *http.Client, srv *httptest.Server, method, host, path, body string) (*http.Response, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// serveAsk serves h.Ask on /ask on 127.0.0.1 until the test ends.
func serveAsk(t testing.TB, h *Handler) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("/ask", h.Ask())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}
