package activator

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"
)

// proxyKey carries a request's *proxyInfo in its context: the droplet's
// address the transport dials (the URL keeps the tenant's name, so TLS
// verifies the droplet's certificate for that name and sends it as SNI).
type proxyKey struct{}

type proxyInfo struct {
	ip     string
	ep     *episode
	h      *Handler
	failed bool
}

// newProxy returns the transport to the droplets and the reverse proxy
// held requests go through.
func (h *Handler) newProxy() (*http.Transport, *httputil.ReverseProxy) {
	dial := h.cfg.Dial
	if dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
		dial = d.DialContext
	}
	port := strconv.Itoa(h.cfg.DropletPort)
	// Never InsecureSkipVerify: the droplet proves it holds the tenant's
	// name.
	tlsConf := &tls.Config{RootCAs: h.cfg.RootCAs, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}
	rt := &http.Transport{
		Proxy: nil, // straight to the droplet
		// The connection and its TLS handshake are made here, so that a
		// failure of either comes back as a beforeSend error, which
		// redial retries (nothing of the request was sent).
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			pi, ok := ctx.Value(proxyKey{}).(*proxyInfo)
			if !ok || pi.ip == "" {
				return nil, errors.New("activator: no droplet address for " + addr)
			}
			raw, err := dial(ctx, network, net.JoinHostPort(pi.ip, port))
			if err != nil {
				return nil, beforeSend{err}
			}
			host, _, _ := net.SplitHostPort(addr)
			conf := tlsConf.Clone()
			conf.ServerName = host
			conn := tls.Client(raw, conf)
			hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
			defer cancel()
			if err := conn.HandshakeContext(hctx); err != nil {
				raw.Close()
				return nil, beforeSend{fmt.Errorf("TLS handshake with %s for %s: %w", pi.ip, host, err)}
			}
			return conn, nil
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConns:        1000,
		MaxIdleConnsPerHost: 32,
		// A droplet's address changes at every wake: idle connections go
		// soon.
		IdleConnTimeout: 30 * time.Second,
	}
	rp := &httputil.ReverseProxy{
		Transport: redial{rt: rt, within: dialRetryWithin},
		Rewrite: func(pr *httputil.ProxyRequest) {
			host, _ := ParseHost(pr.In.Host)
			pr.Out.URL.Scheme = "https"
			pr.Out.URL.Host = net.JoinHostPort(host, port)
			pr.Out.Host = pr.In.Host
			// The activator runs behind its Caddy (Render), which set
			// these for the client: keep them, and add Caddy's hop.
			pr.Out.Header["X-Forwarded-For"] = pr.In.Header["X-Forwarded-For"]
			pr.SetXForwarded()
			for _, k := range []string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
				if v := pr.In.Header.Get(k); v != "" {
					pr.Out.Header.Set(k, v)
				}
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			pi, ok := resp.Request.Context().Value(proxyKey{}).(*proxyInfo)
			if ok && pi.ep != nil && pi.ep.woke {
				select {
				case <-pi.ep.answered:
				default:
					pi.h.firstAnswer(pi.ep)
				}
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if pi, ok := r.Context().Value(proxyKey{}).(*proxyInfo); ok {
				pi.failed = true
			}
			if r.Context().Err() == nil {
				h.log.Warn("proxy to droplet failed", "host", r.Host, "err", err)
			}
			http.Error(w, "the workspace's server did not answer", http.StatusBadGateway)
		},
		ErrorLog: slog.NewLogLogger(h.log.Handler(), slog.LevelWarn),
	}
	return rt, rp
}

// dialRetryWithin bounds redial's retries of one request;
// tlsHandshakeTimeout bounds one handshake. A woken droplet's Caddy gets
// its certificate for the tenant's name on demand, during the first
// handshake (an ACME order: seconds, more under load; the ACME CA
// validates the name at the droplet, so it cannot start before the wake
// wrote the name), and fails the handshakes of a name whose order is
// still going or just failed: both are generous (a client waits at most
// the request's own deadline anyway).
const (
	dialRetryWithin     = time.Minute
	tlsHandshakeTimeout = 30 * time.Second
)

// beforeSend is a failure to connect to the droplet or to finish the TLS
// handshake with it: nothing of the request was sent.
type beforeSend struct{ err error }

func (e beforeSend) Error() string { return e.err.Error() }
func (e beforeSend) Unwrap() error { return e.err }

// redial retries a request that failed before it was sent (beforeSend: a
// droplet just reported healthy whose Caddy is still binding or reloading
// its listener, or still getting the certificate for the name), every
// 100 ms doubling to 1 s, for at most within: nothing was sent, so a
// retry of any request is safe (its body is buffered: GetBody).
type redial struct {
	rt     http.RoundTripper
	within time.Duration
}

func (t redial) RoundTrip(req *http.Request) (*http.Response, error) {
	var deadline time.Time
	for attempt := 1; ; attempt++ {
		resp, err := t.rt.RoundTrip(req)
		var bs beforeSend
		if err == nil || !errors.As(err, &bs) {
			return resp, err
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(t.within)
		}
		wait := min(100*time.Millisecond<<min(attempt-1, 4), time.Second)
		if time.Now().Add(wait).After(deadline) {
			return nil, err
		}
		select {
		case <-req.Context().Done():
			return nil, err
		case <-time.After(wait):
		}
		if req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				return nil, err
			}
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

// firstAnswer records the wake-to-first-answer latency of ep once.
func (h *Handler) firstAnswer(ep *episode) {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-ep.answered:
		return
	default:
	}
	close(ep.answered)
	h.m.wakeLatency.Observe(h.now().Sub(ep.start).Seconds())
}

// readBody buffers r's body, at most max bytes (*http.MaxBytesError past
// it).
func readBody(w http.ResponseWriter, r *http.Request, max int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return nil, nil
	}
	return b, nil
}

func bodyOf(b []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(b)) }
