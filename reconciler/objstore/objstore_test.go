package objstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/s3server"
	"genesis.dev/fleet/internal/s3server/s3test"
	"genesis.dev/fleet/reconciler/objstore"
)

// Every test runs against a real SeaweedFS (internal/s3server). The agent's
// side of the protocol is plain net/http with the presigned URLs, so that is
// what the tests use for uploads and downloads.

func newClient(t *testing.T, srv *s3server.Server, prefix string) *objstore.Client {
	t.Helper()
	c, err := objstore.New(objstore.Config{
		Endpoint:  srv.Endpoint(),
		Region:    srv.Region(),
		Bucket:    srv.Bucket(),
		AccessKey: srv.AccessKey(),
		SecretKey: srv.SecretKey(),
		Prefix:    prefix,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// timeout bounds every call in these tests: a call that hangs fails the
// test instead of the test binary.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// put uploads body to a presigned URL the way an agent does: a plain PUT
// with Content-Length. It returns the status and response body.
func put(t *testing.T, ctx context.Context, rawURL string, body []byte) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, rawURL, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	return do(t, req)
}

func get(t *testing.T, ctx context.Context, rawURL string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

func do(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// upload stores body under key through a presigned PUT.
func upload(t *testing.T, ctx context.Context, c *objstore.Client, key string, body []byte) {
	t.Helper()
	u, err := c.PresignPut(ctx, key, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if code, msg := put(t, ctx, u, body); code != http.StatusOK {
		t.Fatalf("PUT %s: %d %s", key, code, msg)
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	good := objstore.Config{Endpoint: "https://nyc3.example.test", Region: "nyc3", Bucket: "b", AccessKey: "ak", SecretKey: "sk"}
	tests := []struct {
		name   string
		edit   func(*objstore.Config)
		errHas string
	}{
		{"valid", func(*objstore.Config) {}, ""},
		{"valid with port and slash", func(c *objstore.Config) { c.Endpoint = "http://127.0.0.1:8333/" }, ""},
		{"nothing", func(c *objstore.Config) { *c = objstore.Config{} }, "missing endpoint, region, bucket, access key, secret key"},
		{"no region", func(c *objstore.Config) { c.Region = "" }, "missing region"},
		{"no secret", func(c *objstore.Config) { c.SecretKey = "" }, "missing secret key"},
		{"host only", func(c *objstore.Config) { c.Endpoint = "nyc3.example.test" }, "want http(s)://host[:port]"},
		{"path", func(c *objstore.Config) { c.Endpoint = "https://nyc3.example.test/b" }, "want http(s)://host[:port]"},
		{"ftp", func(c *objstore.Config) { c.Endpoint = "ftp://nyc3.example.test" }, "want http(s)://host[:port]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.edit(&cfg)
			_, err := objstore.New(cfg)
			switch {
			case tt.errHas == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Fatalf("New: got %v, want an error containing %q", err, tt.errHas)
			}
		})
	}
}

func TestPresignTTLBounds(t *testing.T) {
	c, err := objstore.New(objstore.Config{Endpoint: "http://127.0.0.1:1", Region: "us-east-1", Bucket: "backups", AccessKey: "ak", SecretKey: "sk"})
	if err != nil {
		t.Fatal(err)
	}
	for _, ttl := range []time.Duration{0, 500 * time.Millisecond, 7*24*time.Hour + time.Second} {
		if _, err := c.PresignPut(context.Background(), "k", ttl); err == nil {
			t.Errorf("PresignPut with ttl %s: no error", ttl)
		}
		if _, err := c.PresignGet(context.Background(), "k", ttl); err == nil {
			t.Errorf("PresignGet with ttl %s: no error", ttl)
		}
	}
	// Presigning is local: it works with nothing listening, and the URL
	// names the access key, never the secret.
	u, err := c.PresignPut(context.Background(), "t1/2026-01-01.age", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	q, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	if got := q.Query().Get("X-Amz-Credential"); !strings.HasPrefix(got, "ak/") {
		t.Errorf("X-Amz-Credential %q does not name the access key", got)
	}
	for k, v := range q.Query() {
		if strings.Contains(strings.Join(v, ","), "sk") {
			t.Errorf("query parameter %s carries the secret: %v", k, v)
		}
	}
}

func TestObjects(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	c := newClient(t, srv, "backups/")

	t.Run("presigned PUT then Stat and presigned GET", func(t *testing.T) {
		ctx := timeout(t)
		body := randomBytes(t, 3<<20+17) // several chunks of the filer's 4 MiB split, not a round size
		upload(t, ctx, c, "t1/2026-11-09T00-00-00Z.tar.age", body)

		size, err := c.Stat(ctx, "t1/2026-11-09T00-00-00Z.tar.age")
		if err != nil {
			t.Fatal(err)
		}
		if got, want := size, int64(len(body)); got != want {
			t.Fatalf("Stat size: got %d, want %d", got, want)
		}

		u, err := c.PresignGet(ctx, "t1/2026-11-09T00-00-00Z.tar.age", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		code, got := get(t, ctx, u)
		if code != http.StatusOK {
			t.Fatalf("GET: %d %.200s", code, got)
		}
		if !bytes.Equal([]byte(got), body) {
			t.Fatalf("GET returned %d bytes, not the %d uploaded", len(got), len(body))
		}
	})

	t.Run("a second PUT replaces the object", func(t *testing.T) {
		ctx := timeout(t)
		upload(t, ctx, c, "t1/replaced", []byte("first version"))
		upload(t, ctx, c, "t1/replaced", []byte("v2"))
		size, err := c.Stat(ctx, "t1/replaced")
		if err != nil {
			t.Fatal(err)
		}
		if size != 2 {
			t.Fatalf("Stat size: got %d, want 2", size)
		}
	})

	t.Run("the prefix is applied", func(t *testing.T) {
		ctx := timeout(t)
		upload(t, ctx, c, "t1/prefixed", []byte("x"))
		bare := newClient(t, srv, "")
		if _, err := bare.Stat(ctx, "backups/t1/prefixed"); err != nil {
			t.Fatalf("Stat without prefix: %v", err)
		}
		if _, err := bare.Stat(ctx, "t1/prefixed"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Stat of the unprefixed key: got %v, want ErrNotFound", err)
		}
	})

	t.Run("Stat of a missing object is ErrNotFound", func(t *testing.T) {
		ctx := timeout(t)
		_, err := c.Stat(ctx, "t1/never-uploaded")
		if !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Stat: got %v, want ErrNotFound", err)
		}
		if errors.Is(err, objstore.ErrUnavailable) {
			t.Fatalf("Stat: %v is also ErrUnavailable", err)
		}
	})

	t.Run("Remove then Stat is ErrNotFound; removing again is fine", func(t *testing.T) {
		ctx := timeout(t)
		upload(t, ctx, c, "t1/old", []byte("expired backup"))
		if err := c.Remove(ctx, "t1/old"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Stat(ctx, "t1/old"); !errors.Is(err, objstore.ErrNotFound) {
			t.Fatalf("Stat after Remove: got %v, want ErrNotFound", err)
		}
		if err := c.Remove(ctx, "t1/old"); err != nil {
			t.Fatalf("second Remove: %v", err)
		}
		if err := c.Remove(ctx, "t1/never-uploaded"); err != nil {
			t.Fatalf("Remove of a never-uploaded key: %v", err)
		}
	})
}

func TestList(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	ctx := timeout(t)
	c := newClient(t, srv, "backups/")
	start := time.Now().Add(-time.Minute)
	uploads := map[string]int{
		"t1/2026-11-01.age":      10,
		"t1/2026-11-02.age":      20,
		"t1/deep/nested/key.age": 5,
		"t10/2026-11-01.age":     30, // shares the prefix "t1" but not "t1/"
		"t2/2026-11-01.age":      40,
	}
	for key, n := range uploads {
		upload(t, ctx, c, key, randomBytes(t, n))
	}
	// An object outside the client's prefix is never listed.
	upload(t, ctx, newClient(t, srv, "other/"), "t1/2026-11-01.age", []byte("not a backup"))

	tests := []struct {
		prefix string
		want   []string
	}{
		{"t1/", []string{"t1/2026-11-01.age", "t1/2026-11-02.age", "t1/deep/nested/key.age"}},
		{"t1", []string{"t1/2026-11-01.age", "t1/2026-11-02.age", "t1/deep/nested/key.age", "t10/2026-11-01.age"}},
		{"t2/", []string{"t2/2026-11-01.age"}},
		{"", []string{"t1/2026-11-01.age", "t1/2026-11-02.age", "t1/deep/nested/key.age", "t10/2026-11-01.age", "t2/2026-11-01.age"}},
		{"t3/", nil},
	}
	for _, tt := range tests {
		t.Run("prefix="+tt.prefix, func(t *testing.T) {
			objs, err := c.List(timeout(t), tt.prefix)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, o := range objs {
				keys = append(keys, o.Key)
				if want := int64(uploads[o.Key]); o.Size != want {
					t.Errorf("%s: size %d, want %d", o.Key, o.Size, want)
				}
				if o.Modified.Before(start) || o.Modified.After(time.Now().Add(time.Minute)) {
					t.Errorf("%s: modified %s, not around now", o.Key, o.Modified)
				}
			}
			if diff := cmp.Diff(keys, tt.want); diff != "" {
				t.Fatalf("keys (-got +want):\n%s", diff)
			}
		})
	}
}

// TestListFollowsPages lists more objects than one ListObjectsV2 page holds
// (1,000).
func TestListFollowsPages(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	ctx := timeout(t)
	c := newClient(t, srv, "")
	const n = 1001
	// Uploads in parallel through presigned URLs, like many agents.
	errs := make(chan error, n)
	sem := make(chan struct{}, 16)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			key := fmt.Sprintf("many/%04d", i)
			u, err := c.PresignPut(ctx, key, time.Minute)
			if err == nil {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPut, u, strings.NewReader("x"))
				req.ContentLength = 1
				var resp *http.Response
				if resp, err = http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = errors.New(key + ": " + resp.Status)
					}
				}
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	objs, err := c.List(ctx, "many/")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != n {
		t.Fatalf("List: %d objects, want %d", len(objs), n)
	}
}

// TestServerRefusesBadURLs: the storage, not the client, is what refuses a
// presigned URL that has expired or been altered. Every case must leave the
// object as it was.
func TestServerRefusesBadURLs(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	ctx := timeout(t)
	c := newClient(t, srv, "backups/")
	upload(t, ctx, c, "t1/kept", []byte("original"))

	putURL, err := c.PresignPut(ctx, "t1/kept", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	getURL, err := c.PresignGet(ctx, "t1/kept", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	shortPut, err := c.PresignPut(ctx, "t1/kept", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	shortGet, err := c.PresignGet(ctx, "t1/kept", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Past the one-second validity (the signing time has whole seconds).
	time.Sleep(2500 * time.Millisecond)

	edit := func(raw string, f func(u *url.URL, q url.Values)) string {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		f(u, q)
		u.RawQuery = q.Encode()
		return u.String()
	}
	flip := func(s string) string { // change the last hex digit
		last := s[len(s)-1]
		repl := byte('0')
		if last == '0' {
			repl = '1'
		}
		return s[:len(s)-1] + string(repl)
	}
	// want is what the refusal says (SeaweedFS's S3 error code or
	// message), so a case is refused for the reason it tests.
	const (
		expired   = "Request has expired"
		signature = "<Code>SignatureDoesNotMatch</Code>"
	)
	tests := []struct {
		name   string
		method string
		url    string
		want   string
	}{
		{"expired PUT", http.MethodPut, shortPut, expired},
		{"expired GET", http.MethodGet, shortGet, expired},
		{"PUT to another key", http.MethodPut, edit(putURL, func(u *url.URL, _ url.Values) { u.Path = strings.Replace(u.Path, "t1/kept", "t2/kept", 1) }), signature},
		{"PUT under another prefix", http.MethodPut, edit(putURL, func(u *url.URL, _ url.Values) { u.Path = strings.Replace(u.Path, "/backups/", "/other/", 1) }), signature},
		{"PUT to another bucket", http.MethodPut, edit(putURL, func(u *url.URL, _ url.Values) {
			u.Path = strings.Replace(u.Path, "/"+srv.Bucket()+"/", "/another-bucket/", 1)
		}), signature},
		{"PUT with a longer expiry", http.MethodPut, edit(putURL, func(_ *url.URL, q url.Values) { q.Set("X-Amz-Expires", "604800") }), signature},
		{"PUT with a later date", http.MethodPut, edit(putURL, func(_ *url.URL, q url.Values) {
			q.Set("X-Amz-Date", time.Now().UTC().Add(time.Hour).Format("20060102T150405Z"))
		}), signature},
		{"PUT with an altered signature", http.MethodPut, edit(putURL, func(_ *url.URL, q url.Values) { q.Set("X-Amz-Signature", flip(q.Get("X-Amz-Signature"))) }), signature},
		{"PUT without a signature", http.MethodPut, edit(putURL, func(_ *url.URL, q url.Values) { q.Del("X-Amz-Signature") }), "<Code>MissingFields</Code>"},
		{"PUT with another access key", http.MethodPut, edit(putURL, func(_ *url.URL, q url.Values) {
			q.Set("X-Amz-Credential", strings.Replace(q.Get("X-Amz-Credential"), srv.AccessKey(), "someone-else", 1))
		}), "<Code>InvalidAccessKeyId</Code>"},
		{"GET URL used to PUT", http.MethodPut, getURL, signature},
		{"PUT URL used to DELETE", http.MethodDelete, putURL, signature},
		{"GET with an altered signature", http.MethodGet, edit(getURL, func(_ *url.URL, q url.Values) { q.Set("X-Amz-Signature", flip(q.Get("X-Amz-Signature"))) }), signature},
		{"unsigned PUT", http.MethodPut, strings.Split(putURL, "?")[0], "<Code>AccessDenied</Code>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := timeout(t)
			req, err := http.NewRequestWithContext(ctx, tt.method, tt.url, strings.NewReader("overwritten"))
			if err != nil {
				t.Fatal(err)
			}
			if tt.method == http.MethodGet {
				req.Body, req.ContentLength = nil, 0
			} else {
				req.ContentLength = int64(len("overwritten"))
			}
			// SeaweedFS answers 403 (AccessDenied, SignatureDoesNotMatch,
			// InvalidAccessKeyId, expired) or, for a URL missing a
			// signature field, 400 (MissingFields).
			code, body := do(t, req)
			if code != http.StatusForbidden && code != http.StatusBadRequest {
				t.Fatalf("%s: got %d %.300s, want 403 or 400", tt.method, code, body)
			}
			if !strings.Contains(body, tt.want) {
				t.Errorf("%s: refused with %d %s, want %q in the body: %.300s", tt.method, code, s3Code(body), tt.want, body)
			}
			if strings.Contains(body, "original") {
				t.Fatalf("refused GET returned the object: %.300s", body)
			}
		})
	}
	size, err := c.Stat(ctx, "t1/kept")
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len("original")) {
		t.Fatalf("the object changed: size %d", size)
	}
	if _, err := c.Stat(ctx, "t2/kept"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("t2/kept: got %v, want ErrNotFound", err)
	}
}

// TestStorageDown: with the storage stopped, every call that does I/O
// returns ErrUnavailable within its context's deadline (the library's
// retries included), presigning still works (it is local), and once the
// storage is back the objects are there.
func TestStorageDown(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	c := newClient(t, srv, "backups/")
	upload(t, timeout(t), c, "t1/before", []byte("stored before the outage"))

	if err := srv.Down(); err != nil {
		t.Fatal(err)
	}
	calls := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Stat", func(ctx context.Context) error { _, err := c.Stat(ctx, "t1/before"); return err }},
		{"Remove", func(ctx context.Context) error { return c.Remove(ctx, "t1/before") }},
		{"List", func(ctx context.Context) error { _, err := c.List(ctx, "t1/"); return err }},
	}
	for _, tt := range calls {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err := tt.call(ctx)
			if !errors.Is(err, objstore.ErrUnavailable) {
				t.Fatalf("got %v, want ErrUnavailable", err)
			}
			if errors.Is(err, objstore.ErrNotFound) {
				t.Fatalf("%v is also ErrNotFound", err)
			}
			if strings.Contains(err.Error(), srv.SecretKey()) {
				t.Fatalf("the error carries the secret key: %v", err)
			}
			t.Logf("%v", err)
		})
	}
	t.Run("a short deadline is kept", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := c.Stat(ctx, "t1/before")
		if !errors.Is(err, objstore.ErrUnavailable) {
			t.Fatalf("got %v, want ErrUnavailable", err)
		}
	})
	t.Run("presigning needs no storage", func(t *testing.T) {
		if _, err := c.PresignPut(context.Background(), "t1/during", time.Minute); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("an agent's PUT fails cleanly", func(t *testing.T) {
		u, err := c.PresignPut(context.Background(), "t1/during", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, u, strings.NewReader("x"))
		req.ContentLength = 1
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			t.Fatalf("PUT with the storage down: %s", resp.Status)
		}
	})

	ctx := timeout(t)
	if err := srv.Up(ctx); err != nil {
		t.Fatal(err)
	}
	size, err := c.Stat(ctx, "t1/before")
	if err != nil {
		t.Fatalf("Stat after the storage came back: %v", err)
	}
	if size != int64(len("stored before the outage")) {
		t.Fatalf("size %d after the outage", size)
	}
}

// s3Code is the <Code> of an S3 error body, for the log.
func s3Code(body string) string {
	_, rest, ok := strings.Cut(body, "<Code>")
	code, _, ok2 := strings.Cut(rest, "</Code>")
	if !ok || !ok2 {
		return "(no S3 error code)"
	}
	return code
}
