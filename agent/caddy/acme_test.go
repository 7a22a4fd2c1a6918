package caddy_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"genesis.dev/fleet/agent/caddy"
	"genesis.dev/fleet/agent/caddy/caddytest"
	"genesis.dev/fleet/internal/acmetest"
	"genesis.dev/fleet/internal/testkit"
)

// acmeDroplet is one real Caddy standing for a droplet on its own loopback
// address, with our rendered config (ACME issuer = Pebble), a backend for
// n8n and the agent's ask endpoint.
type acmeDroplet struct {
	ip      string
	ask     *caddy.Ask
	asked   sync.Map // every name Caddy asked about → true
	hits    atomic.Int64
	backend string
}

func startACMEDroplet(t *testing.T, ip string, pebble *acmetest.Pebble, httpPort, httpsPort int, onlyHTTP01 bool, hosts ...string) *acmeDroplet {
	t.Helper()
	d := &acmeDroplet{ip: ip, ask: caddy.NewAsk(nil, hosts...)}
	askSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.asked.Store(r.URL.Query().Get("domain"), true)
		d.ask.ServeHTTP(w, r)
	}))
	t.Cleanup(askSrv.Close)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.hits.Add(1)
		fmt.Fprintf(w, "n8n on %s says hello to %s", ip, r.Host)
	}))
	t.Cleanup(backend.Close)
	admin := testkit.FreeAddr(t)
	cfg, _, err := caddy.Render(caddy.Config{
		Hosts: hosts, Upstream: strings.TrimPrefix(backend.URL, "http://"), AskURL: askSrv.URL + "/ask",
		HTTPPort: httpPort, HTTPSPort: httpsPort, BindHost: ip,
		ACMECA: pebble.DirectoryURL, ACMECARoots: pebble.ServerCAFile,
		AdminListen: admin, GracePeriod: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if onlyHTTP01 {
		// Turn TLS-ALPN-01 off so the CA can only validate over HTTP-01 (a
		// test's edit of the rendered JSON; the agent never does this).
		var doc map[string]any
		if err := json.Unmarshal(cfg, &doc); err != nil {
			t.Fatal(err)
		}
		iss := doc["apps"].(map[string]any)["tls"].(map[string]any)["automation"].(map[string]any)["policies"].([]any)[0].(map[string]any)["issuers"].([]any)[0].(map[string]any)
		iss["challenges"].(map[string]any)["tls-alpn"].(map[string]any)["disabled"] = true
		if cfg, err = json.Marshal(doc); err != nil {
			t.Fatal(err)
		}
	}
	caddytest.Start(t, admin, cfg)
	return d
}

// httpsGet requests https://host:port/ resolving host through dns only and
// trusting only roots; it returns the body and the verified chain.
func httpsGet(ctx context.Context, dns *acmetest.DNS, roots *x509.CertPool, host string, port int) (string, []*x509.Certificate, error) {
	dialer := &net.Dialer{Resolver: dns.Resolver(), Timeout: 10 * time.Second}
	tr := &http.Transport{DialContext: dialer.DialContext, TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 90 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(host, strconv.Itoa(port))+"/", nil)
	if err != nil {
		return "", nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return "", nil, fmt.Errorf("GET https://%s: %s %q", host, resp.Status, body)
	}
	if len(resp.TLS.VerifiedChains) == 0 {
		return "", nil, errors.New("no verified chain")
	}
	return string(body), resp.TLS.VerifiedChains[0], nil
}

// TestACMEPebble gets real ACME certificates from Pebble into the real
// Caddy with the config Render makes: two droplets on two loopback
// addresses, validated on the same HTTP and HTTPS ports, each on its own
// address (the DNS says which), and only for names the ask endpoint allows.
func TestACMEPebble(t *testing.T) {
	ctx := t.Context()
	dns := acmetest.StartDNS(t)
	// The ports every droplet listens on and Pebble validates at.
	httpPort, httpsPort := testkit.FreePort(t), testkit.FreePort(t)
	pebble := acmetest.Start(t, acmetest.Options{DNSServer: dns.Addr, HTTPPort: httpPort, TLSPort: httpsPort})
	roots, intermediate := pebble.IssuerRoots(t), pebble.Intermediate(t)

	// Three droplets at once on the same ports; the third validates over
	// HTTP-01 only (on its HTTP listener), the others as Caddy chooses.
	droplets := []struct {
		name, ip   string
		onlyHTTP01 bool
		d          *acmeDroplet
	}{
		{name: "ws-a.t.genesis.test", ip: "127.1.0.77"},
		{name: "ws-b.t.genesis.test", ip: "127.1.0.78"},
		{name: "ws-c.t.genesis.test", ip: "127.1.0.79", onlyHTTP01: true},
	}
	const elsewhere = "ws-a2.t.genesis.test" // allowed on droplet a, resolves to b
	for i := range droplets {
		dr := &droplets[i]
		hosts := []string{dr.name}
		if i == 0 {
			hosts = append(hosts, elsewhere)
		}
		dr.d = startACMEDroplet(t, dr.ip, pebble, httpPort, httpsPort, dr.onlyHTTP01, hosts...)
		dns.AddA(t, dr.name, dr.ip)
	}

	t.Run("every droplet gets certificates at once", func(t *testing.T) {
		for _, dr := range droplets {
			t.Run(dr.name, func(t *testing.T) {
				t.Parallel()
				start := time.Now()
				body, chain, err := httpsGet(ctx, dns, roots, dr.name, httpsPort)
				if err != nil {
					t.Fatalf("GET https://%s:%d/: %v", dr.name, httpsPort, err)
				}
				t.Logf("first request with an ACME certificate from Pebble: %s", time.Since(start).Round(time.Millisecond))
				if want := fmt.Sprintf("n8n on %s says hello to %s:%d", dr.ip, dr.name, httpsPort); body != want {
					t.Errorf("body %q, want %q", body, want)
				}
				leaf := chain[0]
				if err := leaf.VerifyHostname(dr.name); err != nil {
					t.Error(err)
				}
				if leaf.Issuer.String() != intermediate.Subject.String() || leaf.CheckSignatureFrom(intermediate) != nil {
					t.Errorf("certificate issued by %q, want Pebble's intermediate %q", leaf.Issuer, intermediate.Subject)
				}
			})
		}
	})

	t.Run("a name the ask endpoint refuses gets no certificate", func(t *testing.T) {
		const refused = "ws-x.t.genesis.test"
		a := droplets[0]
		dns.AddA(t, refused, a.ip)
		hits := a.d.hits.Load()
		_, _, err := httpsGet(ctx, dns, roots, refused, httpsPort)
		if err == nil {
			t.Fatal("a name the ask endpoint refuses got an answer")
		}
		t.Logf("refused name: %v", err)
		if _, asked := a.d.asked.Load(refused); !asked {
			t.Errorf("caddy did not ask about %s (err %v)", refused, err)
		}
		if a.d.hits.Load() != hits {
			t.Error("the backend saw the request")
		}
		// And with no insecure skip either: nothing for the name was issued.
		conn, err := tls.Dial("tcp", net.JoinHostPort(a.ip, strconv.Itoa(httpsPort)),
			&tls.Config{ServerName: refused, InsecureSkipVerify: true})
		if err == nil {
			certs := conn.ConnectionState().PeerCertificates
			conn.Close()
			t.Fatalf("handshake for %s succeeded with a certificate for %v", refused, certs[0].DNSNames)
		}
	})

	t.Run("validation goes to the address the name resolves to", func(t *testing.T) {
		// Droplet a allows the name, but the DNS sends Pebble to droplet
		// b, which holds no challenge for it: no certificate, where the
		// names above got theirs in well under a second. (Caddy keeps
		// retrying in the background; 10 s is plenty to see it fail.)
		dns.AddA(t, elsewhere, droplets[1].ip)
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		d := tls.Dialer{Config: &tls.Config{ServerName: elsewhere, RootCAs: roots}}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(droplets[0].ip, strconv.Itoa(httpsPort)))
		if err == nil {
			conn.Close()
			t.Fatalf("droplet %s got a certificate for %s, which resolves to %s", droplets[0].ip, elsewhere, droplets[1].ip)
		}
		t.Logf("name resolving elsewhere: %v", err)
		if _, asked := droplets[0].d.asked.Load(elsewhere); !asked {
			t.Errorf("droplet a did not ask about %s: the handshake failed before issuance (%v)", elsewhere, err)
		}
	})
}
