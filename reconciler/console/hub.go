package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

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

// Hub fans lifecycle changes out to event streams.
type Hub struct {
	st        *store.Store
	log       *slog.Logger
	max       int
	heartbeat time.Duration

	mu      sync.Mutex
	subs    map[chan []byte]struct{}
	pending map[string]bool
	order   []string
	wake    chan struct{}

	subscribers prometheus.GaugeFunc
	sent        prometheus.Counter
	dropped     prometheus.Counter
	refused     prometheus.Counter
	listening   prometheus.Gauge
}

func newHub(st *store.Store, max int, heartbeat time.Duration, log *slog.Logger, reg prometheus.Registerer) *Hub {
	h := &Hub{st: st, log: log, max: max, heartbeat: heartbeat, subs: map[chan []byte]struct{}{}, pending: map[string]bool{},
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
	if reg != nil {
		reg.MustRegister(h.subscribers, h.sent, h.dropped, h.refused, h.listening)
	}
	return h
}

// errFull is Subscribe's answer past the bound.
var errFull = errors.New("too many event streams on this replica")

// subscribe adds an event stream.
func (h *Hub) subscribe() (chan []byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) >= h.max {
		h.refused.Inc()
		return nil, errFull
	}
	ch := make(chan []byte, subBuffer)
	h.subs[ch] = struct{}{}
	return ch, nil
}

func (h *Hub) unsubscribe(ch chan []byte) {
	h.mu.Lock()
	delete(h.subs, ch)
	h.mu.Unlock()
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
// whose buffer is full.
func (h *Hub) broadcast(msg []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- msg:
		default:
			h.dropped.Inc()
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
		err := h.st.ListenLifecycle(ctx, func() { listened = true; h.listening.Set(1) }, func(ws string) {
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
			state, err := h.st.Lifecycle(ctx, ws)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if !errors.Is(err, store.ErrUnknownTenant) {
					h.log.Warn("console: read lifecycle failed", "tenant", ws, "err", err)
				}
				continue
			}
			data, _ := json.Marshal(lifecycleEvent{Tenant: ws, Lifecycle: state})
			h.sent.Inc()
			h.broadcast(fmt.Appendf(nil, "event: lifecycle\ndata: %s\n\n", data))
		}
	}
}

// ServeHTTP is GET /console/events: text/event-stream of "lifecycle"
// events, a comment every HeartbeatEvery, until the browser leaves.
func (h *Hub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ch, err := h.subscribe()
	if err != nil {
		w.Header().Set("Retry-After", "30")
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer h.unsubscribe(ch)
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
	tick := time.NewTicker(h.heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case msg := <-ch:
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
