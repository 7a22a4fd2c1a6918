package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/store"
)

// Live updates. Each replica's console holds one LISTEN on
// store.LifecycleChannel (a trigger announces every lifecycle change there,
// whoever wrote it) and fans each change out to its browsers' event
// streams: a change is read from fleet_status once and the same bytes go
// to every subscriber. Changes that arrive while the reader is busy are
// coalesced per tenant. A subscriber too slow to take its events loses
// them (counted), never holds up the others; the number of subscribers is
// bounded (past it, 503).
//
// Nothing is lost for good, though. A browser names the tenants its page
// shows (?t=ID, repeated) and is sent a "resync" event with their current
// lifecycle states: when its stream opens (so a change between the page's
// render and the stream, or while an EventSource reconnected, is seen),
// after this replica's LISTEN connection was lost and is back (Postgres
// does not keep notifications for a listener that is gone), and after its
// own events were dropped. A resync is read with the fan-out held and the
// stream's queued events dropped, so no older event arrives after it.

// HeartbeatEvery is how often an idle event stream gets a comment line.
const HeartbeatEvery = 15 * time.Second

// DefaultMaxSubscribers bounds the event streams of one replica.
const DefaultMaxSubscribers = 1000

// subBuffer is the events a subscriber may have queued.
const subBuffer = 64

// lifecycleEvent is the data of an SSE "lifecycle" event.
type lifecycleEvent struct {
	Tenant    string `json:"tenant"`
	Lifecycle string `json:"lifecycle"`
}

// resyncEvent is the data of an SSE "resync" event: the current lifecycle
// state of each tenant the stream watches (a tenant without a status row
// is left out).
type resyncEvent struct {
	Lifecycles map[string]string `json:"lifecycles"`
}

// maxWatch bounds the tenants one stream watches (a page shows at most
// store.MaxConsolePage).
const maxWatch = store.MaxConsolePage

// ParseWatch reads the tenants an event stream watches from its query
// string: t=ID, repeated, each a workspace id, at most maxWatch distinct
// ones. Other parameters are ignored.
func ParseWatch(q url.Values) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, id := range q["t"] {
		if !workspaceRe.MatchString(id) {
			return nil, fmt.Errorf("t: %q is not a workspace id ([a-z0-9-]{3,40})", clip(id, 50))
		}
		if seen[id] {
			continue
		}
		if len(out) == maxWatch {
			return nil, fmt.Errorf("t: more than %d tenants", maxWatch)
		}
		seen[id] = true
		out = append(out, id)
	}
	return out, nil
}

// clip shortens s to at most n bytes for an error message, on a rune
// boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// subscriber is one event stream.
type subscriber struct {
	ch    chan []byte
	watch []string
	// resync holds why, when the stream is due a resync.
	resync chan string
}

// flag makes s due a resync (the first reason given stands).
func (s *subscriber) flag(reason string) {
	select {
	case s.resync <- reason:
	default:
	}
}

// Hub fans lifecycle changes out to event streams.
type Hub struct {
	st        *store.Store
	log       *slog.Logger
	max       int
	heartbeat time.Duration

	mu      sync.Mutex
	subs    map[*subscriber]struct{}
	pending map[string]bool
	order   []string
	wake    chan struct{}
	// readMu is held while a change is read and fanned out, and while a
	// stream's resync is read: what a stream gets after its resync was
	// read after it.
	readMu sync.Mutex

	subscribers prometheus.GaugeFunc
	sent        prometheus.Counter
	dropped     prometheus.Counter
	refused     prometheus.Counter
	listening   prometheus.Gauge
	resyncs     *prometheus.CounterVec
}

func newHub(st *store.Store, max int, heartbeat time.Duration, log *slog.Logger, reg prometheus.Registerer) *Hub {
	h := &Hub{st: st, log: log, max: max, heartbeat: heartbeat, subs: map[*subscriber]struct{}{}, pending: map[string]bool{},
		wake: make(chan struct{}, 1)}
	h.subscribers = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "genesis_console_event_streams",
		Help: "Browsers following the console's live updates on this replica."}, func() float64 {
		h.mu.Lock()
		defer h.mu.Unlock()
		return float64(len(h.subs))
	})
	h.sent = prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_console_events_total",
		Help: "Lifecycle changes read and fanned out to the console's event streams."})
	h.dropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_console_events_dropped_total",
		Help: "Events not delivered to a console event stream that was too slow to take them."})
	h.refused = prometheus.NewCounter(prometheus.CounterOpts{Name: "genesis_console_event_streams_refused_total",
		Help: "Console event streams refused because the replica had its maximum."})
	h.listening = prometheus.NewGauge(prometheus.GaugeOpts{Name: "genesis_console_listening",
		Help: "1 while this replica's console listens for lifecycle changes."})
	h.resyncs = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "genesis_console_resyncs_total",
		Help: "Resync events sent to console event streams, by why: the stream opened, the replica's LISTEN was (re)established, the stream had dropped events."},
		[]string{"reason"})
	for _, r := range []string{resyncOpen, resyncListen, resyncDropped} {
		h.resyncs.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(h.subscribers, h.sent, h.dropped, h.refused, h.listening, h.resyncs)
	}
	return h
}

// errFull is Subscribe's answer past the bound.
var errFull = errors.New("too many event streams on this replica")

// Why a stream is resynced (genesis_console_resyncs_total's reason).
const (
	resyncOpen    = "open"
	resyncListen  = "listen"
	resyncDropped = "dropped"
)

// subscribe adds an event stream watching watch.
func (h *Hub) subscribe(watch []string) (*subscriber, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= h.max {
		h.refused.Inc()
		return nil, errFull
	}
	s := &subscriber{ch: make(chan []byte, subBuffer), watch: watch, resync: make(chan string, 1)}
	h.subs[s] = struct{}{}
	return s, nil
}

func (h *Hub) unsubscribe(s *subscriber) {
	h.mu.Lock()
	delete(h.subs, s)
	h.mu.Unlock()
}

// resyncAll makes every stream due a resync: the LISTEN connection is
// (again) in place, and what was announced before it may be lost.
func (h *Hub) resyncAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.flag(resyncListen)
	}
}

// resync is s's "resync" event: its watched tenants' states, read while
// no change is being fanned out, after dropping the events queued for it
// (all read before, so older than what is read here).
func (h *Hub) resync(ctx context.Context, s *subscriber) ([]byte, error) {
	ev := resyncEvent{Lifecycles: map[string]string{}}
	if len(s.watch) > 0 {
		h.readMu.Lock()
		defer h.readMu.Unlock()
		for drained := false; !drained; {
			select {
			case <-s.ch:
			default:
				drained = true
			}
		}
		states, err := h.st.Lifecycles(ctx, s.watch)
		if err != nil {
			return nil, err
		}
		ev.Lifecycles = states
	}
	data, err := json.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "event: resync\ndata: %s\n\n", data), nil
}

// changed queues a tenant whose lifecycle changed (coalesced).
func (h *Hub) changed(ws string) {
	h.mu.Lock()
	if !h.pending[ws] {
		h.pending[ws] = true
		h.order = append(h.order, ws)
	}
	h.mu.Unlock()
	select {
	case h.wake <- struct{}{}:
	default:
	}
}

// broadcast sends one event to every subscriber, dropping it for those
// whose buffer is full (they are due a resync).
func (h *Hub) broadcast(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		select {
		case s.ch <- msg:
		default:
			h.dropped.Inc()
			s.flag(resyncDropped)
		}
	}
}

// Run listens for lifecycle changes and fans them out until ctx ends,
// reconnecting with backoff.
func (h *Hub) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.fanOut(ctx)
	}()
	defer func() { <-done }()
	const first, most = 100 * time.Millisecond, 10 * time.Second
	backoff := first
	for {
		listened := false
		err := h.st.ListenLifecycle(ctx, func() {
			listened = true
			h.listening.Set(1)
			// Changes announced while no LISTEN was in place (before the
			// first, or between a lost connection and this one) were
			// never delivered: every open stream reads its tenants again.
			h.resyncAll()
		}, func(ws string) {
			if workspaceRe.MatchString(ws) { // anyone who can connect may NOTIFY
				h.changed(ws)
			}
		})
		h.listening.Set(0)
		if ctx.Err() != nil {
			return nil
		}
		if listened {
			backoff = first
		}
		h.log.Warn("console listener lost; live updates pause until it reconnects", "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, most)
	}
}

// fanOut reads each queued tenant's state once and broadcasts it.
func (h *Hub) fanOut(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		for {
			h.mu.Lock()
			if len(h.order) == 0 {
				h.mu.Unlock()
				break
			}
			ws := h.order[0]
			h.order = h.order[1:]
			delete(h.pending, ws)
			h.mu.Unlock()
			if !h.fanOne(ctx, ws) {
				return
			}
		}
	}
}

// fanOne reads ws's state and broadcasts it; false when ctx ended.
func (h *Hub) fanOne(ctx context.Context, ws string) bool {
	h.readMu.Lock()
	defer h.readMu.Unlock()
	state, err := h.st.Lifecycle(ctx, ws)
	if err != nil {
		if ctx.Err() != nil {
			return false
		}
		if !errors.Is(err, store.ErrUnknownTenant) {
			h.log.Warn("console: read lifecycle failed", "tenant", ws, "err", err)
		}
		return true
	}
	data, _ := json.Marshal(lifecycleEvent{Tenant: ws, Lifecycle: state})
	h.sent.Inc()
	h.broadcast(fmt.Appendf(nil, "event: lifecycle\ndata: %s\n\n", data))
	return true
}

// ServeHTTP is GET /console/events?t=ID…: text/event-stream of "resync"
// (first, and whenever the stream may have missed a change) and
// "lifecycle" events, a comment every HeartbeatEvery, until the browser
// leaves. A resync that cannot be read ends the stream (the browser's
// EventSource reconnects and is resynced then).
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	watch, err := ParseWatch(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	sub, err := h.subscribe(watch)
	if err != nil {
		w.Header().Set("Retry-After", "30")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer h.unsubscribe(sub)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		// The server's write timeout would cut a long stream: each write
		// gets its own deadline.
		_ = rc.SetWriteDeadline(time.Now().Add(h.heartbeat + 30*time.Second))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write([]byte("retry: 3000\n: connected\n\n")) {
		return
	}
	resync := func(reason string) bool {
		msg, err := h.resync(r.Context(), sub)
		if err != nil {
			if r.Context().Err() == nil {
				h.log.Warn("console: resync failed; closing the stream for the browser to reconnect", "err", err)
			}
			return false
		}
		h.resyncs.WithLabelValues(reason).Inc()
		return write(msg)
	}
	if !resync(resyncOpen) {
		return
	}
	tick := time.NewTicker(h.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case reason := <-sub.resync:
			if !resync(reason) {
				return
			}
		case msg := <-sub.ch:
			if !write(msg) {
				return
			}
		case <-tick.C:
			if !write([]byte(": heartbeat\n\n")) {
				return
			}
		}
	}
}
