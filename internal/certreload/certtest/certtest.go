// Package certtest makes self-signed TLS certificates for tests (package
// selfsigned makes them): each one is its own root, valid for 127.0.0.1,
// ::1 and localhost, so a test can trust exactly the certificates it made
// (a pool, or a PEM file for SSL_CERT_FILE) and nothing else.
package certtest

import (
	"testing"

	"genesis.dev/fleet/internal/certreload/selfsigned"
)

// Pair is one certificate and its key, as PEM bytes and as files.
type Pair = selfsigned.Pair

// New makes a self-signed certificate named cn and writes cn.crt and
// cn.key (0600) into dir, failing t on any error.
func New(t testing.TB, dir, cn string) Pair {
	t.Helper()
	p, err := selfsigned.Make(dir, cn, selfsigned.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
