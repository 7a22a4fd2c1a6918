package store

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
)

// EventChannel is the Postgres notification channel that makes every
// replica equal to callers (ARCHITECTURE.md, day-2 rule 6): whichever
// replica takes a push webhook, a dashboard commit, a wake or a retry
// announces it here, in the transaction of its write when it has one, and
// the leader, which LISTENs like every replica, acts at once instead of at
// its next poll or resync. Payloads (Event.Payload, ParseEvent):
//
//	fetch          a commit was pushed: fetch the state repository now
//	wake <ws>      a wake of workspace <ws> was requested
//	retry <ws>     a FAILED workspace <ws> was retried
//	observed       the leader stored a new observation (observed.go)
//
// Notifications are not durable: a replica whose listening connection
// dropped may have missed some, so on every (re)connect the leader fetches
// and runs a full pass.
const EventChannel = "genesis_reconciler"

// EventKind is what an Event announces.
type EventKind string

// The event kinds.
const (
	EventFetch    EventKind = "fetch"
	EventWake     EventKind = "wake"
	EventRetry    EventKind = "retry"
	EventObserved EventKind = "observed"
)

// Event is one notification on EventChannel.
type Event struct {
	Kind EventKind
	// Workspace is the tenant of a wake or retry ("" for the others).
	Workspace string
}

// maxEventPayload bounds a payload (the longest valid one is a retry of a
// 40-character workspace id).
const maxEventPayload = 64

var eventWorkspace = regexp.MustCompile(`^[a-z0-9-]{3,40}$`)

// Payload is e as sent on EventChannel.
func (e Event) Payload() string {
	if e.Workspace == "" {
		return string(e.Kind)
	}
	return string(e.Kind) + " " + e.Workspace
}

// ParseEvent reads a payload of EventChannel. It is outside input (anyone
// who can connect to the database can NOTIFY), so it accepts exactly the
// forms above: one space between fields, no other whitespace, a workspace
// id in the form of tenants/<id>.yaml.
func ParseEvent(payload string) (Event, error) {
	if len(payload) > maxEventPayload {
		return Event{}, fmt.Errorf("event: payload of %d bytes, at most %d", len(payload), maxEventPayload)
	}
	kind, arg, hasArg := strings.Cut(payload, " ")
	switch k := EventKind(kind); k {
	case EventFetch, EventObserved:
		if hasArg {
			return Event{}, fmt.Errorf("event %s: unexpected argument %q", k, arg)
		}
		return Event{Kind: k}, nil
	case EventWake, EventRetry:
		if !hasArg {
			return Event{}, fmt.Errorf("event %s: workspace missing", k)
		}
		if !eventWorkspace.MatchString(arg) {
			return Event{}, fmt.Errorf("event %s: workspace %q is not a workspace id ([a-z0-9-]{3,40})", k, arg)
		}
		return Event{Kind: k, Workspace: arg}, nil
	}
	return Event{}, fmt.Errorf("event: unknown kind %q", kind)
}

// publish sends e on EventChannel through tx: it is delivered when (and
// only if) tx commits.
func publish(ctx context.Context, tx pgx.Tx, e Event) error {
	if _, err := ParseEvent(e.Payload()); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, EventChannel, e.Payload()); err != nil {
		return fmt.Errorf("notify %s: %w", e.Kind, err)
	}
	return nil
}

// Publish sends e on EventChannel on its own (for calls that write
// nothing, such as a push webhook).
func (s *Store) Publish(ctx context.Context, e Event) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return publish(ctx, tx, e) })
}

// ErrListenerLost wraps the reason a Listen session ended.
var ErrListenerLost = errors.New("event listener lost")

// Listen follows EventChannel on a dedicated connection (not the pool's):
// once LISTEN is in place it calls ready, then handle with each payload,
// until ctx ends (nil) or the connection fails (an error wrapping
// ErrListenerLost). handle runs on Listen's goroutine and should return
// promptly.
func (s *Store) Listen(ctx context.Context, ready func(), handle func(payload string)) error {
	return s.listen(ctx, EventChannel, ready, handle)
}

// listen follows channel as Listen describes.
func (s *Store) listen(ctx context.Context, channel string, ready func(), handle func(payload string)) error {
	conn, err := pgx.ConnectConfig(ctx, s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("%w: connect: %w", ErrListenerLost, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return fmt.Errorf("%w: listen: %w", ErrListenerLost, err)
	}
	ready()
	for {
		n, err := conn.WaitForNotification(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%w: %w", ErrListenerLost, err)
		}
		handle(n.Payload)
	}
}
