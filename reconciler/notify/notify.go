// Package notify sends the notices the reconciler owes people — an idle
// warning before a hibernation, a tenant FAILED, an account failing — to
// outside endpoints: one JSON document POSTed per notice to
// genesis-reconciler's --notify-url, and a Slack-compatible {"text": ...}
// to --notify-slack-url. The reconciler queues notices in Postgres (the
// outbox, deduplicated and flap-damped there) and a Sender delivers them
// with retries and backoff, so a slow or failing target never blocks the
// loop. It knows nothing of the fleet; it must not import the store, the
// cloud or the reconciler.
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
	// TenantFailed: the watchdog's remediation is exhausted (or nothing
	// could be rebuilt): a person must act (POST /v1/tenants/{id}/retry).
	TenantFailed Kind = "tenant_failed"
	// AccountFailing: creates moved away from an account that kept
	// failing (a 5xx storm, timeouts, a refused token).
	AccountFailing Kind = "account_failing"
	// Stuck: a tenant is past its lifecycle state's deadline (the
	// watchdog takes its step; a person should know it happened).
	Stuck Kind = "stuck"
	// OperatorRequestStuck: an operator's action was not taken within
	// its deadline (the tenant left its running state, or kept changing).
	OperatorRequestStuck Kind = "operator_request_stuck"
	// RolloutPaused: a rollout stopped at a wave's failure budget (or
	// rolled back): a person resumes or aborts it.
	RolloutPaused Kind = "rollout_paused"
	// RecoveryPointStale: a tenant's newest copy (backup or snapshot) is
	// older than its tier's recovery-point objective; past a handful of
	// tenants, one notice for the fleet names the count.
	RecoveryPointStale Kind = "recovery_point_stale"
	// SLOBurn: a tier's availability is burning its error budget fast.
	SLOBurn Kind = "slo_burn"
)

// Kinds lists every kind (metrics are initialised for each).
func Kinds() []Kind {
	return []Kind{IdleWarning, TenantFailed, AccountFailing, Stuck, OperatorRequestStuck, RolloutPaused, RecoveryPointStale, SLOBurn}
}

// Notification is the JSON body POSTed to --notify-url. An idle warning
// carries the idle fields; the others Summary and Detail.
type Notification struct {
	Kind         Kind      `json:"kind"`
	Workspace    string    `json:"workspace,omitempty"`
	Account      string    `json:"account,omitempty"`
	Rollout      string    `json:"rollout,omitempty"`
	Tier         string    `json:"tier,omitempty"`
	LastActivity time.Time `json:"last_activity,omitzero"`
	AfterIdle    string    `json:"after_idle,omitempty"`
	HibernateAt  time.Time `json:"hibernate_at,omitzero"`
	WarnedAt     time.Time `json:"warned_at,omitzero"`
	// Summary is one line for people; Detail the why.
	Summary string    `json:"summary,omitempty"`
	Detail  string    `json:"detail,omitempty"`
	At      time.Time `json:"at,omitzero"`
}

// Subject is what n is about, for deduplication: its workspace, account,
// rollout or tier, else the fleet.
func (n Notification) Subject() string {
	for _, s := range []string{n.Workspace, n.Account, n.Rollout, n.Tier} {
		if s != "" {
			return s
		}
	}
	return "fleet"
}

// Text is n as one line of text (the Slack body).
func (n Notification) Text() string {
	switch {
	case n.Kind == IdleWarning:
		return fmt.Sprintf("%s is idle since %s and will be hibernated at %s unless n8n runs something before",
			n.Workspace, n.LastActivity.UTC().Format(time.RFC3339), n.HibernateAt.UTC().Format(time.RFC3339))
	case n.Detail != "":
		return n.Summary + ": " + n.Detail
	}
	return n.Summary
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
	return post(ctx, s.Client, s.URL, body)
}

// Slack POSTs notifications as a Slack incoming webhook's {"text": ...}
// (genesis-reconciler --notify-slack-url; Mattermost and others take the
// same body).
type Slack struct {
	URL    string
	Client *http.Client // default: a client with a 10 s timeout
}

// Send POSTs n's text.
func (s *Slack) Send(ctx context.Context, n Notification) error {
	body, err := json.Marshal(map[string]string{"text": "[genesis] " + n.Text()})
	if err != nil {
		return err
	}
	return post(ctx, s.Client, s.URL, body)
}

// post POSTs a JSON body to url; a 2xx answer is success.
func post(ctx context.Context, c *http.Client, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("notify: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
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
		return fmt.Errorf("notify: %s answered %s", url, resp.Status)
	}
	return nil
}
