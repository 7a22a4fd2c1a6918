// Package notify sends the notices the reconciler owes tenants' owners (an
// idle warning before a hibernation) to an outside endpoint: one JSON
// document POSTed per notice, to genesis-reconciler's --notify-url. It
// knows nothing of the fleet; it must not import the store, the cloud or
// the reconciler.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Kind is what a notification is about.
type Kind string

// Notification kinds.
const (
	// IdleWarning: the tenant will be hibernated for idleness at
	// HibernateAt at the earliest unless n8n runs something before.
	IdleWarning Kind = "idle_warning"
)

// Notification is the JSON body POSTed to --notify-url.
type Notification struct {
	Kind         Kind      `json:"kind"`
	Workspace    string    `json:"workspace"`
	LastActivity time.Time `json:"last_activity"`
	AfterIdle    string    `json:"after_idle"`
	HibernateAt  time.Time `json:"hibernate_at"`
	WarnedAt     time.Time `json:"warned_at"`
}

// Webhook POSTs notifications as JSON to a URL (genesis-reconciler
// --notify-url). A 2xx answer is success; anything else is an error (the
// warning stays recorded and is not sent again).
type Webhook struct {
	URL    string
	Client *http.Client // default: a client with a 10 s timeout
}

// Send POSTs n.
func (s *Webhook) Send(ctx context.Context, n Notification) error {
	body, err := json.Marshal(n)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("notify: %s answered %s", s.URL, resp.Status)
	}
	return nil
}
