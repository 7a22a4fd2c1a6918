package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"golang.org/x/sync/errgroup"

	fleetagent "genesis.dev/fleet/agent"
	"genesis.dev/fleet/internal/logflag"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// A scale run spreads its agents over several `genesis-load agents`
// processes, each below the open-file limit, each dialing from its own
// loopback source addresses so that ephemeral ports never run out. The
// parent writes a job file and drives each worker through its stdin with
// one command a line; the worker answers with one JSON event a line on
// stdout:
//
//	(start)               enroll every agent with its replica, fetch each
//	                      first manifest → {"event":"fetched"}
//	park                  park every agent on GET /v1/manifest?wait=60s with
//	                      If-None-Match; each new manifest is recorded and
//	                      the agent parks again → {"event":"parked"}, then
//	                      {"event":"progress","received":N} as N grows (N:
//	                      agents that received one since the start or the
//	                      last mark)
//	mark                  start counting anew: N is 0 until an agent
//	                      receives a manifest after this → {"event":"marked"}
//	report                → {"event":"received","times":[unix ns, 0: none]}
//	                      (when each agent last received a new manifest)
//	heartbeat IV DUR      every agent heartbeats every IV for DUR over the
//	                      job's connections → {"event":"heartbeats",...}
//
// Closing stdin stops the worker. With a CA in the job (--tls) every agent
// keeps a connection of its own, TLS with HTTP/2 offered, and sends its
// polls and heartbeats over it, as an agent on a droplet does; the
// "fetched" and "heartbeats" events then count the responses by protocol.

// workerJob is a worker's share of a scale run.
type workerJob struct {
	// URLs are the replicas; agent k of the job talks to URLs[Replica[k]].
	URLs    []string      `json:"urls"`
	Sources []string      `json:"sources"`
	Agents  []workerAgent `json:"agents"`
	// Conns bounds the heartbeat requests in flight.
	Conns int `json:"conns"`
	// CA is the PEM certificate the replicas serve TLS with ("": they
	// serve plain HTTP/1.1 and the agents share pooled connections).
	CA string `json:"ca,omitempty"`
}

type workerAgent struct {
	WS      string `json:"ws"`
	Droplet string `json:"droplet"`
	Name    string `json:"name"`
	Token   string `json:"token"`
	// Cred is the agent's credential when it was enrolled in bulk ("":
	// it enrolls with Token through POST /v1/enroll).
	Cred    string `json:"cred,omitempty"`
	Replica int    `json:"replica"`
}

// workerEvent is one line a worker prints.
type workerEvent struct {
	Event    string  `json:"event"`
	Error    string  `json:"error,omitempty"`
	Received int64   `json:"received,omitempty"`
	Times    []int64 `json:"times,omitempty"`
	// heartbeats
	Sent     int64   `json:"sent,omitempty"`
	Accepted int64   `json:"accepted,omitempty"`
	Rejected int64   `json:"rejected,omitempty"`
	NetErrs  int64   `json:"net_errors,omitempty"`
	Late     int64   `json:"late,omitempty"`
	FirstAt  int64   `json:"first_at,omitempty"`
	LastAt   int64   `json:"last_at,omitempty"`
	LatUS    []int64 `json:"lat_us,omitempty"`
	SumSeq   int64   `json:"sum_seq,omitempty"`
	// responses by protocol so far (with a CA in the job)
	HTTP2 int64 `json:"http2,omitempty"`
	HTTP1 int64 `json:"http1,omitempty"`
}

// sourceDialer dials from the job's source addresses in turn.
func sourceDialer(sources []string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	var next atomic.Uint64
	dialers := make([]*net.Dialer, 0, len(sources))
	for _, s := range sources {
		dialers = append(dialers, &net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(s)}})
	}
	if len(dialers) == 0 {
		dialers = append(dialers, &net.Dialer{Timeout: 10 * time.Second})
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := dialers[next.Add(1)%uint64(len(dialers))]
		return d.DialContext(ctx, network, addr)
	}
}

// agentsMain is `genesis-load agents --job FILE`.
func agentsMain(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("genesis-load agents", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var jobFile, logLevel string
	fs.StringVar(&jobFile, "job", "", "the job file the parent wrote")
	fs.StringVar(&logLevel, "log-level", "warn", "log level")
	if err := fs.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	log, err := logflag.New(stderr, "text", logLevel)
	if err != nil {
		return usageErr("%v", err)
	}
	data, err := os.ReadFile(jobFile)
	if err != nil {
		return err
	}
	var job workerJob
	if err := json.Unmarshal(data, &job); err != nil {
		return fmt.Errorf("job: %w", err)
	}
	if err := raiseFDLimit(uint64(len(job.Agents) + job.Conns + 256)); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := &worker{job: job, log: log.With("component", "agents"), out: json.NewEncoder(stdout)}
	dial := sourceDialer(job.Sources)
	if job.CA != "" {
		// Each agent its own transport, as each droplet's agent has.
		if w.agentHTTP, err = agentTransports(job, dial, &w.protos); err != nil {
			return err
		}
	} else {
		// Long-polls: one connection per agent. Heartbeats: at most Conns.
		w.pollHTTP = &http.Client{Transport: &http.Transport{DialContext: dial, MaxIdleConns: len(job.Agents) + 64,
			MaxIdleConnsPerHost: len(job.Agents) + 64, IdleConnTimeout: 5 * time.Minute}}
		w.hbHTTP = &http.Client{Transport: &http.Transport{DialContext: dial, MaxConnsPerHost: max(1, job.Conns/max(1, len(job.URLs))),
			MaxIdleConnsPerHost: job.Conns, IdleConnTimeout: 5 * time.Minute}}
	}
	w.state = make([]workerState, len(job.Agents))

	if err := w.enroll(ctx); err != nil {
		w.emit(workerEvent{Event: "error", Error: err.Error()})
		return err
	}
	w.emit(workerEvent{Event: "fetched", HTTP2: w.protos.h2.Load(), HTTP1: w.protos.h1.Load()})

	lines := bufio.NewScanner(stdin)
	for lines.Scan() {
		f := strings.Fields(lines.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "park":
			w.park(ctx)
			w.emit(workerEvent{Event: "parked"})
		case "mark":
			w.mark.Store(time.Now().UnixNano())
			w.received.Store(0)
			w.emit(workerEvent{Event: "marked"})
		case "report":
			times := make([]int64, len(w.state))
			for k := range w.state {
				times[k] = w.state[k].received.Load()
			}
			w.emit(workerEvent{Event: "received", Times: times})
		case "heartbeat":
			if len(f) != 3 {
				return errors.New("heartbeat needs an interval and a duration")
			}
			iv, err1 := time.ParseDuration(f[1])
			dur, err2 := time.ParseDuration(f[2])
			if err := errors.Join(err1, err2); err != nil {
				return err
			}
			w.emit(w.heartbeats(ctx, iv, dur))
		}
	}
	cancel()
	w.polls.Wait()
	return nil
}

type worker struct {
	job      workerJob
	log      *slog.Logger
	pollHTTP *http.Client
	hbHTTP   *http.Client
	// agentHTTP is each agent's own client (with a CA in the job).
	agentHTTP []*http.Client
	protos    protoCount
	state     []workerState
	outMu     sync.Mutex
	out       *json.Encoder
	received  atomic.Int64
	// mark is when the count started (unix ns; 0: at the start): an
	// agent counts once its first manifest after it arrives.
	mark            atomic.Int64
	polls           sync.WaitGroup
	progressStarted bool
}

type workerState struct {
	cred, etag string
	seq        int64
	lastOK     int64        // the highest heartbeat seq answered 202
	received   atomic.Int64 // unix ns of the last new manifest (0: none)
}

func (w *worker) emit(e workerEvent) {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	_ = w.out.Encode(e)
}

// client is agent k's client of its replica: over hc (shared), or over
// its own transport when it has one.
func (w *worker) client(k int, hc *http.Client) *fleetagent.Client {
	if w.agentHTTP != nil {
		hc = w.agentHTTP[k]
	}
	return &fleetagent.Client{BaseURL: w.job.URLs[w.job.Agents[k].Replica], HTTP: hc}
}

// protoCount counts responses by protocol.
type protoCount struct{ h2, h1 atomic.Int64 }

// countingTransport counts the protocol of every response rt answers.
type countingTransport struct {
	rt http.RoundTripper
	n  *protoCount
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err == nil {
		if resp.ProtoMajor == 2 {
			t.n.h2.Add(1)
		} else {
			t.n.h1.Add(1)
		}
	}
	return resp, err
}

// agentTransports gives every agent of job a transport of its own, the
// agent's (http.DefaultTransport's settings: HTTP/2 when the server offers
// it, one connection carrying polls and heartbeats), trusting job.CA alone
// and dialing through dial.
func agentTransports(job workerJob, dial func(ctx context.Context, network, addr string) (net.Conn, error), n *protoCount) ([]*http.Client, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(job.CA)) {
		return nil, errors.New("job: the CA is not a PEM certificate")
	}
	base, ok := http.DefaultTransport.(*http.Transport)
	if !ok {
		return nil, errors.New("http.DefaultTransport is not an *http.Transport")
	}
	cls := make([]*http.Client, len(job.Agents))
	for k := range cls {
		t := base.Clone()
		t.DialContext = dial
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		cls[k] = &http.Client{Transport: countingTransport{rt: t, n: n}}
	}
	return cls, nil
}

// enroll enrolls every agent with its replica and fetches its first
// manifest (retrying the 404 of one not rendered yet).
func (w *worker) enroll(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for k, a := range w.job.Agents {
		g.Go(func() error {
			st := &w.state[k]
			cl := w.client(k, w.pollHTTP)
			if a.Cred != "" {
				st.cred = a.Cred
				return w.firstManifest(gctx, cl, st, a.WS)
			}
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return err
			}
			pub, _, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			resp, err := cl.Enroll(gctx, schema.EnrollRequest{Token: a.Token, Workspace: a.WS, DropletID: a.Droplet, DropletName: a.Name,
				AgeRecipient: id.Recipient().String(), SigningKey: string(dsse.MarshalPublicKeyPEM(pub)), AgentVersion: "genesis-load"})
			if err != nil {
				return fmt.Errorf("enroll %s: %w", a.WS, err)
			}
			st.cred = resp.Credential
			return w.firstManifest(gctx, cl, st, a.WS)
		})
	}
	return g.Wait()
}

// firstManifest fetches an agent's first manifest, retrying the 404 of one
// not rendered yet and failures on the agent's backoff.
func (w *worker) firstManifest(ctx context.Context, cl *fleetagent.Client, st *workerState, ws string) error {
	deadline := time.Now().Add(5 * time.Minute)
	bo := agentBackoff()
	for {
		mr, err := cl.Manifest(ctx, st.cred, "", 0)
		if err == nil {
			st.etag = mr.ETag
			return nil
		}
		if time.Now().After(deadline) || !bo.Wait(ctx) {
			return fmt.Errorf("%s: first manifest: %w", ws, err)
		}
	}
}

// agentBackoff is the wait between an agent's failed requests, as
// genesis-agent keeps it (from 1 s, doubling to 1 min, jittered): a
// thousand agents failing together (a replica restarting, a storm of TLS
// handshakes timing out) come back spread out, not all 100 ms later.
func agentBackoff() *fleetagent.Backoff { return fleetagent.NewBackoff(time.Second, time.Minute) }

// park starts one long-poll loop per agent, for as long as the worker
// runs, and a progress reporter.
func (w *worker) park(ctx context.Context) {
	for k := range w.job.Agents {
		w.polls.Add(1)
		go func() {
			defer w.polls.Done()
			st := &w.state[k]
			cl := w.client(k, w.pollHTTP)
			bo := agentBackoff()
			for ctx.Err() == nil {
				mr, err := cl.Manifest(ctx, st.cred, st.etag, agentapi.MaxWait)
				switch {
				case ctx.Err() != nil:
					return
				case err != nil:
					w.log.Debug("long-poll failed", "ws", w.job.Agents[k].WS, "err", err)
					bo.Wait(ctx)
					continue
				}
				bo.Reset()
				if mr.NotModified {
					continue
				}
				st.etag = mr.ETag
				if st.received.Swap(time.Now().UnixNano()) <= w.mark.Load() {
					w.received.Add(1)
				}
			}
		}()
	}
	if !w.progressStarted {
		w.progressStarted = true
		go func() {
			last := int64(-1)
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
				if n := w.received.Load(); n != last {
					last = n
					w.emit(workerEvent{Event: "progress", Received: n})
				}
			}
		}()
	}
}

// heartbeats has every agent heartbeat every iv for dur, phases spread
// over one interval, at most job.Conns in flight.
func (w *worker) heartbeats(ctx context.Context, iv, dur time.Duration) workerEvent {
	var sent, accepted, rejected, netErrs, late atomic.Int64
	lat := make([][]int64, len(w.job.Agents))
	sem := make(chan struct{}, max(1, w.job.Conns))
	runCtx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for k, a := range w.job.Agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := &w.state[k]
			cl := w.client(k, w.hbHTTP)
			next := start.Add(time.Duration(int64(iv) * int64(k) / int64(len(w.job.Agents))))
			timer := time.NewTimer(0)
			defer timer.Stop()
			for {
				timer.Reset(time.Until(next))
				select {
				case <-runCtx.Done():
					return
				case <-timer.C:
				}
				select {
				case <-runCtx.Done():
					return
				case sem <- struct{}{}:
				}
				st.seq++
				hb := schema.Heartbeat{Workspace: a.WS, Droplet: a.Droplet, Seq: st.seq, SentAt: time.Now(),
					Components: map[string]schema.ComponentHealth{"n8n": {OK: true}, "caddy": {OK: true}, "postgres": {OK: true}},
					MemoryUsed: 512 << 20, MemoryTotal: 1 << 30, DiskUsed: 8 << 30, DiskTotal: 32 << 30, UptimeSeconds: 3600,
					AgentVersion: "genesis-load", N8NVersion: "1.123.81"}
				t0 := time.Now()
				_, err := cl.Heartbeat(ctx, st.cred, hb)
				lat[k] = append(lat[k], time.Since(t0).Microseconds())
				<-sem
				sent.Add(1)
				var se *fleetagent.StatusError
				switch {
				case err == nil:
					accepted.Add(1)
					st.lastOK = hb.Seq
				case errors.As(err, &se):
					rejected.Add(1)
				default:
					netErrs.Add(1)
				}
				next = next.Add(iv)
				if now := time.Now(); now.Sub(next) > iv {
					late.Add(1)
					next = now
				}
			}
		}()
	}
	wg.Wait()
	e := workerEvent{Event: "heartbeats", Sent: sent.Load(), Accepted: accepted.Load(), Rejected: rejected.Load(), NetErrs: netErrs.Load(),
		Late: late.Load(), FirstAt: start.UnixNano(), LastAt: time.Now().UnixNano(), HTTP2: w.protos.h2.Load(), HTTP1: w.protos.h1.Load()}
	for k := range lat {
		e.LatUS = append(e.LatUS, lat[k]...)
		e.SumSeq += w.state[k].lastOK
	}
	return e
}
