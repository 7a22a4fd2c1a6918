package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// ErrRefused is wrapped by the error for a 4xx answer other than 429: the
// URL expired or is not for this object. Retrying does not help; ask the
// reconciler for a new URL.
var ErrRefused = errors.New("refused by the storage")

// Retry policy of Upload and Fetch: capped, jittered exponential backoff.
const (
	attempts   = 5
	backoffMin = 250 * time.Millisecond
	backoffMax = 10 * time.Second
)

// StatusError is a storage answer other than success. It is ErrRefused
// for a 4xx other than 429.
type StatusError struct {
	Method string
	Code   int
	Body   string // the start of the answer (S3's error XML)

	retryAfter time.Duration
}

func (e *StatusError) Error() string {
	s := fmt.Sprintf("%s: %d %s", e.Method, e.Code, http.StatusText(e.Code))
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// Is makes a refusal errors.Is ErrRefused.
func (e *StatusError) Is(target error) bool {
	return target == ErrRefused && !retryable(e.Code)
}

func retryable(code int) bool { return code >= 500 || code == http.StatusTooManyRequests }

// Upload PUTs the archive to a presigned URL with a Content-Length.
// Network errors, 5xx and 429 are retried (a bounded number of times,
// honouring Retry-After up to the backoff cap); other answers are
// returned at once, a 4xx as an error that is ErrRefused.
func Upload(ctx context.Context, client *http.Client, url string, a *Archive) error {
	f, err := os.Open(a.Path)
	if err != nil {
		return fmt.Errorf("upload backup %s: %w", a.Binding.BackupID, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("upload backup %s: %w", a.Binding.BackupID, err)
	}
	if fi.Size() != a.Size {
		return fmt.Errorf("upload backup %s: file is %d bytes, the archive says %d", a.Binding.BackupID, fi.Size(), a.Size)
	}
	err = withRetry(ctx, func() (*StatusError, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, nil)
		if err != nil {
			return nil, &permanent{err}
		}
		req.Body = io.NopCloser(io.NewSectionReader(f, 0, a.Size))
		req.GetBody = func() (io.ReadCloser, error) {
			return io.NopCloser(io.NewSectionReader(f, 0, a.Size)), nil
		}
		req.ContentLength = a.Size
		if a.Size == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return statusError(resp), nil
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, nil
	})
	if err != nil {
		return fmt.Errorf("upload backup %s: %w", a.Binding.BackupID, err)
	}
	return nil
}

// Fetch GETs a backup into a new file in tmpDir and returns its path. The
// body must be wantSize bytes with SHA-256 wantSHA256 (hex); a larger
// body is not read past wantSize+1 bytes. On error no file is left.
// Retries as Upload does.
func Fetch(ctx context.Context, client *http.Client, url string, wantSize int64, wantSHA256, tmpDir string) (string, error) {
	var path string
	err := withRetry(ctx, func() (*StatusError, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, &permanent{err}
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return statusError(resp), nil
		}
		if resp.ContentLength >= 0 && resp.ContentLength != wantSize {
			return nil, &permanent{fmt.Errorf("announced %d bytes, want %d", resp.ContentLength, wantSize)}
		}
		path, err = download(resp.Body, wantSize, wantSHA256, tmpDir)
		return nil, err
	})
	if err != nil {
		return "", fmt.Errorf("fetch backup: %w", err)
	}
	return path, nil
}

// download copies at most wantSize+1 bytes of body to a new file and
// checks its size and digest; a mismatch is permanent.
func download(body io.Reader, wantSize int64, wantSHA256, tmpDir string) (_ string, err error) {
	f, err := os.CreateTemp(tmpDir, "genesis-backup-*.age")
	if err != nil {
		return "", &permanent{err}
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = &permanent{cerr}
		}
		if err != nil {
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(body, wantSize+1), make([]byte, copyBuf))
	if err != nil {
		var werr *os.PathError
		if errors.As(err, &werr) {
			return "", &permanent{err} // our disk, not the network
		}
		return "", err // a cut connection: retry
	}
	switch {
	case n > wantSize:
		return "", &permanent{fmt.Errorf("body is larger than the announced %d bytes", wantSize)}
	case n < wantSize:
		return "", fmt.Errorf("body ended after %d of %d bytes", n, wantSize)
	}
	if got := hex.EncodeToString(h.Sum(nil)); !strings.EqualFold(got, wantSHA256) {
		return "", &permanent{fmt.Errorf("sha256 %s, want %s", got, wantSHA256)}
	}
	return f.Name(), f.Sync()
}

// permanent marks an error that retrying does not fix.
type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }

// withRetry calls attempt until it succeeds (nil, nil), returns a
// permanent error or a non-retryable status, ctx ends or the attempts run
// out. Errors never hold the URL: a presigned URL is a credential.
func withRetry(ctx context.Context, attempt func() (*StatusError, error)) error {
	wait := backoffMin
	var last error
	for i := range attempts {
		if i > 0 {
			t := time.NewTimer(wait/2 + rand.N(wait/2+1))
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("%w (after %d attempts; last: %w)", ctx.Err(), i, last)
			case <-t.C:
			}
			wait = min(wait*2, backoffMax)
		}
		se, err := attempt()
		var p *permanent
		switch {
		case errors.As(err, &p):
			return p.err
		case err != nil:
			if ctx.Err() != nil {
				// Cut short: say why the tries before failed, if any.
				if last == nil {
					last = redact(err)
				}
				return fmt.Errorf("%w (after %d attempts; last: %w)", ctx.Err(), i+1, last)
			}
			last = redact(err)
			continue
		case se == nil:
			return nil
		case !retryable(se.Code):
			return se
		}
		last = se
		if se.retryAfter > wait {
			wait = min(se.retryAfter, backoffMax)
		}
	}
	return fmt.Errorf("gave up after %d attempts: %w", attempts, last)
}

// redact drops the URL from a *url.Error: its query is a signature.
func redact(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
	}
	return err
}

// statusError describes an answer other than success with the start of
// its body (S3's error XML, on one line) and its Retry-After.
func statusError(resp *http.Response) *StatusError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	se := &StatusError{
		Method: resp.Request.Method,
		Code:   resp.StatusCode,
		Body:   strings.Join(strings.Fields(string(b)), " "),
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
		se.retryAfter = time.Duration(s) * time.Second
	}
	return se
}
