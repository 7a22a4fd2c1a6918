package agentapi

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"testing"
)

// TestEnvelopeCacheBound: whatever is put, the bytes held (with the
// per-entry overhead) never pass the bound, the most recently used stay,
// an older version never replaces a newer one, and a body larger than the
// bound is not kept.
func TestEnvelopeCacheBound(t *testing.T) {
	const limit = 64 << 10
	c := newEnvelopes(limit)
	rng := rand.New(rand.NewPCG(23, 2))
	for i := range 5000 {
		droplet := int64(rng.IntN(300))
		body := bytes.Repeat([]byte{'x'}, 200+rng.IntN(4000))
		c.put(droplet, int64(i), body)
		if i%7 == 0 {
			c.get(int64(rng.IntN(300)), int64(i))
		}
		size, n := c.stats()
		sum := 0
		for el := c.ll.Front(); el != nil; el = el.Next() {
			sum += recSize(el.Value.(*envelopeRec).body)
		}
		if size > limit || size != sum || n != c.ll.Len() {
			t.Fatalf("after put %d: size %d (sum %d, %d entries, list %d), bound %d", i, size, sum, n, c.ll.Len(), limit)
		}
		if got := c.get(droplet, int64(i)); !bytes.Equal(got, body) {
			t.Fatalf("put %d: the newest body is not cached", i)
		}
	}

	c.put(1, 10, []byte("new"))
	c.put(1, 9, []byte("old"))
	if got := c.get(1, 10); string(got) != "new" {
		t.Errorf("after an older put: version 10 = %q, want new", got)
	}
	if got := c.get(1, 9); got != nil {
		t.Errorf("version 9 = %q, want nothing (older than the cached one)", got)
	}
	c.put(2, 1, make([]byte, limit))
	if got := c.get(2, 1); got != nil {
		t.Errorf("a body over the bound is cached")
	}
	c.clear()
	if size, n := c.stats(); size != 0 || n != 0 {
		t.Errorf("after clear: %d bytes, %d entries", size, n)
	}
}

// TestEnvelopeCacheMissServedFromPostgres runs a service whose envelope
// cache holds about one manifest: every droplet still gets its exact
// envelope (read back from Postgres when pushed out, counted as a miss),
// conditional GETs are answered from the ETags kept for every droplet
// without reading any envelope, and the bound holds throughout.
func TestEnvelopeCacheMissServedFromPostgres(t *testing.T) {
	const limit = 12 << 10
	w := newWorld(t, func(c *Config) { c.EnvelopeCacheBytes = limit })
	var agents []*agent
	for i := range 6 {
		ws := fmt.Sprintf("ws-cache-%d", i)
		w.setTenant(ws, "blob"+ws, tenantSpec{domains: []string{ws + ".example.com"}})
		agents = append(agents, w.mustEnroll(ws, 1, 3001+i, fmt.Sprintf("203.0.113.%d", 10+i)))
	}
	w.firstManifest()

	etags := map[*agent]string{}
	bodies := map[*agent][]byte{}
	for round := range 2 {
		for i, a := range agents {
			code, hdr, env := w.do("GET", "/v1/manifest", a.cred, nil, nil)
			if code != http.StatusOK {
				t.Fatalf("round %d agent %d: GET %d %s", round, i, code, env)
			}
			m := w.verify(env)
			if m.Droplet != fmt.Sprint(3001+i) {
				t.Fatalf("agent %d got droplet %s's manifest", i, m.Droplet)
			}
			if round == 0 {
				etags[a], bodies[a] = hdr.Get("ETag"), env
			} else if !bytes.Equal(env, bodies[a]) || hdr.Get("ETag") != etags[a] {
				t.Errorf("agent %d: the envelope read back differs from the one first served", i)
			}
			if size, _ := w.svc.bodies.stats(); size > limit {
				t.Fatalf("envelope cache holds %d bytes, bound %d", size, limit)
			}
		}
	}
	misses := testutilCount(t, w.svc.m.envelopeMisses)
	if misses == 0 {
		t.Errorf("no envelope was read back from Postgres with a cache of %d bytes", limit)
	}
	for i, a := range agents {
		code, _, _ := w.do("GET", "/v1/manifest", a.cred, map[string]string{"If-None-Match": etags[a]}, nil)
		if code != http.StatusNotModified {
			t.Errorf("agent %d: conditional GET = %d, want 304", i, code)
		}
	}
	if got := testutilCount(t, w.svc.m.envelopeMisses); got != misses {
		t.Errorf("304s read %v envelopes from Postgres, want none", got-misses)
	}
}
