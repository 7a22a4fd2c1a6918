package notify

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"
)

// Target is one place notices go, by name (webhook, slack).
type Target struct {
	Name string
	Send func(ctx context.Context, n Notification) error
}

// Outbox is where queued notices are claimed and settled (the store).
type Outbox interface {
	// Claim leases up to limit due notices for lease.
	Claim(ctx context.Context, limit int, lease time.Duration) ([]Queued, error)
	// Sent and Failed settle one.
	Sent(ctx context.Context, id int64) error
	Failed(ctx context.Context, id int64, msg string, retry time.Duration, giveUp bool) error
}

// Queued is a notice claimed for delivery to Target.
type Queued struct {
	ID       int64
	Target   string
	Body     json.RawMessage
	Attempts int
}

// Sender delivers the outbox's notices: each to its target, one try per
// claim, a failed one again after a backoff (RetryBase doubling up to
// RetryMax) until MaxAttempts, then given up (logged). A target's call is
// bounded by Timeout, so one that hangs delays only its own notices.
type Sender struct {
	Outbox  Outbox
	Targets []Target
	// Every is how often the outbox is polled (default 5 s).
	Every time.Duration
	// Timeout bounds one delivery (default 10 s).
	Timeout time.Duration
	// RetryBase, RetryMax and MaxAttempts shape the retries (defaults
	// 10 s, 10 min, 12).
	RetryBase, RetryMax time.Duration
	MaxAttempts         int
	// Result counts deliveries by kind and result (sent, retry, gave_up);
	// nil: not counted.
	Result func(kind Kind, result string)
	Log    *slog.Logger
}

// Run delivers until ctx ends.
func (s *Sender) Run(ctx context.Context) {
	t := time.NewTicker(or(s.Every, 5*time.Second))
	defer t.Stop()
	for {
		s.Deliver(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Deliver sends what is due now and returns how many were sent.
func (s *Sender) Deliver(ctx context.Context) int {
	log := s.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := or(s.Timeout, 10*time.Second)
	due, err := s.Outbox.Claim(ctx, 100, 2*timeout)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("claim notices failed", "err", err)
		}
		return 0
	}
	sent := 0
	for _, q := range due {
		var n Notification
		if err := json.Unmarshal(q.Body, &n); err != nil {
			_ = s.Outbox.Failed(ctx, q.ID, "not a notification: "+err.Error(), 0, true)
			continue
		}
		send := s.target(q.Target)
		if send == nil {
			// A target no longer configured: nobody to tell.
			_ = s.Outbox.Failed(ctx, q.ID, "target "+q.Target+" is not configured", 0, true)
			s.count(n.Kind, "gave_up")
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, timeout)
		err := send(sctx, n)
		cancel()
		if err == nil {
			if err := s.Outbox.Sent(ctx, q.ID); err != nil {
				log.Warn("record a sent notice failed (it may be sent again)", "id", q.ID, "err", err)
			}
			s.count(n.Kind, "sent")
			sent++
			continue
		}
		attempt := q.Attempts + 1
		giveUp := attempt >= or(s.MaxAttempts, 12)
		retry := min(or(s.RetryBase, 10*time.Second)<<min(attempt-1, 16), or(s.RetryMax, 10*time.Minute))
		if giveUp {
			log.Error("notice given up", "kind", n.Kind, "target", q.Target, "attempts", attempt, "err", err)
			s.count(n.Kind, "gave_up")
		} else {
			log.Warn("notice not delivered; retrying", "kind", n.Kind, "target", q.Target, "attempt", attempt, "retry_in", retry, "err", err)
			s.count(n.Kind, "retry")
		}
		if ferr := s.Outbox.Failed(ctx, q.ID, err.Error(), retry, giveUp); ferr != nil {
			log.Warn("record a failed notice failed", "id", q.ID, "err", ferr)
		}
	}
	return sent
}

func (s *Sender) target(name string) func(context.Context, Notification) error {
	for _, t := range s.Targets {
		if t.Name == name {
			return t.Send
		}
	}
	return nil
}

func (s *Sender) count(k Kind, result string) {
	if s.Result != nil {
		s.Result(k, result)
	}
}

func or[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
