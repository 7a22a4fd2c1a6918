package console

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/store"
)

// stream is an open /console/events answer, read line by line into
// events.
type stream struct {
	t      *testing.T
	resp   *http.Response
	events chan sseEvent
}

// sseEvent is one event of a stream: its name and data.
type sseEvent struct{ name, data string }

// openStream opens the event stream watching ids as b's session.
func (r *rig) openStream(t *testing.T, b *browser, ids ...string) *stream {
	t.Helper()
	q := url.Values{"t": ids}
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.srv.URL+"/console/events?"+q.Encode(), nil)
	hc := *b.hc
	hc.Timeout = 0
	resp, err := hc.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		cancel()
		t.Fatalf("events = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	s := &stream{t: t, resp: resp, events: make(chan sseEvent, 256)}
	go func() {
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			l := sc.Text()
			switch {
			case l == "":
				if ev.name != "" || ev.data != "" {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(l, "event: "):
				ev.name = strings.TrimPrefix(l, "event: ")
			case strings.HasPrefix(l, "data: "):
				ev.data = strings.TrimPrefix(l, "data: ")
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		resp.Body.Close()
	})
	return s
}

// next is the stream's next event named one of names (others are
// skipped), or a test failure after within.
func (s *stream) next(within time.Duration, names ...string) sseEvent {
	s.t.Helper()
	timeout := time.After(within)
	for {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatalf("the stream ended while waiting for %v", names)
			}
			for _, n := range names {
				if ev.name == n {
					return ev
				}
			}
		case <-timeout:
			s.t.Fatalf("no %v event within %s", names, within)
		}
	}
}

// resyncOf decodes a resync event's data.
func resyncOf(t *testing.T, ev sseEvent) map[string]string {
	t.Helper()
	var d resyncEvent
	if err := json.Unmarshal([]byte(ev.data), &d); err != nil || d.Lifecycles == nil {
		t.Fatalf("resync data %q: %v", ev.data, err)
	}
	return d.Lifecycles
}

// waitListening waits for the hub's LISTEN.
func waitListening(t *testing.T, h *Hub) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !listening(h) {
		if time.Now().After(deadline) {
			t.Fatal("hub never listened")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEventsResyncOnOpen: a stream starts with a resync event holding the
// current state of the tenants it watches (a change between the page's
// render and the stream is not lost, nor one while an EventSource
// reconnected); a watched tenant without a status row is left out, and a
// stream that watches nothing gets an empty resync.
func TestEventsResyncOnOpen(t *testing.T) {
	r := newRig(t, false)
	b := r.browser(t)
	b.login(dashToken)
	s := r.openStream(t, b, "ws-beta", "ws-acme", "ws-nobody", "ws-beta")
	got := resyncOf(t, s.next(10*time.Second, "resync", "lifecycle"))
	want := map[string]string{"ws-beta": "HIBERNATED", "ws-acme": "ACTIVE_HEALTHY"}
	if len(got) != len(want) || got["ws-beta"] != want["ws-beta"] || got["ws-acme"] != want["ws-acme"] {
		t.Errorf("first resync %v, want %v", got, want)
	}
	// Reconnecting (as an EventSource does) is resynced again, with what
	// changed meanwhile.
	if _, err := r.st.Pool().Exec(t.Context(), `UPDATE fleet_status SET state = 'WAKING' WHERE workspace = 'ws-beta'`); err != nil {
		t.Fatal(err)
	}
	s2 := r.openStream(t, b, "ws-beta")
	if got := resyncOf(t, s2.next(10*time.Second, "resync", "lifecycle")); got["ws-beta"] != "WAKING" {
		t.Errorf("resync on reconnect %v, want ws-beta WAKING", got)
	}
	s3 := r.openStream(t, b)
	if got := resyncOf(t, s3.next(10*time.Second, "resync", "lifecycle")); len(got) != 0 {
		t.Errorf("resync of a stream watching nothing: %v", got)
	}
	// A watch list that is not workspace ids is refused.
	many := url.Values{}
	for i := range maxWatch + 1 {
		many.Add("t", fmt.Sprintf("ws-%04d", i))
	}
	for _, q := range []string{"t=NOT_AN_ID", "t=" + strings.Repeat("a", 41), "t=%00", many.Encode()} {
		code, body, _ := b.get("/console/events?" + q)
		if code != http.StatusBadRequest || !strings.HasPrefix(body, "t: ") {
			t.Errorf("events?%s = %d %q, want 400 naming t", q, code, body)
		}
	}
}

// TestEventsResyncAfterListenerLost: when the replica's LISTEN connection
// is killed (pg_terminate_backend), a change made while it is down is
// never notified; once the hub listens again every open stream gets a
// resync with the current states, and later changes arrive as lifecycle
// events again.
func TestEventsResyncAfterListenerLost(t *testing.T) {
	r := newRig(t, false)
	ctx := t.Context()
	b := r.browser(t)
	b.login(adminToken)
	// Listening first: the stream's only resync so far is its opening one.
	waitListening(t, r.con.hub)
	s := r.openStream(t, b, "ws-beta", "ws-acme")
	if got := resyncOf(t, s.next(10*time.Second, "resync", "lifecycle")); got["ws-beta"] != "HIBERNATED" {
		t.Fatalf("first resync %v", got)
	}
	// The listener's backend: its last statement was the LISTEN.
	var pid int
	if err := r.st.Pool().QueryRow(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN "`+store.LifecycleChannel+`"'`).Scan(&pid); err != nil {
		t.Fatalf("find the listener's backend: %v", err)
	}
	var killed bool
	if err := r.st.Pool().QueryRow(ctx, `SELECT pg_terminate_backend($1, 5000)`, pid).Scan(&killed); err != nil || !killed {
		t.Fatalf("terminate the listener's backend %d: %v %v", pid, killed, err)
	}
	// The hub waits at least 100 ms before it listens again: this change
	// is made while nobody listens.
	if _, err := r.st.Pool().Exec(ctx, `UPDATE fleet_status SET state = 'WAKING' WHERE workspace = 'ws-beta'`); err != nil {
		t.Fatal(err)
	}
	for {
		ev := s.next(15*time.Second, "resync", "lifecycle")
		if ev.name == "lifecycle" {
			continue // the old connection may have heard it after all
		}
		got := resyncOf(t, ev)
		if got["ws-beta"] != "WAKING" || got["ws-acme"] != "ACTIVE_HEALTHY" {
			t.Fatalf("resync after the listener came back: %v, want ws-beta WAKING, ws-acme ACTIVE_HEALTHY", got)
		}
		break
	}
	var pid2 int
	if err := r.st.Pool().QueryRow(ctx, `SELECT pid FROM pg_stat_activity
		WHERE datname = current_database() AND query = 'LISTEN "`+store.LifecycleChannel+`"'`).Scan(&pid2); err != nil || pid2 == pid {
		t.Errorf("listener backend after the resync: %d (was %d): %v", pid2, pid, err)
	}
	// Listening again: a later change is an event.
	if _, err := r.st.Pool().Exec(ctx, `UPDATE fleet_status SET state = 'PROVISIONING' WHERE workspace = 'ws-beta'`); err != nil {
		t.Fatal(err)
	}
	ev := s.next(10*time.Second, "lifecycle")
	var lc lifecycleEvent
	if err := json.Unmarshal([]byte(ev.data), &lc); err != nil || lc != (lifecycleEvent{Tenant: "ws-beta", Lifecycle: "PROVISIONING"}) {
		t.Errorf("lifecycle event after the resync: %q (%v)", ev.data, err)
	}
}

// TestDroppedEventsResync: a stream whose queue overflows loses events but
// is due a resync, and the resync drops what is still queued (older than
// what it reads).
func TestDroppedEventsResync(t *testing.T) {
	r := newRig(t, false)
	h := r.con.hub
	sub, err := h.subscribe([]string{"ws-acme"})
	if err != nil {
		t.Fatal(err)
	}
	defer h.unsubscribe(sub)
	for range subBuffer + 3 {
		h.broadcast([]byte("event: lifecycle\ndata: {}\n\n"))
	}
	select {
	case reason := <-sub.resync:
		if reason != resyncDropped {
			t.Errorf("resync reason %q, want %q", reason, resyncDropped)
		}
	default:
		t.Fatal("a stream that lost events is not due a resync")
	}
	msg, err := h.resync(t.Context(), sub)
	if err != nil {
		t.Fatal(err)
	}
	if len(sub.ch) != 0 {
		t.Errorf("%d events still queued after the resync", len(sub.ch))
	}
	if want := `event: resync` + "\n" + `data: {"lifecycles":{"ws-acme":"ACTIVE_HEALTHY"}}` + "\n\n"; string(msg) != want {
		t.Errorf("resync %q, want %q", msg, want)
	}
}
