package reconciler

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/watchdog"
)

// TestNotices: a tenant FAILED by the watchdog is one notice per target,
// queued in the outbox (damped: failing again within the window is not a
// second notice); the sender delivers it as JSON to the webhook and as
// text to Slack, retries a target that fails, gives up after its attempts,
// and a target that hangs delays only its own notices.
func TestNotices(t *testing.T) {
	h := watchHarness(t)
	ctx := t.Context()
	var mu sync.Mutex
	var webhook []notify.Notification
	var slack []string
	failures := 2
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if failures > 0 {
			failures--
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		var n notify.Notification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		webhook = append(webhook, n)
	}))
	defer hook.Close()
	slackSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		slack = append(slack, string(b))
		mu.Unlock()
	}))
	defer slackSrv.Close()
	h.rec.cfg.NotifyTargets = []notify.Target{
		{Name: "webhook", Send: (&notify.Webhook{URL: hook.URL}).Send},
		{Name: "slack", Send: (&notify.Slack{URL: slackSrv.URL}).Send},
	}
	h.onboard("ws-a")
	fail := func() {
		t.Helper()
		rows, err := h.store.WatchRows(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Workspace == "ws-a" {
				snap, _ := h.rec.Snapshot()
				h.rec.executor(h.rec.log).Remediation(ctx, snap.Desired(), h.rec.Observed, r,
					watchdog.Remediation{Workspace: "ws-a", Step: watchdog.StepFail, Reason: "the rebuilt droplet was not healthy within 10m0s", Heartbeat: r.LastHeartbeat}, "")
			}
		}
	}
	fail()
	if got := h.lifecycle("ws-a"); got != "FAILED" {
		t.Fatalf("ws-a %s, want FAILED", got)
	}
	if n := h.count(`SELECT count(*) FROM notifications WHERE kind = 'tenant_failed' AND subject = 'ws-a'`); n != 2 {
		t.Fatalf("queued %d notices, want one per target", n)
	}
	// Retried by a person and FAILED again within the damping window:
	// no second notice.
	if err := h.rec.Retry(ctx, "ws-a", "test", "try again"); err != nil {
		t.Fatal(err)
	}
	fail()
	if n := h.count(`SELECT count(*) FROM notifications WHERE kind = 'tenant_failed'`); n != 2 {
		t.Errorf("after flapping: %d notices, want still 2", n)
	}

	s := h.rec.sender()
	s.RetryBase, s.Timeout = time.Millisecond, 2*time.Second
	if sent := s.Deliver(ctx); sent != 1 {
		t.Errorf("first delivery sent %d, want 1 (slack; the webhook is busy)", sent)
	}
	for i := 0; i < 20 && len(webhookCopy(&mu, &webhook)) == 0; i++ {
		time.Sleep(20 * time.Millisecond) // past the retry's backoff
		s.Deliver(ctx)
	}
	ws := webhookCopy(&mu, &webhook)
	if len(ws) != 1 || ws[0].Kind != notify.TenantFailed || ws[0].Workspace != "ws-a" || !strings.Contains(ws[0].Detail, "not healthy within") {
		t.Errorf("webhook got %+v", ws)
	}
	mu.Lock()
	if len(slack) != 1 || !strings.Contains(slack[0], `"text":"[genesis] tenant ws-a FAILED`) {
		t.Errorf("slack got %q", slack)
	}
	mu.Unlock()
	if n := h.count(`SELECT count(*) FROM notifications WHERE sent_at IS NOT NULL`); n != 2 {
		t.Errorf("%d notices recorded sent, want 2", n)
	}

	// A target that hangs and one that always fails.
	hang := make(chan struct{})
	stuck := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer stuck.Close()
	defer close(hang) // before Close, which waits for the handler
	h.rec.cfg.NotifyTargets = []notify.Target{
		{Name: "stuck", Send: (&notify.Webhook{URL: stuck.URL}).Send},
		{Name: "broken", Send: func(context.Context, notify.Notification) error { return errors.New("refused") }},
	}
	if err := h.rec.queueNotice(ctx, notify.Notification{Kind: notify.AccountFailing, Account: "acct-b", Summary: "acct-b fails"}); err != nil {
		t.Fatal(err)
	}
	s = h.rec.sender()
	s.RetryBase, s.Timeout, s.MaxAttempts = time.Millisecond, 100*time.Millisecond, 2
	start := time.Now()
	s.Deliver(ctx)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("a hanging target held the sender %s", took)
	}
	for range 10 {
		time.Sleep(20 * time.Millisecond)
		s.Deliver(ctx)
	}
	if n := h.count(`SELECT count(*) FROM notifications WHERE kind = 'account_failing' AND gave_up_at IS NOT NULL`); n != 2 {
		t.Errorf("%d account notices given up after their attempts, want 2", n)
	}
}

func webhookCopy(mu *sync.Mutex, ns *[]notify.Notification) []notify.Notification {
	mu.Lock()
	defer mu.Unlock()
	return append([]notify.Notification(nil), *ns...)
}
