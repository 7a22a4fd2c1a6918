// Package s3test gives tests a real S3-compatible server: SeaweedFS, built
// from its Go module at the pinned Version into the cache directory by
// scripts/build-weed, started by package s3server on free loopback ports
// with its own data directory, and stopped when the test ends.
//
//	srv := s3test.Start(t)
//	cfg := objstore.Config{Endpoint: srv.Endpoint(), Region: srv.Region(),
//		Bucket: srv.Bucket(), AccessKey: srv.AccessKey(), SecretKey: srv.SecretKey()}
//
// A missing binary is built (minutes, the first time); a failed build fails
// the test: object storage is a real part of this suite, not an optional
// one. GENESIS_WEED_BIN points at a weed binary to use instead.
package s3test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/internal/s3server"
	"genesis.dev/fleet/internal/testkit"
)

// Version is the SeaweedFS module version the tests run against; it must
// match scripts/build-weed's default.
const Version = "v0.0.0-20261109003541-7506e5f91cd6"

// Bin returns the weed binary: $GENESIS_WEED_BIN when set, else what
// scripts/build-weed prints (the cached binary, built the first time).
func Bin(tb testing.TB) string {
	tb.Helper()
	if bin := os.Getenv("GENESIS_WEED_BIN"); bin != "" {
		return bin
	}
	root := testkit.ModuleRoot(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "build-weed"))
	cmd.Env = append(os.Environ(), "WEED_VERSION="+Version)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("scripts/build-weed: %v\n%s", err, tail(stderr.String(), 4000))
	}
	if s := stderr.String(); s != "" {
		tb.Log(strings.TrimSpace(s))
	}
	return strings.TrimSpace(string(out))
}

// Start starts a server with a fresh temporary directory and a bucket,
// and stops it (removing the directory) when tb ends.
func Start(tb testing.TB) *s3server.Server {
	tb.Helper()
	return StartWith(tb, s3server.Options{})
}

// StartWith is Start with options; Bin defaults to Bin(tb).
func StartWith(tb testing.TB, opts s3server.Options) *s3server.Server {
	tb.Helper()
	if opts.Bin == "" {
		opts.Bin = Bin(tb)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	srv, err := s3server.Start(ctx, opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Logf("seaweedfs S3 on %s (bucket %s) up in %s", srv.Endpoint(), srv.Bucket(), time.Since(start).Round(time.Millisecond))
	tb.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			tb.Error(err)
		}
	})
	return srv
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
