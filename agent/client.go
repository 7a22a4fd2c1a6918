package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"genesis.dev/fleet/schema"
)

// Client speaks the agent side of the reconciler's HTTP API:
//
//	POST /v1/enroll               EnrollRequest → 200 EnrollResponse; 400, 401, 403, 503 (not yet: Retry-After)
//	GET  /v1/manifest?wait=30s    Bearer, If-None-Match → 200 envelope + ETag; 304, 401, 404
//	POST /v1/heartbeat            Bearer, Heartbeat → 202; 400, 401, 403
type Client struct {
	// BaseURL is the reconciler's agent API, e.g. https://fleet.example.com.
	BaseURL string
	// HTTP defaults to a client without a global timeout (each call sets
	// its own deadline).
	HTTP *http.Client
}

// StatusError is a response with an unexpected status code.
type StatusError struct {
	Op   string
	Code int
	// Body is the start of the response body (servers' error text).
	Body string
}

func (e *StatusError) Error() string {
	if e.Body == "" {
		return fmt.Sprintf("%s: %d %s", e.Op, e.Code, http.StatusText(e.Code))
	}
	return fmt.Sprintf("%s: %d %s: %s", e.Op, e.Code, http.StatusText(e.Code), e.Body)
}

// retryable says whether an error from the client may pass with time:
// network errors, 5xx, 404 (no manifest yet), 408 and 429.
func retryable(err error) bool {
	var se *StatusError
	if !errors.As(err, &se) {
		return true
	}
	return se.Code >= 500 || se.Code == http.StatusNotFound || se.Code == http.StatusTooManyRequests || se.Code == http.StatusRequestTimeout
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return http.DefaultClient
}

func (c *Client) url(path string) string { return strings.TrimRight(c.BaseURL, "/") + path }

// Enroll trades the one-time token for the droplet's credential.
func (c *Client) Enroll(ctx context.Context, req schema.EnrollRequest) (schema.EnrollResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return schema.EnrollResponse{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v1/enroll"), bytes.NewReader(body))
	if err != nil {
		return schema.EnrollResponse{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.http().Do(hreq)
	if err != nil {
		return schema.EnrollResponse{}, fmt.Errorf("enroll: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return schema.EnrollResponse{}, statusError("enroll", resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return schema.EnrollResponse{}, fmt.Errorf("enroll: read response: %w", err)
	}
	var er schema.EnrollResponse
	if err := json.Unmarshal(data, &er); err != nil {
		return schema.EnrollResponse{}, fmt.Errorf("enroll: malformed response")
	}
	if er.Credential == "" {
		return schema.EnrollResponse{}, errors.New("enroll: response has no credential")
	}
	if er.DropletID != "" && er.DropletID != req.DropletID {
		return schema.EnrollResponse{}, fmt.Errorf("enroll: credential issued for droplet %q, not %q", er.DropletID, req.DropletID)
	}
	return er, nil
}

// ManifestResponse is one answer of GET /v1/manifest.
type ManifestResponse struct {
	// NotModified is a 304: the manifest is still the one named by the
	// If-None-Match ETag.
	NotModified bool
	// Envelope is the body of a 200, read with a limit.
	Envelope []byte
	// ETag is the response's entity tag, without quotes.
	ETag string
	// TooLarge means the body was over schema.MaxEnvelopeSize; Envelope is
	// then empty.
	TooLarge bool
	// Date is the server's Date header (zero if absent).
	Date time.Time
}

// Manifest fetches the droplet's manifest. With etag set, the server answers
// 304 if it is still current; with wait > 0 it holds the request up to wait
// for a newer one.
func (c *Client) Manifest(ctx context.Context, credential, etag string, wait time.Duration) (ManifestResponse, error) {
	u := c.url("/v1/manifest")
	if wait > 0 {
		u += "?" + url.Values{"wait": {wait.String()}}.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return ManifestResponse{}, err
	}
	req.Header.Set("Authorization", "Bearer "+credential)
	if etag != "" {
		req.Header.Set("If-None-Match", strconv.Quote(etag))
	}
	resp, err := c.http().Do(req)
	if err != nil {
		return ManifestResponse{}, fmt.Errorf("get manifest: %w", err)
	}
	defer resp.Body.Close()
	mr := ManifestResponse{Date: serverDate(resp)}
	switch resp.StatusCode {
	case http.StatusNotModified:
		mr.NotModified = true
		mr.ETag = unquoteETag(resp.Header.Get("ETag"))
		return mr, nil
	case http.StatusOK:
	default:
		return mr, statusError("get manifest", resp)
	}
	mr.ETag = unquoteETag(resp.Header.Get("ETag"))
	if resp.ContentLength > schema.MaxEnvelopeSize {
		mr.TooLarge = true
		return mr, nil
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, schema.MaxEnvelopeSize+1))
	if err != nil {
		return mr, fmt.Errorf("get manifest: read body: %w", err)
	}
	if len(data) > schema.MaxEnvelopeSize {
		mr.TooLarge = true
		return mr, nil
	}
	mr.Envelope = data
	return mr, nil
}

// HeartbeatResponse is what a heartbeat's answer tells the agent.
type HeartbeatResponse struct {
	Date time.Time
}

// Heartbeat sends one heartbeat.
func (c *Client) Heartbeat(ctx context.Context, credential string, hb schema.Heartbeat) (HeartbeatResponse, error) {
	body, err := json.Marshal(hb)
	if err != nil {
		return HeartbeatResponse{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v1/heartbeat"), bytes.NewReader(body))
	if err != nil {
		return HeartbeatResponse{}, err
	}
	req.Header.Set("Authorization", "Bearer "+credential)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http().Do(req)
	if err != nil {
		return HeartbeatResponse{}, fmt.Errorf("heartbeat: %w", err)
	}
	defer resp.Body.Close()
	hr := HeartbeatResponse{Date: serverDate(resp)}
	if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusOK {
		return hr, statusError("heartbeat", resp)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	return hr, nil
}

// statusError reads the start of an error body. Servers answer in text;
// control characters are dropped so the text is safe to log.
func statusError(op string, resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	text := strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, string(data))
	return &StatusError{Op: op, Code: resp.StatusCode, Body: strings.TrimSpace(text)}
}

func serverDate(resp *http.Response) time.Time {
	t, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return time.Time{}
	}
	return t
}

// unquoteETag strips a weak prefix and the quotes of an entity tag.
func unquoteETag(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "W/")
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}
