package n8n

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// Options configure a Client. The zero value works.
type Options struct {
	// HTTPClient sends the requests; default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// Logger gets one debug line per request; default: discard.
	Logger *slog.Logger
	// APIKey authenticates public API calls; see also WithAPIKey.
	APIKey string
	// PollInterval is how often WaitReady probes; default 500 ms.
	PollInterval time.Duration
	// APIKeyLabel labels the keys Bootstrap creates, each with a random
	// suffix (n8n wants labels unique per user); default "genesis-agent".
	APIKeyLabel string
}

// Client talks to one n8n instance. It is safe for concurrent use.
type Client struct {
	base   *url.URL
	hc     *http.Client
	log    *slog.Logger
	apiKey string
	poll   time.Duration
	label  string
	writes *atomic.Int64
}

// maxBody bounds what the client reads from an answer.
const maxBody = 32 << 20

// New returns a client for the n8n at baseURL (e.g. "http://127.0.0.1:5678").
func New(baseURL string, opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("n8n: base url %q: want http(s)://host[:port]", baseURL)
	}
	c := &Client{base: u, hc: opts.HTTPClient, log: opts.Logger, apiKey: opts.APIKey,
		poll: opts.PollInterval, label: opts.APIKeyLabel, writes: new(atomic.Int64)}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 30 * time.Second}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "n8n")
	if c.poll <= 0 {
		c.poll = 500 * time.Millisecond
	}
	if c.label == "" {
		c.label = "genesis-agent"
	}
	return c, nil
}

// WithAPIKey returns a client that authenticates with key and shares this
// client's write count.
func (c *Client) WithAPIKey(key string) *Client {
	d := *c
	d.apiKey = key
	return &d
}

// Writes returns how many requests other than GET this client and the
// clients derived from it have sent, whether or not they succeeded.
func (c *Client) Writes() int64 { return c.writes.Load() }

// request describes one call.
type request struct {
	method string
	path   string // under the base URL, e.g. "/api/v1/workflows"
	query  url.Values
	body   any               // marshalled as JSON when non-nil
	header map[string]string // extra headers
	public bool              // send X-N8N-API-KEY
}

// response is a 2xx answer.
type response struct {
	header http.Header
	body   []byte
}

// do sends req and returns a 2xx answer, or an *Error, a wrapped
// ErrStartingUp, or a transport error.
func (c *Client) do(ctx context.Context, req request) (*response, error) {
	u := *c.base
	u.Path = c.base.Path + req.path
	u.RawQuery = req.query.Encode()
	var body io.Reader
	if req.body != nil {
		data, err := json.Marshal(req.body)
		if err != nil {
			return nil, fmt.Errorf("n8n: %s %s: encode body: %w", req.method, req.path, err)
		}
		body = bytes.NewReader(data)
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, u.String(), body)
	if err != nil {
		return nil, fmt.Errorf("n8n: %s %s: %w", req.method, req.path, err)
	}
	hr.Header.Set("Accept", "application/json")
	if req.body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.public {
		hr.Header.Set("X-N8N-API-KEY", c.apiKey)
	}
	for k, v := range req.header {
		hr.Header.Set(k, v)
	}
	if req.method != http.MethodGet {
		c.writes.Add(1)
	}
	start := time.Now()
	resp, err := c.hc.Do(hr)
	if err != nil {
		c.log.DebugContext(ctx, "n8n request failed", "method", req.method, "path", req.path, "err", err)
		// url.Error repeats the whole URL; the path is enough and never secret.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("n8n: %s %s: %w", req.method, req.path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	c.log.DebugContext(ctx, "n8n request", "method", req.method, "path", req.path,
		"status", resp.StatusCode, "duration", time.Since(start))
	if err != nil {
		return nil, fmt.Errorf("n8n: %s %s: read answer: %w", req.method, req.path, err)
	}
	if startingUp(resp, data) {
		return nil, fmt.Errorf("n8n: %s %s: %w", req.method, req.path, ErrStartingUp)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &Error{Method: req.method, Path: req.path, Status: resp.StatusCode, Message: errorMessage(data)}
	}
	return &response{header: resp.Header, body: data}, nil
}

// call sends req and decodes a JSON answer into out (when out is non-nil).
func (c *Client) call(ctx context.Context, req request, out any) (*response, error) {
	resp, err := c.do(ctx, req)
	if err != nil {
		return nil, err
	}
	if out == nil {
		return resp, nil
	}
	if mt, _, _ := mime.ParseMediaType(resp.header.Get("Content-Type")); mt != "application/json" {
		return nil, fmt.Errorf("n8n: %s %s: %w", req.method, req.path,
			&decodeError{fmt.Errorf("content type %q, want application/json", mt)})
	}
	if err := json.Unmarshal(resp.body, out); err != nil {
		return nil, fmt.Errorf("n8n: %s %s: %w", req.method, req.path, &decodeError{err})
	}
	return resp, nil
}

// startingUp recognises n8n's start-up answers: 200 text/plain "n8n is
// starting up. Please wait" on any route while it migrates, and, for a few
// seconds after /healthz/readiness turned 200, Express's 404 page
// "Cannot POST /rest/owner/setup" (text/html) because the routes are not
// mounted yet. Every route the client calls exists in n8n 1.123, so that
// page means "not yet", never "no such route".
func startingUp(resp *http.Response, body []byte) bool {
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case mt == "text/plain" && bytes.HasPrefix(bytes.TrimSpace(body), []byte("n8n is starting up")):
		return true
	case mt == "text/html" && resp.StatusCode == http.StatusNotFound && bytes.Contains(body, []byte("<pre>Cannot ")):
		return true
	}
	return false
}

// errorMessage extracts n8n's message from an error body, shortened so a
// long echo never fills a log line.
func errorMessage(body []byte) string {
	var e struct {
		Message string `json:"message"`
	}
	msg := ""
	if json.Unmarshal(body, &e) == nil {
		msg = e.Message
	} else {
		msg = strings.TrimSpace(string(body))
	}
	const max = 300
	if len(msg) > max {
		msg = msg[:max] + "…"
	}
	return strings.ToValidUTF8(msg, "?")
}

// Ready probes n8n once: nil when it is ready, an error wrapping
// ErrStartingUp while it starts, another error when it can't be reached.
// Ready means /healthz/readiness is 200 and the routes are mounted (n8n
// 1.123 turns readiness 200 a few seconds before that), which GET
// /rest/settings shows.
func (c *Client) Ready(ctx context.Context) error {
	_, err := c.do(ctx, request{method: http.MethodGet, path: "/healthz/readiness"})
	if err != nil {
		if StatusOf(err) == http.StatusServiceUnavailable {
			return fmt.Errorf("n8n: readiness: %w", ErrStartingUp)
		}
		return err
	}
	_, err = c.do(ctx, request{method: http.MethodGet, path: "/rest/settings"})
	return err
}

// WaitReady polls /healthz/readiness until n8n is ready or ctx ends; it
// then returns ctx's error with the last probe's.
func (c *Client) WaitReady(ctx context.Context) error {
	t := time.NewTicker(c.poll)
	defer t.Stop()
	for {
		err := c.Ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("n8n: wait for readiness: %w (last probe: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Version returns the version n8n reports in /rest/settings (versionCli)
// to an unauthenticated caller. n8n 1.x leaves versionCli out of the
// public settings; VersionAs logs in first.
func (c *Client) Version(ctx context.Context) (string, error) {
	return c.settingsVersion(ctx, nil)
}

// VersionAs logs in as the owner (email, password) and returns the version
// in the full settings, which n8n 1.x gives only to a signed-in user.
func (c *Client) VersionAs(ctx context.Context, email, password string) (string, error) {
	hdr := map[string]string{"browser-id": rand.Text()}
	login := map[string]string{"emailOrLdapLoginId": email, "password": password}
	resp, err := c.call(ctx, request{method: http.MethodPost, path: "/rest/login", body: login, header: hdr}, nil)
	if err != nil {
		return "", fmt.Errorf("n8n version: login: %w", err)
	}
	for _, ck := range (&http.Response{Header: resp.header}).Cookies() {
		if ck.Name == "n8n-auth" && ck.Value != "" {
			hdr["Cookie"] = ck.Name + "=" + ck.Value
		}
	}
	if hdr["Cookie"] == "" {
		return "", fmt.Errorf("n8n version: login set no n8n-auth cookie")
	}
	return c.settingsVersion(ctx, hdr)
}

func (c *Client) settingsVersion(ctx context.Context, hdr map[string]string) (string, error) {
	var out struct {
		Data struct {
			VersionCli string `json:"versionCli"`
		} `json:"data"`
	}
	if _, err := c.call(ctx, request{method: http.MethodGet, path: "/rest/settings", header: hdr}, &out); err != nil {
		return "", err
	}
	if out.Data.VersionCli == "" {
		return "", fmt.Errorf("n8n: GET /rest/settings: no versionCli in the answer")
	}
	return out.Data.VersionCli, nil
}
