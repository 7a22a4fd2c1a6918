package agentapi

import (
	"container/list"
	"sync"
)

// DefaultEnvelopeCacheBytes bounds the signed envelopes a replica keeps in
// memory (Config.EnvelopeCacheBytes).
const DefaultEnvelopeCacheBytes = 64 << 20

// envelopeOverhead is what one cached envelope costs besides its bytes (the
// list element, the map entry, the record), counted against the bound.
const envelopeOverhead = 160

// envelopes keeps the bodies of served manifests, least recently used
// first out, within a byte bound. Every droplet's newest version and ETag
// stay in Service.man (about 200 bytes each: enough to answer 304s and to
// park long-polls for a million agents); the body, a few KiB to a MiB, is
// needed only for a 200, and a miss reads it from Postgres by (droplet,
// version). A fleet-wide change therefore no longer holds every new
// envelope at once: each stays while its agent is likely to fetch it (the
// long-poll wakes as it is stored) and is pushed out by newer ones.
type envelopes struct {
	mu    sync.Mutex
	limit int
	size  int
	ll    *list.List // front: most recently used; values *envelopeRec
	by    map[int64]*list.Element
}

type envelopeRec struct {
	droplet int64
	version int64
	body    []byte
}

func newEnvelopes(limit int) *envelopes {
	return &envelopes{limit: limit, ll: list.New(), by: map[int64]*list.Element{}}
}

func recSize(body []byte) int { return len(body) + envelopeOverhead }

// get returns droplet's cached body of version (nil: not cached).
func (c *envelopes) get(droplet, version int64) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.by[droplet]
	if !ok {
		return nil
	}
	r := el.Value.(*envelopeRec)
	if r.version != version {
		return nil
	}
	c.ll.MoveToFront(el)
	return r.body
}

// put caches droplet's body of version, replacing an older one, unless a
// newer version is cached; then evicts from the back until within the
// bound. A body larger than the whole bound is not kept.
func (c *envelopes) put(droplet, version int64, body []byte) {
	if recSize(body) > c.limit {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.by[droplet]; ok {
		r := el.Value.(*envelopeRec)
		if r.version > version {
			return
		}
		c.size += recSize(body) - recSize(r.body)
		r.version, r.body = version, body
		c.ll.MoveToFront(el)
	} else {
		c.by[droplet] = c.ll.PushFront(&envelopeRec{droplet: droplet, version: version, body: body})
		c.size += recSize(body)
	}
	for c.size > c.limit {
		el := c.ll.Back()
		r := el.Value.(*envelopeRec)
		c.ll.Remove(el)
		delete(c.by, r.droplet)
		c.size -= recSize(r.body)
	}
}

// clear empties the cache.
func (c *envelopes) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	clear(c.by)
	c.size = 0
}

// stats returns the bytes counted against the bound and the envelopes held.
func (c *envelopes) stats() (size, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.size, len(c.by)
}
