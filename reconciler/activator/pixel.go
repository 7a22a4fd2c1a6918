package activator

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"time"
)

// Open pixels.
//
// An email open is a GET of a tiny image on the tenant's tracking domain
// (DefaultPixelPaths). A mail client will not wait 15 s for a droplet to
// wake, so the activator answers a pixel at once with a transparent 1×1 GIF
// (Cache-Control: no-store, so the next open is fetched again) and queues
// it for the tenant: the path and query, the arrival time and the headers
// n8n's open tracker reads (User-Agent, Referer, X-Forwarded-*). A pixel
// also starts the tenant's wake, as any request does.
//
// Replay: when the wake episode sees the tenant up, its goroutine sends the
// queued pixels to the droplet one at a time, in arrival order (new pixels
// queue behind them until the queue is empty, then go straight through), as
// GET https://<ip>:<DropletPort><path> with the original Host, SNI and
// headers plus X-Genesis-Activator-Arrived (RFC 3339, when the open really
// happened: n8n's tracker otherwise stamps the replay time). Each replay is
// tried once (ReplayTimeout); a failure is counted as dropped.
//
// Order does not matter for counting opens (each open is its own event), but
// arrival order is kept so timestamps read in order.
//
// Bounds and losses: at most MaxPixels per tenant are queued; past it the
// oldest is dropped (genesis_activator_pixels_dropped_total{reason=
// "overflow"}). The queue is in this process's memory only: pixels queued
// when the process dies, when the wake is refused or when the tenant does
// not come up within WakeTimeout are lost (counted, except at a crash).
// Losing an open undercounts a campaign's opens; it never breaks a tenant.

// pixel is one queued open.
type pixel struct {
	host   string // normalized Host
	uri    string // path and query
	header http.Header
	at     time.Time
}

// replayHeaders are the request headers a replayed pixel keeps.
var replayHeaders = []string{"User-Agent", "Referer", "Accept", "Accept-Language", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"}

// gif is a transparent 1×1 GIF.
var gif = []byte{
	0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
	0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
	0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
}

// CheckPixelPath reports whether p is a usable pixel path pattern: an
// absolute path in path.Match syntax ("*" matches within one segment).
func CheckPixelPath(p string) error {
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("pixel path %q: want an absolute path pattern such as /webhook/o/*", p)
	}
	if len(p) > 512 {
		return fmt.Errorf("pixel path %q: longer than 512 bytes", p[:32]+"…")
	}
	if _, err := path.Match(p, ""); err != nil {
		return fmt.Errorf("pixel path %q: %w", p, err)
	}
	return nil
}

// MatchPixelPath reports whether urlPath matches one of patterns (checked
// with CheckPixelPath). A path ending in "/" is never a pixel (an image is
// a file, and "*" would match the empty name).
func MatchPixelPath(patterns []string, urlPath string) bool {
	if strings.HasSuffix(urlPath, "/") {
		return false
	}
	for _, p := range patterns {
		if ok, err := path.Match(p, urlPath); ok && err == nil {
			return true
		}
	}
	return false
}

func (h *Handler) isPixel(r *http.Request) bool {
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) && MatchPixelPath(h.pixels, r.URL.Path)
}

// servePixel answers an open pixel at once and queues it for replay, or
// proxies it when the tenant is up and nothing is queued before it.
func (h *Handler) servePixel(w http.ResponseWriter, r *http.Request, ws, host string, now time.Time) {
	h.mu.Lock()
	t := h.tenantLocked(ws)
	ep := h.episodeLocked(t, now)
	if ep.finished() && ep.ip != "" && !t.draining {
		h.mu.Unlock()
		h.forward(w, r, ws, host, ep, nil)
		return
	}
	if ep.finished() && ep.refused {
		h.mu.Unlock()
		h.m.requests.WithLabelValues(outRefused).Inc()
		h.refusedPage(w, ws)
		return
	}
	if len(t.pixels) >= h.cfg.MaxPixels {
		t.pixels[0] = pixel{}
		t.pixels = t.pixels[1:]
		h.m.dropped.WithLabelValues("overflow").Inc()
	}
	p := pixel{host: host, uri: r.URL.RequestURI(), header: http.Header{}, at: now}
	for _, k := range replayHeaders {
		if v := r.Header.Values(k); len(v) > 0 {
			p.header[k] = v
		}
	}
	t.pixels = append(t.pixels, p)
	h.mu.Unlock()
	h.m.requests.WithLabelValues(outPixel).Inc()
	w.Header().Set("Content-Type", "image/gif")
	w.Header().Set("Cache-Control", "no-store, max-age=0")
	w.Header().Set("Content-Length", strconv.Itoa(len(gif)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(gif)
	}
}

// replay sends t's queued pixels to the droplet at ip, oldest first, until
// the queue is empty (see the comment at the top of this file).
func (h *Handler) replay(t *tenant, ip string) {
	for {
		h.mu.Lock()
		if len(t.pixels) == 0 {
			t.draining = false
			t.pixels = nil
			h.mu.Unlock()
			return
		}
		p := t.pixels[0]
		t.pixels[0] = pixel{}
		t.pixels = t.pixels[1:]
		h.mu.Unlock()
		if err := h.replayOne(p, ip); err != nil {
			h.m.dropped.WithLabelValues("replay_failed").Inc()
			h.log.Warn("pixel replay failed", "tenant", t.id, "err", err)
			continue
		}
		h.m.replayed.Inc()
	}
}

func (h *Handler) replayOne(p pixel, ip string) error {
	ctx, cancel := h.stopContext(h.cfg.ReplayTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, proxyKey{}, &proxyInfo{ip: ip})
	u := "https://" + net.JoinHostPort(p.host, strconv.Itoa(h.cfg.DropletPort)) + p.uri
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header = p.header.Clone()
	req.Header.Set("X-Genesis-Activator-Arrived", p.at.UTC().Format(time.RFC3339Nano))
	req.Host = p.host
	resp, err := h.rt.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("droplet answered %s", resp.Status)
	}
	return nil
}
