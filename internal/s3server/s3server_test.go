package s3server_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"genesis.dev/fleet/internal/s3server"
	"genesis.dev/fleet/internal/s3server/s3test"
)

func client(t *testing.T, srv *s3server.Server, secret string) *minio.Client {
	t.Helper()
	mc, err := minio.New(strings.TrimPrefix(srv.Endpoint(), "http://"), &minio.Options{
		Creds:        credentials.NewStaticV4(srv.AccessKey(), secret, ""),
		Region:       srv.Region(),
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func putString(t *testing.T, ctx context.Context, mc *minio.Client, bucket, key, body string) {
	t.Helper()
	if _, err := mc.PutObject(ctx, bucket, key, strings.NewReader(body), int64(len(body)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// TestStartServesS3 checks what tests rely on: the bucket exists, the fixed
// credentials are required, and Stop ends the process and removes the
// temporary directory.
func TestStartServesS3(t *testing.T) {
	bin := s3test.Bin(t)
	start := time.Now()
	srv, err := s3server.Start(ctxT(t), s3server.Options{Bin: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started in %s", time.Since(start).Round(time.Millisecond))
	defer srv.Stop()
	ctx := ctxT(t)

	if !strings.HasPrefix(srv.Endpoint(), "http://127.0.0.1:") {
		t.Errorf("Endpoint %q is not on 127.0.0.1", srv.Endpoint())
	}
	mc := client(t, srv, srv.SecretKey())
	ok, err := mc.BucketExists(ctx, srv.Bucket())
	if err != nil || !ok {
		t.Fatalf("BucketExists(%s) = %v, %v", srv.Bucket(), ok, err)
	}
	putString(t, ctx, mc, srv.Bucket(), "hello", "world")

	_, err = client(t, srv, "wrong-secret").StatObject(ctx, srv.Bucket(), "hello", minio.StatObjectOptions{})
	if got := minio.ToErrorResponse(err).StatusCode; got != http.StatusForbidden {
		t.Errorf("stat with a wrong secret: got %v (status %d), want 403", err, got)
	}
	resp, err := http.Get(srv.Endpoint() + "/" + srv.Bucket() + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("anonymous GET: %s, want 403", resp.Status)
	}

	dir := srv.Dir()
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory %s left after Stop: %v", dir, err)
	}
	if _, err := http.Get(srv.Endpoint()); err == nil {
		t.Errorf("S3 still answers after Stop")
	}
	if err := srv.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := srv.Up(ctx); err == nil {
		t.Errorf("Up after Stop: no error")
	}
}

// TestDownUp: Down refuses connections and keeps data; Up brings the same
// server back on the same endpoint.
func TestDownUp(t *testing.T) {
	srv := s3test.Start(t)
	ctx := ctxT(t)
	mc := client(t, srv, srv.SecretKey())
	putString(t, ctx, mc, srv.Bucket(), "t1/backup", "kept across the outage")
	endpoint := srv.Endpoint()

	if err := srv.Down(); err != nil {
		t.Fatal(err)
	}
	_, err := http.Get(endpoint)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("GET while down: got %v, want connection refused", err)
	}
	if err := srv.Down(); err != nil {
		t.Fatalf("second Down: %v", err)
	}

	start := time.Now()
	if err := srv.Up(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("up again in %s", time.Since(start).Round(time.Millisecond))
	if srv.Endpoint() != endpoint {
		t.Fatalf("endpoint moved: %s, was %s", srv.Endpoint(), endpoint)
	}
	info, err := mc.StatObject(ctx, srv.Bucket(), "t1/backup", minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("stat after Up: %v", err)
	}
	if info.Size != int64(len("kept across the outage")) {
		t.Fatalf("size %d after Up", info.Size)
	}
	if err := srv.Up(ctx); err != nil {
		t.Fatalf("Up while up: %v", err)
	}
}

// TestKeptDir: a server in Options.Dir keeps its data and bucket for the
// next server started there.
func TestKeptDir(t *testing.T) {
	bin := s3test.Bin(t)
	dir := filepath.Join(t.TempDir(), "s3")
	ctx := ctxT(t)

	srv, err := s3server.Start(ctx, s3server.Options{Bin: bin, Dir: dir, Bucket: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	putString(t, ctx, client(t, srv, srv.SecretKey()), "kept", "k", "v")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "s3.json")); err != nil {
		t.Fatalf("Stop removed a kept directory: %v", err)
	}

	srv, err = s3server.Start(ctx, s3server.Options{Bin: bin, Dir: dir, Bucket: "kept"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	if _, err := client(t, srv, srv.SecretKey()).StatObject(ctx, "kept", "k", minio.StatObjectOptions{}); err != nil {
		t.Fatalf("object gone after a restart in the same directory: %v", err)
	}
}

func TestStartNeedsBinary(t *testing.T) {
	if _, err := s3server.Start(context.Background(), s3server.Options{}); err == nil {
		t.Fatal("Start without a binary: no error")
	}
	_, err := s3server.Start(context.Background(), s3server.Options{Bin: filepath.Join(t.TempDir(), "no-such-weed")})
	if err == nil {
		t.Fatal("Start with a missing binary: no error")
	}
}
