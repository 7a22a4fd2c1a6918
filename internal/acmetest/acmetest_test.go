package acmetest_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"os"
	"slices"
	"testing"

	"genesis.dev/fleet/internal/acmetest"
	"genesis.dev/fleet/internal/testkit"
)

func TestDNS(t *testing.T) {
	dns := acmetest.StartDNS(t)
	r := dns.Resolver()
	ctx := t.Context()
	dns.AddA(t, "ws-a.t.genesis.test", "127.1.0.5", "127.1.0.6")
	got, err := r.LookupHost(ctx, "ws-a.t.genesis.test")
	slices.Sort(got)
	if err != nil || !slices.Equal(got, []string{"127.1.0.5", "127.1.0.6"}) {
		t.Fatalf("LookupHost = %v, %v; want [127.1.0.5 127.1.0.6]", got, err)
	}
	if got, err := r.LookupHost(ctx, "unknown.t.genesis.test"); err == nil {
		t.Errorf("an unknown name resolved to %v", got)
	}
	dns.ClearA(t, "ws-a.t.genesis.test")
	if got, err := r.LookupHost(ctx, "ws-a.t.genesis.test"); err == nil {
		t.Errorf("a cleared name resolved to %v", got)
	}
}

func TestPebble(t *testing.T) {
	dns := acmetest.StartDNS(t)
	p := acmetest.Start(t, acmetest.Options{DNSServer: dns.Addr, HTTPPort: testkit.FreePort(t), TLSPort: testkit.FreePort(t)})

	t.Run("directory over https trusting ServerCAFile", func(t *testing.T) {
		caPEM, err := os.ReadFile(p.ServerCAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			t.Fatal("no certificate in ServerCAFile")
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr}
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, p.DirectoryURL, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var dir map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&dir); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"newNonce", "newAccount", "newOrder"} {
			if _, ok := dir[k].(string); !ok {
				t.Errorf("directory has no %s: %v", k, dir)
			}
		}
		// The system roots do not know Pebble's API certificate.
		if resp, err := http.Get(p.DirectoryURL); err == nil {
			resp.Body.Close()
			t.Error("the directory verified against the system roots")
		}
	})

	t.Run("issuer roots", func(t *testing.T) {
		root, inter := p.Root(t), p.Intermediate(t)
		if !root.IsCA || !inter.IsCA || root.Equal(inter) {
			t.Fatalf("root %q and intermediate %q", root.Subject, inter.Subject)
		}
		if _, err := inter.Verify(x509.VerifyOptions{Roots: p.IssuerRoots(t)}); err != nil {
			t.Errorf("intermediate does not chain to IssuerRoots: %v", err)
		}
		data, err := os.ReadFile(p.IssuerRootsFile(t))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(data)
		if b == nil {
			t.Fatal("IssuerRootsFile holds no PEM block")
		}
		if c, err := x509.ParseCertificate(b.Bytes); err != nil || !c.Equal(root) {
			t.Errorf("IssuerRootsFile holds %v (%v), want the root", c.Subject, err)
		}
	})
}
