package agentapi

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"
	"golang.org/x/sync/errgroup"

	fleetagent "genesis.dev/fleet/agent"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// latencyAgents is how many agents BenchmarkCommitToApplied runs.
const latencyAgents = 1000

// raiseFDLimit lifts the soft limit on open files to at least need (each
// parked long-poll holds a client and a server socket).
func raiseFDLimit(b *testing.B, need uint64) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	if lim.Max < need {
		b.Skipf("open-file limit %d is below the %d this benchmark needs", lim.Max, need)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
}

// benchDroplet is one agent of the benchmark: its identity, credential and
// the manifest it verified last.
type benchDroplet struct {
	ws, id   string
	identity *age.X25519Identity
	cred     string
	version  int64
	digest   string
	etag     string
}

// verify checks envelope as the agent does and records it as applied.
func (d *benchDroplet) verify(envelope []byte, etag string, trusted dsse.Trusted) error {
	v, err := fleetagent.Verify(envelope, fleetagent.Expectation{Workspace: d.ws, Droplet: d.id, Trusted: trusted, Identity: d.identity,
		AppliedVersion: d.version, AppliedDigest: d.digest, Now: time.Now()})
	if err != nil {
		return err
	}
	fleetagent.Forget(v.Credentials)
	d.version, d.digest, d.etag = v.Manifest.Version, v.Digest, etag
	return nil
}

// changeAll gives every tenant new parameters in one new commit, as a push
// that touches every tenant file does.
func (w *world) changeAll(n, round int) {
	for i := range n {
		w.setTenant(fmt.Sprintf("ws-%04d", i), fmt.Sprintf("blob-%d-%d", i, round), tenantSpec{greeting: fmt.Sprintf("Hello, round %d", round)})
	}
	w.setCommit(fmt.Sprintf("%040x", round))
}

// BenchmarkCommitToApplied measures how long a commit takes to reach 1,000
// agents parked on GET /v1/manifest?wait=60s with If-None-Match, over
// loopback HTTP against a real Postgres. Each agent is agent.Client plus
// agent.Verify (signature, payload, every credential opened with its own
// age identity). A round changes every tenant in one snapshot and runs the
// sweep the reconciler runs on a new snapshot (render, seal, sign, store,
// wake the long-polls); the clock starts when the sweep starts.
//
// The baseline, measured in the same round without waiting agents, is that
// sweep alone (render + sign + store 1,000 manifests), so fan-out overhead
// = time to the last verified agent - baseline. Reported: the baseline
// (render-s), the sweep while agents wait (sweep-s), the time until every
// agent verified the new version (fanout-s), the overhead, the time from
// the end of the sweep to the last verified agent (tail-ms), and the
// per-agent latency from the start of the sweep until its long-poll
// returned (p50/p99/max) and until it verified (verified-p99-ms).
//
//	go test -run '^$' -bench CommitToApplied -benchtime 1x ./reconciler/agentapi/
func BenchmarkCommitToApplied(b *testing.B) {
	raiseFDLimit(b, 4*latencyAgents+512)
	ctx := b.Context()
	w := newWorld(b)
	w.changeAll(latencyAgents, 0)
	tr := &http.Transport{MaxIdleConnsPerHost: latencyAgents + 64, IdleConnTimeout: 2 * time.Minute}
	b.Cleanup(tr.CloseIdleConnections)
	client := &fleetagent.Client{BaseURL: w.srv.URL, HTTP: &http.Client{Transport: tr}}

	// Provision and enroll every droplet through the real endpoint (which
	// renders its first manifest).
	ds := make([]*benchDroplet, latencyAgents)
	for i := range ds {
		ws := fmt.Sprintf("ws-%04d", i)
		w.provision(ws, 1, 10000+i, fmt.Sprintf("10.1.%d.%d", i/250, i%250+1))
		id, err := age.GenerateX25519Identity()
		if err != nil {
			b.Fatal(err)
		}
		ds[i] = &benchDroplet{ws: ws, id: fmt.Sprint(10000 + i), identity: id}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, d := range ds {
		name := plan.DropletName(d.ws, 1)
		tok := w.token(d.ws, name)
		g.Go(func() error {
			pub, _, _ := ed25519.GenerateKey(rand.Reader)
			resp, err := client.Enroll(gctx, schema.EnrollRequest{Token: tok, Workspace: d.ws, DropletID: d.id, DropletName: name,
				AgeRecipient: d.identity.Recipient().String(), SigningKey: string(dsse.MarshalPublicKeyPEM(pub)), AgentVersion: "bench"})
			d.cred = resp.Credential
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	// First manifests are rendered after the enrollment answer (Run's
	// render worker).
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		n := w.count(`SELECT count(*) FROM manifests`)
		if n == latencyAgents {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d first manifests, want %d", n, latencyAgents)
		}
	}

	var received, verified []time.Duration
	var render, sweep, fanout, tail time.Duration
	b.ResetTimer()
	for round := range b.N {
		// Baseline: the same sweep with nobody waiting.
		w.changeAll(latencyAgents, 2*round+1)
		start := time.Now()
		issued, err := w.svc.Sweep(ctx)
		render += time.Since(start)
		if err != nil || issued != latencyAgents {
			b.Fatalf("baseline sweep: issued %d, %v", issued, err)
		}

		// Every agent fetches and verifies its current manifest, then parks.
		type result struct{ received, verified time.Time }
		results := make([]result, len(ds))
		g, gctx := errgroup.WithContext(ctx)
		var ready sync.WaitGroup
		ready.Add(len(ds))
		for i, d := range ds {
			g.Go(func() error {
				mr, err := client.Manifest(gctx, d.cred, "", 0)
				if err == nil {
					err = d.verify(mr.Envelope, mr.ETag, w.trusted)
				}
				ready.Done()
				if err != nil {
					return fmt.Errorf("%s: first fetch: %w", d.ws, err)
				}
				old := d.version
				mr, err = client.Manifest(gctx, d.cred, d.etag, MaxWait)
				results[i].received = time.Now()
				if err != nil {
					return fmt.Errorf("%s: long-poll: %w", d.ws, err)
				}
				if mr.NotModified {
					return fmt.Errorf("%s: long-poll ended without a new manifest", d.ws)
				}
				if err := d.verify(mr.Envelope, mr.ETag, w.trusted); err != nil {
					return fmt.Errorf("%s: %w", d.ws, err)
				}
				results[i].verified = time.Now()
				if d.version <= old {
					return fmt.Errorf("%s: version %d after %d", d.ws, d.version, old)
				}
				return nil
			})
		}
		ready.Wait()
		deadline := time.Now().Add(30 * time.Second)
		for testutilCount(b, w.svc.m.longpolls) < latencyAgents {
			if time.Now().After(deadline) {
				b.Fatalf("only %v of %d long-polls parked", testutilCount(b, w.svc.m.longpolls), latencyAgents)
			}
			time.Sleep(5 * time.Millisecond)
		}

		// The commit.
		w.changeAll(latencyAgents, 2*round+2)
		start = time.Now()
		issued, err = w.svc.Sweep(ctx)
		swept := time.Now()
		sweep += swept.Sub(start)
		if err != nil || issued != latencyAgents {
			b.Fatalf("sweep: issued %d, %v", issued, err)
		}
		if err := g.Wait(); err != nil {
			b.Fatal(err)
		}
		last := time.Time{}
		for _, r := range results {
			received = append(received, r.received.Sub(start))
			verified = append(verified, r.verified.Sub(start))
			if r.verified.After(last) {
				last = r.verified
			}
		}
		fanout += last.Sub(start)
		tail += last.Sub(swept)
	}
	b.StopTimer()
	slices.Sort(received)
	slices.Sort(verified)
	rounds := time.Duration(b.N)
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric((render / rounds).Seconds(), "render-s")
	b.ReportMetric((sweep / rounds).Seconds(), "sweep-s")
	b.ReportMetric((fanout / rounds).Seconds(), "fanout-s")
	b.ReportMetric(((fanout - render) / rounds).Seconds(), "overhead-s")
	b.ReportMetric(ms(tail/rounds), "tail-ms")
	b.ReportMetric(ms(quantile(received, 0.50)), "p50-ms")
	b.ReportMetric(ms(quantile(received, 0.99)), "p99-ms")
	b.ReportMetric(ms(received[len(received)-1]), "max-ms")
	b.ReportMetric(ms(quantile(verified, 0.99)), "verified-p99-ms")
	b.ReportMetric(0, "ns/op") // one op is a whole round; the metrics above say it
}

// quantile is the q-quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
