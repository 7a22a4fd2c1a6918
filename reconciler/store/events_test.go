package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
)

func TestParseEvent(t *testing.T) {
	for _, tc := range []struct {
		payload string
		want    Event
		err     string
	}{
		{"fetch", Event{Kind: EventFetch}, ""},
		{"observed", Event{Kind: EventObserved}, ""},
		{"wake ws-acme", Event{Kind: EventWake, Workspace: "ws-acme"}, ""},
		{"retry ws-0123456789012345678901234567890123456", Event{Kind: EventRetry, Workspace: "ws-0123456789012345678901234567890123456"}, ""},
		{"", Event{}, `event: unknown kind ""`},
		{"destroy ws-acme", Event{}, `event: unknown kind "destroy"`},
		{"FETCH", Event{}, `unknown kind "FETCH"`},
		{"fetch now", Event{}, `event fetch: unexpected argument "now"`},
		{"fetch ", Event{}, `event fetch: unexpected argument ""`},
		{"observed 1", Event{}, `event observed: unexpected argument "1"`},
		{"wake", Event{}, "event wake: workspace missing"},
		{"wake ", Event{}, `event wake: workspace "" is not a workspace id`},
		{"wake  ws-acme", Event{}, `workspace " ws-acme" is not a workspace id`},
		{"wake ws-acme ", Event{}, `workspace "ws-acme " is not a workspace id`},
		{"wake ws-acme ws-other", Event{}, `workspace "ws-acme ws-other" is not a workspace id`},
		{"retry WS_ACME", Event{}, `event retry: workspace "WS_ACME" is not a workspace id`},
		{"retry ws", Event{}, `workspace "ws" is not a workspace id`},
		{"wake ws-acme\n", Event{}, `is not a workspace id`},
		{"wake " + strings.Repeat("a", 60), Event{}, "event: payload of 65 bytes, at most 64"},
	} {
		t.Run(tc.payload, func(t *testing.T) {
			got, err := ParseEvent(tc.payload)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if got.Payload() != tc.payload {
				t.Errorf("payload %q, want %q", got.Payload(), tc.payload)
			}
		})
	}
}

// FuzzParseEvent: any payload parses or is refused with an error, never a
// panic; what parses is written back as the same payload.
func FuzzParseEvent(f *testing.F) {
	for _, s := range []string{"fetch", "observed", "wake ws-acme", "retry ws-a-b", "wake", "wake  x", "retry \x00", "fetch\t"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		ev, err := ParseEvent(payload)
		if err != nil {
			if ev != (Event{}) {
				t.Errorf("%q: error %v with event %+v", payload, err, ev)
			}
			return
		}
		if ev.Payload() != payload {
			t.Errorf("%q parsed as %+v, written back as %q", payload, ev, ev.Payload())
		}
	})
}

// listen follows EventChannel on s until the test ends and returns the
// payloads received.
func listen(t *testing.T, s *Store) <-chan string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan string, 16)
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- s.Listen(ctx, func() { close(ready) }, func(p string) { got <- p }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Listen: %v", err)
	}
	return got
}

// next is the next payload, or "" after a while without one.
func next(got <-chan string, wait time.Duration) string {
	select {
	case p := <-got:
		return p
	case <-time.After(wait):
		return ""
	}
}

// TestEventsInTransaction: a wake and a retry announce themselves when
// (and only when) their write commits; a refused one announces nothing; an
// event published on its own arrives as sent.
func TestEventsInTransaction(t *testing.T) {
	s, url := open(t)
	ctx := t.Context()
	got := listen(t, s)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `INSERT INTO fleet_status (workspace, state, desired_state, account, snapshot_id) VALUES
		('ws-hib', 'HIBERNATED', 'running', 'acct-a', '42'), ('ws-failed', 'FAILED', 'running', NULL, NULL), ('ws-up', 'PENDING', 'running', NULL, NULL)`); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		do   func() error
		err  error
		want string
	}{
		{"wake", func() error { return s.RequestWake(ctx, "ws-hib", "t") }, nil, "wake ws-hib"},
		{"wake again", func() error { return s.RequestWake(ctx, "ws-hib", "t") }, nil, "wake ws-hib"},
		{"wake of a running tenant", func() error { return s.RequestWake(ctx, "ws-up", "t") }, ErrNotHibernated, ""},
		{"wake of an unknown tenant", func() error { return s.RequestWake(ctx, "ws-nobody", "t") }, ErrUnknownTenant, ""},
		{"retry", func() error { return s.RetryTenant(ctx, "ws-failed", "t", "r", "") }, nil, "retry ws-failed"},
		{"retry of a tenant not FAILED", func() error { return s.RetryTenant(ctx, "ws-up", "t", "r", "") }, ErrNotFailed, ""},
		{"fetch", func() error { return s.Publish(ctx, Event{Kind: EventFetch}) }, nil, "fetch"},
		{"bad event refused before sending", func() error {
			if err := s.Publish(ctx, Event{Kind: EventWake, Workspace: "WS"}); err == nil {
				return errors.New("published")
			}
			return nil
		}, nil, ""},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			err := st.do()
			if st.err != nil && !errors.Is(err, st.err) || st.err == nil && err != nil {
				t.Fatalf("err = %v, want %v", err, st.err)
			}
			wait := 5 * time.Second
			if st.want == "" {
				wait = 300 * time.Millisecond
			}
			if diff := cmp.Diff(next(got, wait), st.want); diff != "" {
				t.Errorf("notification (-got +want):\n%s", diff)
			}
		})
	}
}

// TestListenEndsWithConnection: a listening session whose connection is
// terminated returns ErrListenerLost (the caller reconnects and resyncs).
func TestListenEndsWithConnection(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	pid := make(chan uint32, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.Listen(ctx, func() {
			var p uint32
			s.pool.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`).Scan(&p)
			pid <- p
		}, func(string) {})
	}()
	p := <-pid
	if p == 0 {
		t.Fatal("listening session not found")
	}
	if _, err := s.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, p); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrListenerLost) {
		t.Errorf("Listen = %v, want ErrListenerLost", err)
	}
}
