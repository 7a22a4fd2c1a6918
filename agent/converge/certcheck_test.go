package converge

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"genesis.dev/fleet/internal/certreload/selfsigned"
)

// TestCheckCertificateReadsTheClockAfterTheHandshake: Caddy can get the
// stable name's certificate during the probe's own handshake, valid from
// that second on. The check reads its clock once the certificate has
// arrived (here: once the server chose it), so a certificate issued during
// the handshake is valid; one not yet valid at that time is still refused.
func TestCheckCertificateReadsTheClockAfterTheHandshake(t *testing.T) {
	const name = "ws-acme.t.genesis.test"
	issuedAt := time.Now().Truncate(time.Second).Add(time.Hour)
	pair, err := selfsigned.Make(t.TempDir(), name, selfsigned.Options{DNSNames: []string{name}, NotBefore: issuedAt, Validity: 12 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pair.TLS()
	if err != nil {
		t.Fatal(err)
	}
	var issued atomic.Bool // the server has chosen (in life: obtained) the certificate
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		issued.Store(true)
		return &cert, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	addr := ln.Addr().(*net.TCPAddr).String()

	// Before the handshake the clock is a second short of the certificate;
	// once it is chosen, a second past it.
	clock := func() time.Time {
		if issued.Load() {
			return issuedAt.Add(time.Second)
		}
		return issuedAt.Add(-time.Second)
	}
	if err := checkCertificate(context.Background(), addr, name, clock); err != nil {
		t.Errorf("a certificate issued during the handshake: %v", err)
	}
	early := func() time.Time { return issuedAt.Add(-time.Second) }
	if err := checkCertificate(context.Background(), addr, name, early); err == nil || !strings.Contains(err.Error(), "not now") {
		t.Errorf("a certificate not yet valid: err = %v, want one saying so", err)
	}
}
