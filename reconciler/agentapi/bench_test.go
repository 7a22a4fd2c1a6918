package agentapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"genesis.dev/fleet/reconciler/store"
)

// discard is a minimal ResponseWriter, so the in-process benchmarks measure
// the handlers, not a recorder.
type discard struct {
	h    http.Header
	code int
}

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(p []byte) (int, error) { return len(p), nil }
func (d *discard) WriteHeader(code int)        { d.code = code }

// bare304 is the floor: a net/http handler that only writes a 304.
var bare304 = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header()["Etag"] = []string{`"0000000000000000000000000000000000000000000000000000000000000000"`}
	w.WriteHeader(http.StatusNotModified)
})

// bench304 runs h with a conditional GET in process and over loopback HTTP.
func bench304(b *testing.B, h http.Handler, cred, etag string) {
	b.Run("inproc", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req := httptest.NewRequest("GET", "/v1/manifest", nil)
			req.Header.Set("Authorization", "Bearer "+cred)
			req.Header.Set("If-None-Match", etag)
			w := &discard{h: http.Header{}}
			for pb.Next() {
				clear(w.h)
				h.ServeHTTP(w, req)
				if w.code != http.StatusNotModified {
					b.Fatalf("status %d", w.code)
				}
			}
		})
	})
	b.Run("http", func(b *testing.B) {
		srv := httptest.NewServer(h)
		defer srv.Close()
		tr := &http.Transport{MaxIdleConnsPerHost: 256}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req, _ := http.NewRequest("GET", srv.URL+"/v1/manifest", nil)
			req.Header.Set("Authorization", "Bearer "+cred)
			req.Header.Set("If-None-Match", etag)
			for pb.Next() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotModified {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
		})
	})
}

// BenchmarkManifest304 is the real handler answering a conditional GET of a
// cached manifest: credential lookup, cache lookup, ETag compare.
// Compare with BenchmarkBare304 in the same run.
func BenchmarkManifest304(b *testing.B) {
	w := newWorld(b)
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	a := w.mustEnroll("ws-acme", 1, 1001, "203.0.113.7")
	_, etag := w.manifest(a)
	bench304(b, w.svc.Handler(), a.cred, etag)
}

// BenchmarkBare304 is a bare net/http handler writing 304.
func BenchmarkBare304(b *testing.B) {
	bench304(b, bare304, "x", `"x"`)
}

// benchAgents makes n enrolled droplets directly in Postgres (credential i
// is "bench-cred-<i>") and returns their credentials.
func benchAgents(b *testing.B, w *world, n int) []string {
	ctx := context.Background()
	_, err := w.st.Pool().Exec(ctx, `
		INSERT INTO fleet_status (workspace, droplet_id, state, desired_state, manifest_version_issued)
		SELECT 'ws-' || lpad(i::text, 6, '0'), 100000 + i, 'ACTIVE_HEALTHY', 'running', 1 FROM generate_series(0, $1 - 1) i;
		INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash)
		SELECT 100000 + i, 'ws-' || lpad(i::text, 6, '0'), 'age1bench', decode(repeat('00', 32), 'hex'), sha256(('bench-cred-' || i)::bytea)
		FROM generate_series(0, $1 - 1) i`, n)
	if err != nil {
		// Two statements with a parameter: run them one by one.
		for _, q := range []string{
			`INSERT INTO fleet_status (workspace, droplet_id, state, desired_state, manifest_version_issued)
			SELECT 'ws-' || lpad(i::text, 6, '0'), 100000 + i, 'ACTIVE_HEALTHY', 'running', 1 FROM generate_series(0, $1 - 1) i`,
			`INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash)
			SELECT 100000 + i, 'ws-' || lpad(i::text, 6, '0'), 'age1bench', decode(repeat('00', 32), 'hex'), sha256(('bench-cred-' || i)::bytea)
			FROM generate_series(0, $1 - 1) i`,
		} {
			if _, err := w.st.Pool().Exec(ctx, q, n); err != nil {
				b.Fatal(err)
			}
		}
	}
	// The service learns of the new credentials from the agents table's
	// notifications (or its initial load): until then it refuses them.
	poll.Until(b, "the bench agents' credentials", func() bool {
		w.svc.authMu.RLock()
		defer w.svc.authMu.RUnlock()
		return w.svc.creds.loaded && w.svc.creds.keys.len() >= n
	})
	creds := make([]string, n)
	for i := range creds {
		creds[i] = "bench-cred-" + strconv.Itoa(i)
	}
	return creds
}

// heartbeatBody is agent i's heartbeat with seq.
func heartbeatBody(i int, seq int64) []byte {
	return fmt.Appendf(nil, `{"workspace":"ws-%06d","droplet":"%d","seq":%d,"sent_at":"2026-01-01T00:00:00Z","applied_version":1,`+
		`"components":{"n8n":{"ok":true},"caddy":{"ok":true},"postgres":{"ok":true}},"memory_used_bytes":536870912,"memory_total_bytes":1073741824,`+
		`"disk_used_bytes":8589934592,"disk_total_bytes":34359738368,"uptime_seconds":3600,"agent_version":"0.1.0"}`, i, 100000+i, seq)
}

const benchAgentsN = 10_000

// BenchmarkHeartbeatIngest sends b.N heartbeats of 10,000 droplets through
// the real handler (credential check, strict decode, replay check, queue)
// and waits until the batcher has written them all to Postgres. Compare
// with BenchmarkHeartbeatRawUpsert: the same rows, same statement, batches
// of 1,000, without HTTP.
func BenchmarkHeartbeatIngest(b *testing.B) {
	w := newWorld(b, func(c *Config) { c.BatchInterval = DefaultBatchInterval })
	creds := benchAgents(b, w, benchAgentsN)
	h := w.svc.Handler()
	send := func(i int, seq int64) int {
		req := httptest.NewRequest("POST", "/v1/heartbeat", bytes.NewReader(heartbeatBody(i, seq)))
		req.Header.Set("Authorization", "Bearer "+creds[i])
		d := &discard{h: http.Header{}}
		h.ServeHTTP(d, req)
		return d.code
	}
	// Warm the credential cache (seq 1 of every droplet).
	for i := range creds {
		if code := send(i, 1); code != http.StatusAccepted {
			b.Fatalf("warm-up heartbeat: %d", code)
		}
	}
	written := func() float64 {
		return testutilCount(b, w.svc.m.heartbeats.WithLabelValues("written")) + testutilCount(b, w.svc.m.heartbeats.WithLabelValues("dropped"))
	}
	queued := func() float64 { return testutilCount(b, w.svc.m.heartbeats.WithLabelValues("queued")) }
	poll.Until(b, "warm-up written", func() bool { return written() == queued() })
	var next atomic.Int64
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			n := int(next.Add(1) - 1)
			if code := send(n%benchAgentsN, int64(n/benchAgentsN)+2); code != http.StatusAccepted {
				b.Errorf("heartbeat: %d", code)
				return
			}
		}
	})
	deadline := time.Now().Add(5 * time.Minute)
	for written() != queued() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if got := testutilCount(b, w.svc.m.heartbeats.WithLabelValues("dropped")); got != 0 {
		b.Fatalf("%v heartbeats dropped", got)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "heartbeats/s")
}

// BenchmarkHeartbeatRawUpsert writes the same heartbeats as
// BenchmarkHeartbeatIngest with the batch statement directly.
func BenchmarkHeartbeatRawUpsert(b *testing.B) {
	w := newWorld(b)
	benchAgents(b, w, benchAgentsN)
	batch := make([]store.Heartbeat, 0, DefaultBatchSize)
	rows := make([]store.Heartbeat, b.N)
	for n := range rows {
		i := n % benchAgentsN
		rows[n] = store.Heartbeat{Droplet: int64(100000 + i), Workspace: fmt.Sprintf("ws-%06d", i), Seq: int64(n/benchAgentsN) + 2,
			At: time.Now(), Body: heartbeatBody(i, int64(n/benchAgentsN)+2), Applied: 1, AgentVersion: "0.1.0", OK: true}
	}
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	for _, hb := range rows {
		batch = append(batch, hb)
		if len(batch) == DefaultBatchSize {
			if err := w.svc.writeBatch(ctx, batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		if err := w.svc.writeBatch(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "heartbeats/s")
}
