package selfsigned

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestMake: by default a certificate for localhost and the loopback
// addresses, valid now, its key written 0600; the options replace the
// names and the validity; a folder it cannot write to is an error.
func TestMake(t *testing.T) {
	dir := t.TempDir()
	p, err := Make(dir, "replica", Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := p.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: p.Pool()}); err != nil {
			t.Errorf("verify for %s with its own pool: %v", host, err)
		}
	}
	if fi, err := os.Stat(p.KeyFile); err != nil || fi.Mode().Perm() != 0o600 || filepath.Dir(p.KeyFile) != dir {
		t.Errorf("key file %s: %v, mode %v; want 0600 in %s", p.KeyFile, err, fi, dir)
	}
	if _, err := p.TLS(); err != nil {
		t.Errorf("the pair as a tls.Certificate: %v", err)
	}

	from := time.Now().Add(time.Hour).Truncate(time.Second)
	q, err := Make(t.TempDir(), "ws-acme", Options{DNSNames: []string{"ws-acme.example.test"}, NotBefore: from, Validity: 12 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if !q.Cert.NotBefore.Equal(from) || !q.Cert.NotAfter.Equal(from.Add(12*time.Hour)) || len(q.Cert.IPAddresses) != 0 {
		t.Errorf("valid %s to %s for %v %v; want %s to +12h for the name alone", q.Cert.NotBefore, q.Cert.NotAfter, q.Cert.DNSNames, q.Cert.IPAddresses, from)
	}
	if _, err := q.Cert.Verify(x509.VerifyOptions{DNSName: "ws-acme.example.test", Roots: q.Pool(), CurrentTime: from.Add(time.Minute)}); err != nil {
		t.Errorf("verify for its name within its validity: %v", err)
	}
	if _, err := q.Cert.Verify(x509.VerifyOptions{DNSName: "ws-acme.example.test", Roots: q.Pool(), CurrentTime: from.Add(-time.Minute)}); err == nil {
		t.Error("verified before its NotBefore")
	}

	if _, err := Make(filepath.Join(dir, "missing", "folder"), "x", Options{}); err == nil {
		t.Error("Make into a missing folder: no error")
	}
}
