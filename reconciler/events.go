package reconciler

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/store"
)

// Every replica equal (ARCHITECTURE.md, day-2 rule 6). Any replica takes a
// push webhook, a dashboard commit, a wake or a retry; only the leader
// plans. The replica that takes the call announces it on
// store.EventChannel (a wake or retry in the transaction of its write), and
// every replica follows that channel (Events.Run):
//
//   - fetch: every replica fetches the state repository now (the leader
//     then plans the commit's tenants; a follower's view, which the API
//     validates wakes against, stays current);
//   - wake <ws>, retry <ws>: the leader runs a pass for <ws> now; a
//     follower ignores it;
//   - observed: ignored (/v1/observed reads Postgres on every request).
//
// Notifications are lost while the listening connection is down, so each
// (re)connect counts as "anything may have happened": every replica fetches,
// and the leader runs a full pass.

// EventsConfig wires Events.
type EventsConfig struct {
	Store      *store.Store
	Reconciler *Reconciler
	// Fetch fetches the state repository now on this replica (the tenants
	// watcher's Trigger, and the tenant API's Refresh).
	Fetch      func()
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Events publishes calls to store.EventChannel and follows it.
type Events struct {
	cfg       EventsConfig
	log       *slog.Logger
	received  *prometheus.CounterVec
	connected prometheus.Gauge
}

// NewEvents makes an Events.
func NewEvents(cfg EventsConfig) *Events {
	if cfg.Fetch == nil {
		cfg.Fetch = func() {}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	e := &Events{cfg: cfg, log: cfg.Logger.With("component", "events"),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_events_received_total",
			Help: "Notifications received on channel genesis_reconciler, by kind (invalid: refused payloads) and whether this replica acted (leader) or not (follower)."},
			[]string{"kind", "role"}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_events_listening",
			Help: "1 while this replica listens on channel genesis_reconciler."}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(e.received, e.connected)
	}
	return e
}

// Pushed announces that a commit reached the state repository (a push
// webhook, or the tenant API's own commit): this replica fetches now, and
// every other one when the notification reaches it. The error says the
// announcement failed (this replica still fetched).
func (e *Events) Pushed(ctx context.Context) error {
	e.cfg.Fetch()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := e.cfg.Store.Publish(ctx, store.Event{Kind: store.EventFetch}); err != nil {
		e.log.Error("announce pushed commit failed; the leader fetches at its next poll", "err", err)
		return err
	}
	return nil
}

// Run follows store.EventChannel until ctx ends, reconnecting with backoff.
func (e *Events) Run(ctx context.Context) error {
	const first, most = 100 * time.Millisecond, 10 * time.Second
	backoff := first
	for {
		listened := false
		err := e.cfg.Store.Listen(ctx, func() { listened = true; e.ready() }, e.handle)
		e.connected.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			backoff = first
		}
		e.log.Warn("event listener lost; notifications may be missed until it reconnects", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, most)
	}
}

// ready runs once LISTEN is in place: whatever was announced while this
// replica was not listening is unknown.
func (e *Events) ready() {
	e.connected.Set(1)
	leading := e.cfg.Reconciler.Leading()
	e.log.Info("listening for events", "channel", store.EventChannel, "leader", leading)
	e.cfg.Fetch()
	if leading {
		e.cfg.Reconciler.passAll()
	}
}

// handle applies one notification.
func (e *Events) handle(payload string) {
	ev, err := store.ParseEvent(payload)
	if err != nil {
		e.received.WithLabelValues("invalid", "none").Inc()
		e.log.Warn("event refused", "err", err)
		return
	}
	role := "follower"
	if e.cfg.Reconciler.Leading() {
		role = "leader"
	}
	e.received.WithLabelValues(string(ev.Kind), role).Inc()
	switch ev.Kind {
	case store.EventFetch:
		e.cfg.Fetch()
	case store.EventWake, store.EventRetry:
		if role == "leader" {
			e.log.Info("event: pass requested", "kind", ev.Kind, "tenant", ev.Workspace)
			e.cfg.Reconciler.passFor(ev.Workspace)
		}
	}
}

// passFor asks the leader's loop for a pass over ids soon.
func (r *Reconciler) passFor(ids ...string) {
	r.mu.Lock()
	for _, id := range ids {
		r.pending[id] = true
	}
	r.mu.Unlock()
	r.Kick()
}

// passAll asks the leader's loop for a full pass soon.
func (r *Reconciler) passAll() {
	r.mu.Lock()
	r.needFull = true
	r.mu.Unlock()
	r.Kick()
}
