// Package objstore is the reconciler's side of tenant backups in
// S3-compatible object storage (DigitalOcean Spaces in production, a real
// SeaweedFS in tests).
//
// The reconciler holds the storage credentials; agents never do. An agent
// that has a backup to upload asks the reconciler, which answers with a
// presigned PUT URL for one key, valid for a short time: the agent sends the
// encrypted bytes with a plain HTTP PUT (Content-Length set) and needs no S3
// client and no secret. Restores work the same way with a presigned GET. The
// signature (AWS Signature Version 4, carried in the URL's query) binds the
// method, bucket, key and expiry, so the storage refuses a URL that has
// expired or been altered.
//
// The reconciler itself checks what arrived (Stat: the object's size),
// lists a tenant's backups and removes those past retention (List, Remove).
// Every key is relative to Config.Prefix: the client adds the prefix on the
// way out and strips it from what List returns, so a key List gives can be
// passed back to Stat or Remove as it is.
//
// Errors have kinds: a missing object is ErrNotFound (Remove treats it as
// done); storage that cannot be reached or answers 5xx is ErrUnavailable,
// which a caller retries later; anything else (refused credentials, a
// missing bucket) is a configuration problem. Each call is bounded by its
// context and retried by the library at most a few times, so storage being
// down yields an error, not a hang.
package objstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// ErrNotFound is returned (wrapped) by Stat for a key that holds no object.
var ErrNotFound = errors.New("object not found")

// ErrUnavailable is returned (wrapped) when the storage could not be reached
// or answered with a server error: a condition to retry later.
var ErrUnavailable = errors.New("object storage unavailable")

// attempts is how many times the library sends one request before giving
// up. The reconciler's own loop retries later with backoff, so a short
// burst is enough to ride out a dropped connection.
const attempts = 3

// Config locates the bucket and holds the credentials.
type Config struct {
	// Endpoint is the storage's base URL, for example
	// https://nyc3.digitaloceanspaces.com or http://127.0.0.1:8333. Its
	// scheme decides TLS. Buckets are addressed path-style
	// (<endpoint>/<bucket>/<key>), which Spaces and SeaweedFS both serve.
	Endpoint string
	// Region is the signing region (Spaces: the datacenter, e.g. nyc3;
	// SeaweedFS: us-east-1). It is required: without it the library would
	// ask the storage for the bucket's location before every presign.
	Region string
	Bucket string
	// AccessKey and SecretKey are the storage credentials. They never
	// appear in an error or a presigned URL (only the access key's id
	// does, as S3 requires).
	AccessKey string
	SecretKey string
	// Prefix is put in front of every key (e.g. "backups/"); empty means
	// none.
	Prefix string
	// Transport carries the requests; nil means a clone of
	// http.DefaultTransport with a bounded dial.
	Transport http.RoundTripper
}

// Object is one stored object, as List returns it.
type Object struct {
	Key      string // relative to Config.Prefix
	Size     int64
	Modified time.Time
}

// Client talks to one bucket. It is safe for concurrent use.
type Client struct {
	mc     *minio.Client
	bucket string
	prefix string
	host   string // for messages
}

// New checks cfg and returns a client. It does no I/O.
func New(cfg Config) (*Client, error) {
	var missing []string
	for _, f := range []struct{ name, value string }{
		{"endpoint", cfg.Endpoint}, {"region", cfg.Region}, {"bucket", cfg.Bucket},
		{"access key", cfg.AccessKey}, {"secret key", cfg.SecretKey},
	} {
		if f.value == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("objstore: missing %s", strings.Join(missing, ", "))
	}
	u, err := url.Parse(cfg.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("objstore: endpoint: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("objstore: endpoint %q: want http(s)://host[:port] with no path, query or user", cfg.Endpoint)
	}
	tr := cfg.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		t.ResponseHeaderTimeout = time.Minute
		tr = t
	}
	mc, err := minio.New(u.Host, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       u.Scheme == "https",
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    tr,
		MaxRetries:   attempts,
	})
	if err != nil {
		return nil, fmt.Errorf("objstore: %w", err)
	}
	return &Client{mc: mc, bucket: cfg.Bucket, prefix: cfg.Prefix, host: u.Host}, nil
}

// PresignPut returns a URL that lets its holder upload the object key with
// one HTTP PUT until ttl has passed (at most 7 days, at least a second).
// The request must carry Content-Length (no chunked upload); a second PUT
// replaces the object. Presigning is local: it does no I/O.
func (c *Client) PresignPut(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := checkTTL(ttl); err != nil {
		return "", fmt.Errorf("objstore: presign put %s: %w", key, err)
	}
	u, err := c.mc.PresignedPutObject(ctx, c.bucket, c.prefix+key, ttl)
	if err != nil {
		return "", c.wrap("presign put", key, err)
	}
	return u.String(), nil
}

// PresignGet returns a URL that lets its holder download the object key
// with HTTP GET until ttl has passed (at most 7 days, at least a second).
// It does no I/O, so the object need not exist yet.
func (c *Client) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	if err := checkTTL(ttl); err != nil {
		return "", fmt.Errorf("objstore: presign get %s: %w", key, err)
	}
	u, err := c.mc.PresignedGetObject(ctx, c.bucket, c.prefix+key, ttl, nil)
	if err != nil {
		return "", c.wrap("presign get", key, err)
	}
	return u.String(), nil
}

// Stat returns the size of the object key (HEAD). A missing object is
// ErrNotFound.
func (c *Client) Stat(ctx context.Context, key string) (int64, error) {
	info, err := c.mc.StatObject(ctx, c.bucket, c.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return 0, c.wrap("stat", key, err)
	}
	return info.Size, nil
}

// Remove deletes the object key. Removing a missing object is not an error,
// so retention can be re-run after a partial pass.
func (c *Client) Remove(ctx context.Context, key string) error {
	err := c.mc.RemoveObject(ctx, c.bucket, c.prefix+key, minio.RemoveObjectOptions{})
	if err != nil {
		err = c.wrap("remove", key, err)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// List returns every object whose key starts with prefix (relative to
// Config.Prefix, like the keys it returns), in key order, following
// continuation pages. An error means the listing is incomplete and nothing
// partial is returned: retention must not act on a partial observation.
func (c *Client) List(ctx context.Context, prefix string) ([]Object, error) {
	ctx, cancel := context.WithCancel(ctx) // stops the library's lister on an early return
	defer cancel()
	var out []Object
	for info := range c.mc.ListObjects(ctx, c.bucket, minio.ListObjectsOptions{Prefix: c.prefix + prefix, Recursive: true}) {
		if info.Err != nil {
			return nil, c.wrap("list", prefix, info.Err)
		}
		key, ok := strings.CutPrefix(info.Key, c.prefix)
		if !ok {
			continue // cannot happen: the listing is under c.prefix
		}
		out = append(out, Object{Key: key, Size: info.Size, Modified: info.LastModified.UTC()})
	}
	if err := ctx.Err(); err != nil {
		// The library ends the listing quietly when its context is done.
		return nil, c.wrap("list", prefix, err)
	}
	return out, nil
}

func checkTTL(ttl time.Duration) error {
	if ttl < time.Second || ttl > 7*24*time.Hour {
		return fmt.Errorf("ttl %s: want between 1s and 7 days", ttl)
	}
	return nil
}

// wrap gives err its kind and says what was being done to which key. The
// library's messages carry no credentials.
func (c *Client) wrap(op, key string, err error) error {
	what := fmt.Sprintf("objstore: %s %s/%s%s", op, c.bucket, c.prefix, key)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == minio.NoSuchKey:
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case resp.StatusCode >= 500:
		return fmt.Errorf("%s: %w: %s answered %d %s", what, ErrUnavailable, c.host, resp.StatusCode, resp.Code)
	case resp.StatusCode != 0:
		return fmt.Errorf("%s: %s answered %d %s: %s", what, c.host, resp.StatusCode, resp.Code, resp.Message)
	}
	var netErr net.Error
	var opErr *net.OpError
	var urlErr *url.Error
	if errors.As(err, &opErr) || errors.As(err, &netErr) || errors.As(err, &urlErr) {
		return fmt.Errorf("%s: %w: %w", what, ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}
