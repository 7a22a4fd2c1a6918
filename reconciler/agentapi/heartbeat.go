package agentapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"genesis.dev/fleet/internal/loglimit"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/reconciler/watchdog"
	"genesis.dev/fleet/schema"
)

// MaxClockSkew is how far past the server's clock an agent's reported times
// may lie: a heartbeat's last_activity and sent_at later than now +
// MaxClockSkew are stored as now + MaxClockSkew. Otherwise a droplet could
// report activity in 2099 and never be hibernated for idleness. (A time in
// the past cannot lower the stored last activity: it is kept with
// GREATEST.)
const MaxClockSkew = 5 * time.Minute

// clamp returns t, or limit when t is later.
func clamp(t, limit time.Time) time.Time {
	if t.After(limit) {
		return limit
	}
	return t
}

// decodeHeartbeat reads and checks a heartbeat body (outside input: fuzzed).
func decodeHeartbeat(body []byte) (schema.Heartbeat, error) {
	var hb schema.Heartbeat
	if err := schema.DecodeStrict(body, &hb); err != nil {
		return hb, fmt.Errorf("malformed heartbeat: %w", err)
	}
	switch {
	case hb.Seq <= 0:
		return hb, errors.New("seq must be positive")
	case hb.AppliedVersion < 0:
		return hb, errors.New("applied_version must not be negative")
	case len(hb.Components) > 32:
		return hb, errors.New("too many components")
	case len(hb.AgentVersion) > 100 || len(hb.N8NVersion) > 100:
		return hb, errors.New("version strings are too long")
	case hb.Backup != nil && (len(hb.Backup.LastError) > 1000 || len(hb.Backup.RestoreError) > 1000 || len(hb.Backup.Restored) > 100):
		return hb, errors.New("backup: strings are too long")
	case hb.Rotation != nil && (hb.Rotation.Done < 0 || hb.Rotation.Working < 0 || len(hb.Rotation.Error) > 1000):
		return hb, errors.New("rotation: generations must not be negative, error at most 1000 bytes")
	case len(hb.Rejected) > schema.MaxRejections:
		return hb, fmt.Errorf("rejected: at most %d entries", schema.MaxRejections)
	case len(hb.Repairs) > schema.MaxRepairs:
		return hb, fmt.Errorf("repairs: at most %d entries", schema.MaxRepairs)
	}
	for i, r := range hb.Repairs {
		switch {
		case r.Component == "" || len(r.Component) > 64:
			return hb, fmt.Errorf("repairs[%d].component: 1-64 bytes", i)
		case r.At.IsZero():
			return hb, fmt.Errorf("repairs[%d].at is required", i)
		case len(r.Detail) > 1000:
			return hb, fmt.Errorf("repairs[%d].detail: at most 1000 bytes", i)
		}
	}
	for i, r := range hb.Rejected {
		switch {
		case r.Part != schema.RejectN8N && r.Part != schema.RejectAgent:
			return hb, fmt.Errorf("rejected[%d].part: want %s or %s", i, schema.RejectN8N, schema.RejectAgent)
		case r.Version <= 0:
			return hb, fmt.Errorf("rejected[%d].version must be positive", i)
		case len(r.Target) > 100 || len(r.Reason) > 1000:
			return hb, fmt.Errorf("rejected[%d]: strings are too long", i)
		}
	}
	if hb.SwapUsed > hb.SwapTotal {
		return hb, fmt.Errorf("swap_used_bytes %d is more than swap_total_bytes %d", hb.SwapUsed, hb.SwapTotal)
	}
	if _, err := parseDroplet(hb.Droplet); err != nil {
		return hb, err
	}
	return hb, nil
}

func (s *Service) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	ref, err := s.authenticate(r)
	if err != nil {
		s.log.Error("authenticate failed", "err", err)
		httpError(w, http.StatusInternalServerError, "authentication unavailable")
		return
	}
	if ref == nil {
		s.m.heartbeats.WithLabelValues("unauthorized").Inc()
		w.Header().Set("WWW-Authenticate", `Bearer realm="genesis"`)
		httpError(w, http.StatusUnauthorized, "bad credential")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, schema.MaxHeartbeatSize))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			s.m.heartbeats.WithLabelValues("too_large").Inc()
			httpError(w, http.StatusRequestEntityTooLarge, "heartbeat too large")
			return
		}
		s.m.heartbeats.WithLabelValues("bad_request").Inc()
		httpError(w, http.StatusBadRequest, "read body")
		return
	}
	hb, err := decodeHeartbeat(body)
	if err != nil {
		s.m.heartbeats.WithLabelValues("bad_request").Inc()
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if hb.Workspace != ref.workspace || hb.Droplet != ref.dropletS {
		s.m.heartbeats.WithLabelValues("forbidden").Inc()
		s.log.Warn("heartbeat for another droplet refused", "tenant", ref.workspace, "droplet", ref.droplet,
			"claimed_tenant", hb.Workspace, "claimed_droplet", hb.Droplet)
		httpError(w, http.StatusForbidden, "the heartbeat names another workspace or droplet")
		return
	}
	if err := s.rotationHeartbeat(r.Context(), r, ref, hb); err != nil {
		s.log.Error("heartbeat's secret rotation report failed", "tenant", ref.workspace, "droplet", ref.droplet, "err", err)
		httpError(w, http.StatusInternalServerError, "rotation report failed")
		return
	}
	now := s.cfg.Now()
	limit := now.Add(MaxClockSkew).UTC()
	hb.LastActivity = clamp(hb.LastActivity, limit)
	hb.SentAt = clamp(hb.SentAt, limit)
	// ok: the agent reports no problem (components, verification, apply,
	// memory and disk pressure; package watchdog judges).
	item := store.Heartbeat{Droplet: ref.droplet, Workspace: ref.workspace, Seq: hb.Seq, At: now, Applied: hb.AppliedVersion,
		AgentVersion: hb.AgentVersion, OK: len(watchdog.Problems(hb)) == 0}
	if !hb.LastActivity.IsZero() {
		t := hb.LastActivity
		item.Activity = &t
	}
	// Stored normalized (re-encoded from the checked struct).
	if item.Body, err = json.Marshal(hb); err != nil {
		httpError(w, http.StatusBadRequest, "heartbeat does not encode")
		return
	}
	ref.mu.Lock()
	if hb.Seq <= ref.lastSeq {
		ref.mu.Unlock()
		s.m.heartbeats.WithLabelValues("replay").Inc()
		w.WriteHeader(http.StatusAccepted)
		return
	}
	select {
	case s.queueFor(ref.droplet) <- item:
		ref.lastSeq = hb.Seq
		ref.mu.Unlock()
	default:
		ref.mu.Unlock()
		s.m.heartbeats.WithLabelValues("queue_full").Inc()
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusServiceUnavailable, "heartbeat queue full")
		return
	}
	s.m.heartbeats.WithLabelValues("queued").Inc()
	w.WriteHeader(http.StatusAccepted)
}

// queueFor is the queue of droplet's heartbeats.
func (s *Service) queueFor(droplet int64) chan store.Heartbeat {
	return s.queues[uint64(droplet)%uint64(len(s.queues))]
}

// batcher writes the heartbeats queued on q every BatchInterval or
// BatchSize, until ctx ends; then it writes what is left.
func (s *Service) batcher(ctx context.Context, q chan store.Heartbeat) error {
	batch := make([]store.Heartbeat, 0, s.cfg.BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func(fctx context.Context) {
		if len(batch) == 0 {
			return
		}
		if err := s.writeBatch(fctx, batch); err != nil {
			s.m.heartbeats.WithLabelValues("dropped").Add(float64(len(batch)))
			s.log.Error("heartbeat batch lost", "heartbeats", len(batch), "err", err)
		} else {
			s.m.heartbeats.WithLabelValues("written").Add(float64(len(batch)))
		}
		batch = batch[:0]
	}
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			for {
				select {
				case hb := <-q:
					batch = append(batch, hb)
					if len(batch) >= s.cfg.BatchSize {
						s.drainFlush(flush)
					}
					continue
				default:
				}
				break
			}
			s.drainFlush(flush)
			return nil
		case hb := <-q:
			if len(batch) == 0 {
				timer.Reset(s.cfg.BatchInterval)
			}
			batch = append(batch, hb)
			if len(batch) >= s.cfg.BatchSize {
				timer.Stop()
				flush(ctx)
			}
		case <-timer.C:
			flush(ctx)
		}
	}
}

// drainFlush flushes with a short context of its own (the service is
// stopping).
func (s *Service) drainFlush(flush func(context.Context)) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	flush(ctx)
}

// writeBatch writes heartbeats with store's batch statement, keeping the
// highest seq of each droplet, and records the droplets that applied a
// newer manifest.
func (s *Service) writeBatch(ctx context.Context, batch []store.Heartbeat) error {
	b := store.NewHeartbeatBatch(batch)
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return err
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		var converged []store.Convergence
		if converged, err = s.st.WriteHeartbeats(ctx, b); err == nil {
			s.m.batchSize.Observe(float64(len(batch)))
			for _, c := range converged {
				if c.Seconds >= 0 {
					s.m.convergence.Observe(c.Seconds)
				}
				s.logApplied(c)
			}
			return nil
		}
	}
	return fmt.Errorf("write %d heartbeats: %w", b.Len(), err)
}

// boundedLevel is the level of the next msg line that lim bounds: info
// for the first eachLogged of every window, debug past them; the first
// line at info after such a window is preceded by one saying how many
// went to debug.
func (s *Service) boundedLevel(lim *loglimit.Limiter, msg string) slog.Level {
	ok, quiet := lim.Allow(msg, s.cfg.Now())
	if quiet > 0 {
		s.log.Info(msg+" lines written at debug in the last window", "lines", quiet, "window", lim.Window().String())
	}
	if !ok && quiet == 0 {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// logApplied logs that a droplet applied a newer manifest: at info for the
// first eachLogged of every minute, at debug past them (a fleet-wide change
// converges 100,000 droplets within minutes); the first line at info after
// such a minute says how many went to debug. genesis_convergence_seconds
// counts every one.
func (s *Service) logApplied(c store.Convergence) {
	level := s.boundedLevel(s.appliedLogs, "manifest applied")
	s.log.Log(context.Background(), level, "manifest applied", "tenant", c.Workspace, "droplet", c.Droplet, "version", c.Version,
		"correlation_id", c.Correlation, "convergence_seconds", c.Seconds)
}
