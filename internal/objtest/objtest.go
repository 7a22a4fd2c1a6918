// Package objtest is object storage for tests: a local directory served
// by net/http/httptest that speaks the part of S3 the backup protocol
// uses. Objects are addressed by path; PUT and GET need a presigned URL
// (an HMAC over method, key and expiry in the query, which the server
// checks, expiry included); HEAD answers the size and DELETE removes. The
// reconciler's own calls (Stat, Remove) sign like presigned ones, so every
// byte goes over HTTP as it would to S3. Store implements backup.Objects;
// a real S3 server (reconciler/objstore against SeaweedFS) replaces it in
// the end-to-end suite.
package objtest

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Store is a backup.Objects over a local directory, served over HTTP.
type Store struct {
	dir      string
	secret   []byte
	srv      *httptest.Server
	now      func() time.Time
	notFound error
	// Down makes the server answer 503 to everything (storage is down).
	Down atomic.Bool
}

// New serves a fresh directory until t ends. now is the clock presigned
// URLs expire by; Stat wraps notFound (backup.ErrNotFound) for a missing
// object.
func New(t testing.TB, now func() time.Time, notFound error) *Store {
	t.Helper()
	o := &Store{dir: t.TempDir(), secret: make([]byte, 32), now: now, notFound: notFound}
	rand.Read(o.secret)
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *Store) sign(method, key string, expires int64) string {
	m := hmac.New(sha256.New, o.secret)
	fmt.Fprintf(m, "%s\n%s\n%d", method, key, expires)
	return hex.EncodeToString(m.Sum(nil))
}

func (o *Store) presign(method, key string, ttl time.Duration) string {
	exp := o.now().Add(ttl).Unix()
	q := url.Values{"X-Expires": {strconv.FormatInt(exp, 10)}, "X-Signature": {o.sign(method, key, exp)}}
	return o.srv.URL + "/" + key + "?" + q.Encode()
}

func (o *Store) serve(w http.ResponseWriter, r *http.Request) {
	if o.Down.Load() {
		http.Error(w, "storage down", http.StatusServiceUnavailable)
		return
	}
	key := strings.TrimPrefix(r.URL.Path, "/")
	exp, err := strconv.ParseInt(r.URL.Query().Get("X-Expires"), 10, 64)
	switch {
	case err != nil || key == "" || strings.Contains(key, ".."):
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	case !hmac.Equal([]byte(r.URL.Query().Get("X-Signature")), []byte(o.sign(r.Method, key, exp))):
		http.Error(w, "signature does not match", http.StatusForbidden)
		return
	case o.now().Unix() > exp:
		http.Error(w, "request has expired", http.StatusForbidden)
		return
	}
	p := filepath.Join(o.dir, filepath.FromSlash(key))
	switch r.Method {
	case http.MethodPut:
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		data, err := io.ReadAll(r.Body)
		if err == nil {
			err = os.WriteFile(p, data, 0o644)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	case http.MethodGet, http.MethodHead:
		f, err := os.Open(p)
		if err != nil {
			http.Error(w, "no such key", http.StatusNotFound)
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		w.Header().Set("Content-Length", strconv.FormatInt(st.Size(), 10))
		if r.Method == http.MethodGet {
			io.Copy(w, f)
		}
	case http.MethodDelete:
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// PresignPut is a PUT URL for key valid for ttl.
func (o *Store) PresignPut(ctx context.Context, key string, ttl time.Duration) (string, error) {
	return o.presign(http.MethodPut, key, ttl), nil
}

// PresignGet is a GET URL for key valid for ttl.
func (o *Store) PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error) {
	return o.presign(http.MethodGet, key, ttl), nil
}

func (o *Store) do(ctx context.Context, method, key string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, o.presign(method, key, time.Minute), nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}

// Stat is key's size (HEAD).
func (o *Store) Stat(ctx context.Context, key string) (int64, error) {
	resp, err := o.do(ctx, http.MethodHead, key)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return resp.ContentLength, nil
	case http.StatusNotFound:
		return 0, fmt.Errorf("stat %s: %w", key, o.notFound)
	}
	return 0, fmt.Errorf("stat %s: %s", key, resp.Status)
}

// Remove deletes key (DELETE); a missing key is fine.
func (o *Store) Remove(ctx context.Context, key string) error {
	resp, err := o.do(ctx, http.MethodDelete, key)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("remove %s: %s", key, resp.Status)
	}
	return nil
}

// Exists reports whether storage holds key.
func (o *Store) Exists(key string) bool {
	_, err := os.Stat(filepath.Join(o.dir, filepath.FromSlash(key)))
	return err == nil
}

// Put writes key directly (a backup that an agent uploaded).
func (o *Store) Put(t testing.TB, key string, data []byte) {
	t.Helper()
	p := filepath.Join(o.dir, filepath.FromSlash(key))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// Do sends method to url with body and returns the status and body.
func Do(t testing.TB, method, url string, body []byte) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = strings.NewReader(string(body))
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}
