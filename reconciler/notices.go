package reconciler

import (
	"context"
	"time"

	"genesis.dev/fleet/reconciler/notify"
	"genesis.dev/fleet/reconciler/store"
)

// DefaultNoticeDamping is how long the same notice about the same subject
// is not queued again (Config.NoticeDamping's default).
const DefaultNoticeDamping = time.Hour

// queueNotice puts n in the outbox for every configured target (none: it
// is only logged where it happened). The leader's sender delivers it.
func (r *Reconciler) queueNotice(ctx context.Context, n notify.Notification) error {
	if len(r.cfg.NotifyTargets) == 0 {
		return nil
	}
	if n.At.IsZero() {
		n.At = r.cfg.Now().UTC()
	}
	subject := n.Subject()
	names := make([]string, len(r.cfg.NotifyTargets))
	for i, t := range r.cfg.NotifyTargets {
		names[i] = t.Name
	}
	_, err := r.cfg.Store.QueueNotice(ctx, string(n.Kind), subject, n, names, r.cfg.NoticeDamping)
	return err
}

// Notice queues n for the configured targets, deduplicated and damped per
// kind and subject (the rollouts executor and the backup service's
// producers, which run beside the loop).
func (r *Reconciler) Notice(ctx context.Context, n notify.Notification) error {
	return r.queueNotice(ctx, n)
}

// sender is the outbox's deliverer for the configured targets.
func (r *Reconciler) sender() *notify.Sender {
	return &notify.Sender{Outbox: outbox{r.cfg.Store}, Targets: r.cfg.NotifyTargets, Log: r.log.With("component", "notify"),
		Result: func(k notify.Kind, result string) {
			r.cfg.Metrics.exec.Notifications.WithLabelValues(string(k), result).Inc()
		}}
}

// DeliverNotices sends the outbox's due notices once (the leader's sender
// does it every few seconds; tests call it).
func (r *Reconciler) DeliverNotices(ctx context.Context) int { return r.sender().Deliver(ctx) }

// outbox is the store as notify.Outbox.
type outbox struct{ s *store.Store }

func (o outbox) Claim(ctx context.Context, limit int, lease time.Duration) ([]notify.Queued, error) {
	ns, err := o.s.ClaimNotices(ctx, limit, lease)
	out := make([]notify.Queued, len(ns))
	for i, n := range ns {
		out[i] = notify.Queued{ID: n.ID, Target: n.Target, Body: n.Body, Attempts: n.Attempts}
	}
	return out, err
}

func (o outbox) Sent(ctx context.Context, id int64) error { return o.s.NoticeSent(ctx, id) }

func (o outbox) Failed(ctx context.Context, id int64, msg string, retry time.Duration, giveUp bool) error {
	return o.s.NoticeFailed(ctx, id, msg, retry, giveUp)
}
