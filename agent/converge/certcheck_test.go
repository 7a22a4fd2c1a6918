package converge

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestCheckCertificateReadsTheClockAfterTheHandshake: Caddy can get the
// stable name's certificate during the probe's own handshake, valid from
// that second on. The check reads its clock once the certificate has
// arrived (here: once the server chose it), so a certificate issued during
// the handshake is valid; one not yet valid at that time is still refused.
func TestCheckCertificateReadsTheClockAfterTheHandshake(t *testing.T) {
	const name = "ws-acme.t.genesis.test"
	issuedAt := time.Now().Truncate(time.Second).Add(time.Hour)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: issuedAt, NotAfter: issuedAt.Add(12 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	var issued atomic.Bool // the server has chosen (in life: obtained) the certificate
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		issued.Store(true)
		return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
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
