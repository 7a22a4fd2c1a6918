package n8n

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Owner names given to the instance owner Bootstrap creates.
const (
	ownerFirstName = "Genesis"
	ownerLastName  = "Agent"
)

// Bootstrap makes a fresh or already set-up n8n usable by the agent and
// returns a new public API key with every scope the owner has. It creates
// the owner with email and password, or logs in as it when n8n says the
// owner is already set up. The key is returned once; the caller stores it.
func (c *Client) Bootstrap(ctx context.Context, email, password string) (string, error) {
	// n8n may bind the session to a browser id; send one consistently.
	hdr := map[string]string{"browser-id": rand.Text()}
	cookie, err := c.ownerSetup(ctx, email, password, hdr)
	if err != nil {
		return "", err
	}
	hdr["Cookie"] = cookie

	var scopes struct {
		Data []string `json:"data"`
	}
	if _, err := c.call(ctx, request{method: http.MethodGet, path: "/rest/api-keys/scopes", header: hdr}, &scopes); err != nil {
		return "", fmt.Errorf("bootstrap: %w", err)
	}
	if len(scopes.Data) == 0 {
		return "", fmt.Errorf("bootstrap: n8n offered no api key scopes")
	}
	// n8n 1.123 refuses a second key with the same label, and a second key
	// for the same user within the same second (the key is a JWT of user
	// and issue time, unique in the database), both with 500 "There is
	// already an entry with this name". Labels are at most 50 characters.
	// So each key gets the label with a random suffix, and a clash is
	// retried after a second.
	base := c.label
	if len(base) > 40 {
		base = base[:40]
	}
	var label string
	var key struct {
		Data struct {
			RawAPIKey string `json:"rawApiKey"`
		} `json:"data"`
	}
	for attempt := 1; ; attempt++ {
		label = base + "-" + rand.Text()[:8]
		body := map[string]any{"label": label, "scopes": scopes.Data, "expiresAt": nil}
		_, err := c.call(ctx, request{method: http.MethodPost, path: "/rest/api-keys", body: body, header: hdr}, &key)
		if err == nil {
			break
		}
		if attempt == 3 || StatusOf(err) != http.StatusInternalServerError || !strings.Contains(err.Error(), "already an entry") {
			return "", fmt.Errorf("bootstrap: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("bootstrap: %w", ctx.Err())
		case <-time.After(1100 * time.Millisecond):
		}
	}
	if key.Data.RawAPIKey == "" {
		return "", fmt.Errorf("bootstrap: n8n returned no rawApiKey")
	}
	c.log.InfoContext(ctx, "n8n api key created", "label", label, "scopes", len(scopes.Data))
	return key.Data.RawAPIKey, nil
}

// ownerSetup creates the owner, or logs in when it exists, and returns the
// "n8n-auth=..." cookie to send.
func (c *Client) ownerSetup(ctx context.Context, email, password string, hdr map[string]string) (string, error) {
	setup := map[string]string{"email": email, "firstName": ownerFirstName, "lastName": ownerLastName, "password": password}
	resp, err := c.call(ctx, request{method: http.MethodPost, path: "/rest/owner/setup", body: setup, header: hdr}, nil)
	switch {
	case err == nil:
		c.log.InfoContext(ctx, "n8n owner created")
	case StatusOf(err) == http.StatusBadRequest && strings.Contains(err.Error(), "already setup"):
		login := map[string]string{"emailOrLdapLoginId": email, "password": password}
		resp, err = c.call(ctx, request{method: http.MethodPost, path: "/rest/login", body: login, header: hdr}, nil)
		if err != nil {
			return "", fmt.Errorf("bootstrap: owner exists, login: %w", err)
		}
	default:
		return "", fmt.Errorf("bootstrap: owner setup: %w", err)
	}
	for _, ck := range (&http.Response{Header: resp.header}).Cookies() {
		if ck.Name == "n8n-auth" && ck.Value != "" {
			return ck.Name + "=" + ck.Value, nil
		}
	}
	return "", fmt.Errorf("bootstrap: n8n set no n8n-auth cookie")
}
