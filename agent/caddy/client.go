package caddy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Error is an error answer from the admin API. A 400 on /load means Caddy
// refused the config and kept the old one running.
type Error struct {
	Method  string
	Path    string
	Status  int
	Message string // Caddy's {"error": ...}, shortened
}

func (e *Error) Error() string {
	return fmt.Sprintf("caddy admin: %s %s: %d %s", e.Method, e.Path, e.Status, e.Message)
}

// Retryable reports whether the same request may succeed later. A 4xx is a
// bad config: it waits for a new one.
func (e *Error) Retryable() bool { return e.Status >= 500 || e.Status == http.StatusTooManyRequests }

// ClientOptions configure a Client. The zero value works.
type ClientOptions struct {
	// HTTPClient sends the requests; default: a client with a 60 s timeout
	// (a load waits for the old servers' grace period).
	HTTPClient *http.Client
	// Logger; default: discard.
	Logger *slog.Logger
}

// Client applies configs through Caddy's admin API. It remembers the digest
// of the last config it applied; Load is serialised.
type Client struct {
	admin string
	hc    *http.Client
	log   *slog.Logger
	loads atomic.Int64

	mu      sync.Mutex
	applied Digest // of the running config, when known
	known   bool
}

// NewClient returns a client for the admin API at adminAddr (host:port,
// default 127.0.0.1:2019).
func NewClient(adminAddr string, opts ClientOptions) *Client {
	c := &Client{admin: adminAddr, hc: opts.HTTPClient, log: opts.Logger}
	if c.admin == "" {
		c.admin = DefaultAdminListen
	}
	if c.hc == nil {
		c.hc = &http.Client{Timeout: 60 * time.Second}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "caddy")
	return c
}

// Loads returns how many POST /load requests the client has sent.
func (c *Client) Loads() int64 { return c.loads.Load() }

// Load makes cfg Caddy's running config. It posts only when cfg's digest
// differs from the running config's (remembered from the last Load, or read
// with GET /config/ the first time) and reports whether it posted. On a 400
// the old config keeps running and the error is an *Error.
func (c *Client) Load(ctx context.Context, cfg []byte) (bool, error) {
	want, err := DigestOf(cfg)
	if err != nil {
		return false, fmt.Errorf("caddy load: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.known {
		running, err := c.Running(ctx)
		if err != nil {
			// Caddy may be down or starting; the POST below says more.
			c.log.WarnContext(ctx, "caddy running config unknown", "err", err)
		} else {
			c.applied, c.known = running, true
		}
	}
	if c.known && c.applied == want {
		return false, nil
	}
	c.loads.Add(1)
	_, err = c.do(ctx, http.MethodPost, "/load", cfg)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) || e.Status >= 500 {
			// Caddy may or may not have taken it: read it back next time.
			c.known = false
		}
		c.log.WarnContext(ctx, "caddy config refused", "digest", string(want), "err", err)
		return false, err
	}
	c.applied, c.known = want, true
	c.log.InfoContext(ctx, "caddy config loaded", "digest", string(want))
	return true, nil
}

// Running returns the digest of the config Caddy is running (GET /config/).
func (c *Client) Running(ctx context.Context) (Digest, error) {
	body, err := c.do(ctx, http.MethodGet, "/config/", nil)
	if err != nil {
		return "", err
	}
	d, err := DigestOf(body)
	if err != nil {
		return "", fmt.Errorf("caddy admin: GET /config/: %w", err)
	}
	return d, nil
}

// Forget makes the next Load read the running config again, e.g. after
// Caddy restarted.
func (c *Client) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.known = false
}

// do sends one admin request and returns the answer's body on 2xx.
func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	u := url.URL{Scheme: "http", Host: c.admin, Path: path}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("caddy admin: %s %s: %w", method, path, err)
	}
	// The admin API refuses a Host other than its listen address.
	req.Host = c.admin
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("caddy admin: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	c.log.DebugContext(ctx, "caddy admin request", "method", method, "path", path,
		"status", resp.StatusCode, "duration", time.Since(start))
	if err != nil {
		return nil, fmt.Errorf("caddy admin: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, &Error{Method: method, Path: path, Status: resp.StatusCode, Message: errorMessage(data)}
	}
	return data, nil
}

// errorMessage reads Caddy's {"error": "..."} body.
func errorMessage(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(body))
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	const max = 500
	if len(msg) > max {
		msg = msg[:max] + "…"
	}
	return strings.ToValidUTF8(msg, "?")
}
