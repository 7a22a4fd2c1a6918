package pebble_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"genesis.dev/fleet/internal/acmetest"
	"genesis.dev/fleet/internal/pebble"
	"genesis.dev/fleet/internal/testkit"
)

// TestPebble starts the real Pebble against pebble-challtestsrv's DNS and
// checks what the demo relies on: the directory over HTTPS trusting
// ServerCAFile, the issuing root, the issuer-roots file, and that Stop
// leaves no process behind.
func TestPebble(t *testing.T) {
	dns := acmetest.StartDNS(t)
	dir := t.TempDir()
	srv, err := pebble.Start(t.Context(), pebble.Options{
		Bin: acmetest.Binary(t), Dir: dir, DNSServer: dns.Addr,
		HTTPPort: testkit.FreePort(t), TLSPort: testkit.FreePort(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Stop()
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "pebble.log"))
			t.Logf("pebble.log:\n%s", b)
		}
	})

	t.Run("directory", func(t *testing.T) {
		caPEM, err := os.ReadFile(srv.ServerCAFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			t.Fatal("no certificate in ServerCAFile")
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.DirectoryURL, nil)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var d map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"newNonce", "newAccount", "newOrder"} {
			if _, ok := d[k].(string); !ok {
				t.Errorf("directory has no %s: %v", k, d)
			}
		}
	})

	t.Run("roots", func(t *testing.T) {
		root, err := srv.Root(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		inter, err := srv.Intermediate(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !root.IsCA || !inter.IsCA || root.Equal(inter) {
			t.Fatalf("root %q and intermediate %q", root.Subject, inter.Subject)
		}
		path := filepath.Join(t.TempDir(), "roots.pem")
		if err := srv.WriteIssuerRoots(t.Context(), path); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o644 {
			t.Errorf("issuer roots mode = %v, want 0644", got)
		}
		data, _ := os.ReadFile(path)
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			t.Fatalf("issuer roots file holds no certificate: %q", data)
		}
		b, _ := pem.Decode(data)
		if c, err := x509.ParseCertificate(b.Bytes); err != nil || !c.Equal(root) {
			t.Errorf("issuer roots file holds %v (%v), want the root", c, err)
		}
		if _, err := inter.Verify(x509.VerifyOptions{Roots: pool}); err != nil {
			t.Errorf("intermediate does not chain to the issuer roots file: %v", err)
		}
	})

	t.Run("stop", func(t *testing.T) {
		pid := srv.PID()
		if err := syscall.Kill(pid, 0); err != nil {
			t.Fatalf("pebble (pid %d) is not running before Stop: %v", pid, err)
		}
		stopped = true
		if err := srv.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("after Stop, kill(%d, 0) = %v, want ESRCH", pid, err)
		}
		if err := srv.Stop(); err != nil {
			t.Errorf("second Stop: %v", err)
		}
		if _, err := srv.Root(t.Context()); err == nil {
			t.Error("Root answered after Stop")
		}
	})
}

// TestStartFails: bad options are refused before anything runs, and a
// pebble that dies at start is reported with the tail of its output.
func TestStartFails(t *testing.T) {
	dir := t.TempDir()
	dying := filepath.Join(dir, "dying-pebble")
	if err := os.WriteFile(dying, []byte("#!/bin/sh\necho 'config is bad, giving up' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := pebble.Options{Bin: dying, Dir: dir, DNSServer: "127.0.0.1:53", HTTPPort: 5002, TLSPort: 5001}
	tests := []struct {
		name string
		edit func(*pebble.Options)
		want string
	}{
		{"no binary", func(o *pebble.Options) { o.Bin = "" }, "Options.Bin is required"},
		{"no dir", func(o *pebble.Options) { o.Dir = "" }, "Options.Dir is required"},
		{"missing dir", func(o *pebble.Options) { o.Dir = filepath.Join(dir, "nope") }, "no such file or directory"},
		{"dns without port", func(o *pebble.Options) { o.DNSServer = "127.0.0.1" }, `Options.DNSServer "127.0.0.1": want host:port`},
		{"no http port", func(o *pebble.Options) { o.HTTPPort = 0 }, "must be ports, got 0 and 5001"},
		{"tls port too big", func(o *pebble.Options) { o.TLSPort = 70000 }, "must be ports, got 5002 and 70000"},
		{"exits at start", func(*pebble.Options) {}, "config is bad, giving up"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.edit(&o)
			srv, err := pebble.Start(t.Context(), o)
			if err == nil {
				srv.Stop()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start error = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// TestStartLog: Options.Log receives Pebble's output instead of
// Dir/pebble.log.
func TestStartLog(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "talking-pebble")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho \"pebble says $*\"\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	_, err := pebble.Start(t.Context(), pebble.Options{Bin: bin, Dir: dir, DNSServer: "127.0.0.1:53", HTTPPort: 5002, TLSPort: 5001, Log: &log})
	if err == nil {
		t.Fatal("Start succeeded")
	}
	if want := "pebble says -config " + filepath.Join(dir, "pebble-config.json") + " -dnsserver 127.0.0.1:53"; !strings.Contains(log.String(), want) {
		t.Errorf("Log got %q, want %q", log.String(), want)
	}
	if _, err := os.Stat(filepath.Join(dir, "pebble.log")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pebble.log written despite Options.Log: %v", err)
	}
}
