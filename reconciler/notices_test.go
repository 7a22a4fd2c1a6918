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

// TestWatchNotices: a watchdog run tells people of a tenant past its
// lifecycle state's deadline (with the step it takes) and of an operator's
// action still not taken past Config.OperatorRequestDeadline — once per
// tenant within the damping window, and not for a request taken in that
// very run.
func TestWatchNotices(t *testing.T) {
	h := watchHarness(t)
	ctx := t.Context()
	h.rec.cfg.NotifyTargets = []notify.Target{{Name: "webhook", Send: func(context.Context, notify.Notification) error { return nil }}}
	h.onboard("ws-a", "ws-b", "ws-c")
	now := h.sim.Sim.Now()
	// ws-a never got past its boot: past the boot deadline.
	h.exec(`UPDATE fleet_status SET state = 'INITIALIZING', state_since = $1 WHERE workspace = 'ws-a'`, now.Add(-24*time.Hour))
	// ws-b: a reboot asked an hour ago of a tenant that is hibernating
	// since (an operator's step runs only on a running droplet).
	if err := h.rec.Operate(ctx, "ws-b", "reboot", "ops", "ticket 4711"); err != nil {
		t.Fatal(err)
	}
	h.exec(`UPDATE fleet_status SET state = 'HIBERNATING', operator_requested_at = $1 WHERE workspace = 'ws-b'`, now.Add(-time.Hour))
	// ws-c: a reboot asked as long ago, taken in this run.
	if err := h.rec.Operate(ctx, "ws-c", "reboot", "ops", "ticket 4712"); err != nil {
		t.Fatal(err)
	}
	h.exec(`UPDATE fleet_status SET operator_requested_at = $1 WHERE workspace = 'ws-c'`, now.Add(-time.Hour))
	h.beat("ws-c", true)
	d := h.watch()
	if len(d.Overdue) != 1 || d.Overdue[0].Workspace != "ws-a" {
		t.Fatalf("overdue %+v, want ws-a", d.Overdue)
	}
	type row struct{ kind, subject, summary, detail string }
	read := func() []row {
		rows, err := h.store.Pool().Query(ctx, `SELECT kind, subject, body->>'summary', body->>'detail' FROM notifications ORDER BY id`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []row
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.kind, &r.subject, &r.summary, &r.detail); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		return out
	}
	got := read()
	if len(got) != 2 {
		t.Fatalf("notices %+v, want ws-a stuck and ws-b's request", got)
	}
	if g := got[0]; g.kind != "stuck" || g.subject != "ws-a" || !strings.Contains(g.summary, "past the boot deadline") || g.detail != "the watchdog's step: rebuild" {
		t.Errorf("stuck notice %+v", g)
	}
	if g := got[1]; g.kind != "operator_request_stuck" || g.subject != "ws-b" || !strings.Contains(g.summary, "reboot of ws-b, asked by ops 1h0m0s ago, was not taken") ||
		!strings.Contains(g.detail, "HIBERNATING") || !strings.Contains(g.detail, "ticket 4711") {
		t.Errorf("request notice %+v", g)
	}
	// The next run: still overdue and still not taken, but damped.
	h.watch()
	if n := len(read()); n != 2 {
		t.Errorf("%d notices after a second run, want 2 (damped)", n)
	}
}
