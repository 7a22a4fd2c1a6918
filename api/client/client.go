// Package client is the typed Go client of the reconciler's admin API: the
// fleet, the observed state, the tenant API, wake and retry, answering the
// wire types of package api. A non-2xx answer is an *Error carrying the
// status and the problem details; it matches api.ErrNotFound,
// api.ErrConflict and api.ErrUnavailable with errors.Is as the server's
// error did.
//
// The admin CLI (genesis plan), the demo, the load tool and the end-to-end
// tests use it instead of hand-written requests. It imports only the
// standard library and package api: it must not import the server
// (reconciler/...), the database or the cloud.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"genesis.dev/fleet/api"
)

// Bounds of the bodies read: a whole observation may be large; anything
// else is small.
const (
	maxObserved = 256 << 20
	maxBody     = 16 << 20
	maxError    = 64 << 10
)

// Client calls one reconciler (or a load balancer in front of several).
type Client struct {
	base  string
	token string
	hc    *http.Client
}

// New returns a client of the API at baseURL (e.g. http://127.0.0.1:8080)
// sending token as its bearer token (none when empty), through hc
// (http.DefaultClient when nil).
func New(baseURL, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), token: token, hc: hc}
}

// Error is an answer other than the one asked for: its request, status and
// problem details (Problem.Detail is the body's text when it was not
// problem details).
type Error struct {
	Method, Path string
	StatusCode   int
	Status       string // e.g. "503 Service Unavailable"
	Header       http.Header
	Problem      api.Problem
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.Method, e.Path, e.Status)
	if d := e.Problem.Detail; d != "" {
		msg += ": " + d
	}
	return msg
}

// Is matches the api error kind of the status: api.ErrNotFound (404),
// api.ErrConflict (409), api.ErrUnavailable (503).
func (e *Error) Is(target error) bool {
	switch e.StatusCode {
	case http.StatusNotFound:
		return target == api.ErrNotFound
	case http.StatusConflict:
		return target == api.ErrConflict
	case http.StatusServiceUnavailable:
		return target == api.ErrUnavailable
	}
	return false
}

// Fleet is GET /v1/fleet.
func (c *Client) Fleet(ctx context.Context) (api.Fleet, error) {
	var f api.Fleet
	err := c.do(ctx, http.MethodGet, "/v1/fleet", nil, nil, http.StatusOK, &f)
	return f, err
}

// Observed is GET /v1/observed: the leader's stored observation. A body
// with a field this client does not know is refused (a plan must not be
// made against an observation it only half reads).
func (c *Client) Observed(ctx context.Context) (api.Observed, error) {
	var o api.Observed
	resp, err := c.send(ctx, http.MethodGet, "/v1/observed", nil, nil)
	if err != nil {
		return o, err
	}
	defer resp.Body.Close()
	if err := answer(resp, http.StatusOK); err != nil {
		return o, err
	}
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxObserved))
	dec.DisallowUnknownFields()
	return o, dec.Decode(&o)
}

// Tenants is GET /v1/tenants.
func (c *Client) Tenants(ctx context.Context) (api.TenantList, error) {
	var l api.TenantList
	err := c.do(ctx, http.MethodGet, "/v1/tenants", nil, nil, http.StatusOK, &l)
	return l, err
}

// Tenant is GET /v1/tenants/{id}; its ETag (the If-Match of a change) is
// the answer's ETag field.
func (c *Client) Tenant(ctx context.Context, id string) (api.Tenant, error) {
	var t api.Tenant
	err := c.do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(id), nil, nil, http.StatusOK, &t)
	return t, err
}

// PatchTenant is PATCH /v1/tenants/{id}: patch is a JSON merge patch (RFC
// 7386) of the tenant file, made against version ifMatch: an ETag as the
// header carries it ("…") or as api.Tenant.ETag does (bare, sent quoted).
// An empty ifMatch sends no If-Match, which the server refuses (428) once
// the patch itself is read. correlationID, when not empty, is sent as
// X-Correlation-Id.
func (c *Client) PatchTenant(ctx context.Context, id, ifMatch string, patch []byte, correlationID string) (api.WriteResult, error) {
	h := http.Header{"Content-Type": {"application/merge-patch+json"}}
	if ifMatch != "" {
		h.Set("If-Match", EntityTag(ifMatch))
	}
	if correlationID != "" {
		h.Set("X-Correlation-Id", correlationID)
	}
	var res api.WriteResult
	err := c.do(ctx, http.MethodPatch, "/v1/tenants/"+url.PathEscape(id), patch, h, http.StatusOK, &res)
	return res, err
}

// EntityTag is etag as an If-Match header sends it (RFC 9110, 8.8.3): a
// bare tag (api.Tenant.ETag, api.WriteResult.ETag) quoted, one already
// quoted or weak (W/"…") as it is.
func EntityTag(etag string) string {
	if strings.HasPrefix(etag, `"`) || strings.HasPrefix(etag, `W/"`) {
		return etag
	}
	return `"` + etag + `"`
}

// Wake is POST /v1/tenants/{id}/wake: the tenant's status with the wake
// requested.
func (c *Client) Wake(ctx context.Context, id string) (api.TenantStatus, error) {
	var st api.TenantStatus
	err := c.do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(id)+"/wake", nil, nil, http.StatusAccepted, &st)
	return st, err
}

// Retry is POST /v1/tenants/{id}/retry.
func (c *Client) Retry(ctx context.Context, id string) (api.RetryResult, error) {
	var r api.RetryResult
	err := c.do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(id)+"/retry", nil, nil, http.StatusAccepted, &r)
	return r, err
}

// Act is POST /v1/tenants/{id}/actions: an operator's reboot,
// power_cycle, rebuild, snapshot or backup of the tenant's droplet.
func (c *Client) Act(ctx context.Context, id, action, reason string) (api.ActionResult, error) {
	body, err := json.Marshal(api.ActionRequest{Action: action, Reason: reason})
	if err != nil {
		return api.ActionResult{}, err
	}
	h := http.Header{"Content-Type": {"application/json"}}
	var r api.ActionResult
	err = c.do(ctx, http.MethodPost, "/v1/tenants/"+url.PathEscape(id)+"/actions", body, h, http.StatusAccepted, &r)
	return r, err
}

// do sends a request and decodes a want answer into out.
func (c *Client) do(ctx context.Context, method, path string, body []byte, h http.Header, want int, out any) error {
	resp, err := c.send(ctx, method, path, body, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := answer(resp, want); err != nil {
		return err
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) send(ctx context.Context, method, path string, body []byte, h http.Header) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.hc.Do(req)
}

// answer is nil when resp has status want, else its *Error.
func answer(resp *http.Response, want int) error {
	if resp.StatusCode == want {
		return nil
	}
	e := &Error{Method: resp.Request.Method, Path: resp.Request.URL.Path, StatusCode: resp.StatusCode, Status: resp.Status, Header: resp.Header}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxError))
	if err := json.Unmarshal(data, &e.Problem); err != nil || (e.Problem.Detail == "" && e.Problem.Error == "") {
		e.Problem = api.Problem{Status: resp.StatusCode, Detail: strings.TrimSpace(string(data))}
	}
	if e.Problem.Detail == "" {
		e.Problem.Detail = e.Problem.Error
	}
	return e
}

// Rollouts is GET /v1/rollouts: the newest rollouts, newest first.
func (c *Client) Rollouts(ctx context.Context) (api.RolloutList, error) {
	var l api.RolloutList
	err := c.do(ctx, http.MethodGet, "/v1/rollouts", nil, nil, http.StatusOK, &l)
	return l, err
}

// Rollout is GET /v1/rollouts/{id} ("latest": the newest).
func (c *Client) Rollout(ctx context.Context, id string) (api.Rollout, error) {
	var r api.Rollout
	err := c.do(ctx, http.MethodGet, "/v1/rollouts/"+url.PathEscape(id), nil, nil, http.StatusOK, &r)
	return r, err
}

// RolloutAction is POST /v1/rollouts/{id}/{verb} (pause, resume, abort)
// with an optional reason.
func (c *Client) RolloutAction(ctx context.Context, id, verb, reason string) (api.Rollout, error) {
	var r api.Rollout
	body, err := json.Marshal(api.RolloutAction{Reason: reason})
	if err != nil {
		return r, err
	}
	h := http.Header{"Content-Type": {"application/json"}}
	err = c.do(ctx, http.MethodPost, "/v1/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(verb), body, h, http.StatusOK, &r)
	return r, err
}
