package n8n

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Secret rotation through n8n's REST API (the owner's session): make a new
// API key, list and delete keys, change the owner's password. The caller
// orders them so that nothing old is given up before the new one works.

// Session is a logged-in owner session (its headers carry the n8n-auth
// cookie). Secret: never logged.
type Session struct{ hdr map[string]string }

// Login logs in as the owner and returns the session.
func (c *Client) Login(ctx context.Context, email, password string) (*Session, error) {
	hdr := map[string]string{"browser-id": rand.Text()}
	login := map[string]string{"emailOrLdapLoginId": email, "password": password}
	resp, err := c.call(ctx, request{method: http.MethodPost, path: "/rest/login", body: login, header: hdr}, nil)
	if err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	for _, ck := range (&http.Response{Header: resp.header}).Cookies() {
		if ck.Name == "n8n-auth" && ck.Value != "" {
			hdr["Cookie"] = ck.Name + "=" + ck.Value
			return &Session{hdr: hdr}, nil
		}
	}
	return nil, fmt.Errorf("login: n8n set no n8n-auth cookie")
}

// APIKey is an API key as n8n lists it (the key itself redacted).
type APIKey struct {
	ID    string `json:"id"`
	Label string `json:"label"`
}

// NewAPIKey makes an API key with every scope the owner has and returns
// its id and the key (shown once).
func (c *Client) NewAPIKey(ctx context.Context, s *Session) (id, key string, err error) {
	var scopes struct {
		Data []string `json:"data"`
	}
	if _, err := c.call(ctx, request{method: http.MethodGet, path: "/rest/api-keys/scopes", header: s.hdr}, &scopes); err != nil {
		return "", "", fmt.Errorf("api key scopes: %w", err)
	}
	if len(scopes.Data) == 0 {
		return "", "", fmt.Errorf("n8n offered no api key scopes")
	}
	base := c.label
	if len(base) > 40 {
		base = base[:40]
	}
	var out struct {
		Data struct {
			ID        string `json:"id"`
			RawAPIKey string `json:"rawApiKey"`
		} `json:"data"`
	}
	for attempt := 1; ; attempt++ {
		body := map[string]any{"label": base + "-" + rand.Text()[:8], "scopes": scopes.Data, "expiresAt": nil}
		_, err := c.call(ctx, request{method: http.MethodPost, path: "/rest/api-keys", body: body, header: s.hdr}, &out)
		if err == nil {
			break
		}
		// A second key within the same second clashes (see Bootstrap).
		if attempt == 3 || StatusOf(err) != http.StatusInternalServerError || !strings.Contains(err.Error(), "already an entry") {
			return "", "", fmt.Errorf("create api key: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(1100 * time.Millisecond):
		}
	}
	if out.Data.RawAPIKey == "" || out.Data.ID == "" {
		return "", "", fmt.Errorf("create api key: n8n returned no id or rawApiKey")
	}
	return out.Data.ID, out.Data.RawAPIKey, nil
}

// APIKeys lists the owner's API keys.
func (c *Client) APIKeys(ctx context.Context, s *Session) ([]APIKey, error) {
	var out struct {
		Data []APIKey `json:"data"`
	}
	if _, err := c.call(ctx, request{method: http.MethodGet, path: "/rest/api-keys", header: s.hdr}, &out); err != nil {
		return nil, fmt.Errorf("list api keys: %w", err)
	}
	return out.Data, nil
}

// DeleteAPIKey deletes the API key id (a missing one is no error).
func (c *Client) DeleteAPIKey(ctx context.Context, s *Session, id string) error {
	_, err := c.call(ctx, request{method: http.MethodDelete, path: "/rest/api-keys/" + url.PathEscape(id), header: s.hdr}, nil)
	if err != nil && !IsNotFound(err) {
		return fmt.Errorf("delete api key %s: %w", id, err)
	}
	return nil
}

// ChangePassword changes the owner's password from current to next.
func (c *Client) ChangePassword(ctx context.Context, s *Session, current, next string) error {
	body := map[string]string{"currentPassword": current, "newPassword": next}
	if _, err := c.call(ctx, request{method: http.MethodPatch, path: "/rest/me/password", body: body, header: s.hdr}, nil); err != nil {
		return fmt.Errorf("change owner password: %w", err)
	}
	return nil
}

// CheckKey makes one cheap public API call with the client's API key
// (lists one workflow): nil when n8n accepts the key.
func (c *Client) CheckKey(ctx context.Context) error {
	_, err := c.call(ctx, request{method: http.MethodGet, path: api + "/workflows", query: url.Values{"limit": {"1"}}, public: true}, nil)
	return err
}
