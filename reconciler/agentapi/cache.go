package agentapi

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// maxNegative bounds the cache of unknown credentials.
const maxNegative = 100_000

// negativeTTL is how long an unknown credential is answered 401 from
// memory.
const negativeTTL = 30 * time.Second

// credKey is a credential's key in the set of valid credentials: the first
// 8 bytes of its SHA-256. A bogus credential sharing a valid one's prefix
// (2⁻⁶⁴ per try and per valid credential) only costs one database lookup,
// which refuses it.
func credKey(h [32]byte) uint64 { return binary.BigEndian.Uint64(h[:8]) }

// credentials is the set of valid agent credentials by credKey, kept on
// every replica: loaded when the notification listener (re)connects, then
// kept current by "k" and "r" notifications and by this replica's own
// enrollments. A credential outside the set is refused without touching
// Postgres. Until the set is loaded (start, or a reconnect after
// notifications may have been missed) authenticate asks Postgres.
type credentials struct {
	keys   credSet
	loaded bool
	// epoch counts revocations seen, so that a lookup that raced a
	// revocation does not cache what it read before it.
	epoch uint64
}

// credSet is a set of credKeys made compact for a million agents: a
// sorted slice as loaded (8 bytes per agent) plus the keys added and
// removed since, merged into a new slice when they grow past a sixteenth of
// it. A Go map would cost about 38 bytes per agent (TestCredentialSetMemory).
type credSet struct {
	base           []uint64 // sorted, no duplicates
	added, removed map[uint64]struct{}
}

// newCredSet makes a set of keys (reordered in place).
func newCredSet(keys []uint64) credSet {
	slices.Sort(keys)
	return credSet{base: slices.Compact(keys), added: map[uint64]struct{}{}, removed: map[uint64]struct{}{}}
}

func (c *credSet) inBase(k uint64) bool {
	_, ok := slices.BinarySearch(c.base, k)
	return ok
}

func (c *credSet) has(k uint64) bool {
	if _, ok := c.added[k]; ok {
		return true
	}
	if _, ok := c.removed[k]; ok {
		return false
	}
	return c.inBase(k)
}

func (c *credSet) add(k uint64) {
	delete(c.removed, k)
	if !c.inBase(k) {
		c.added[k] = struct{}{}
	}
	c.compact()
}

func (c *credSet) remove(k uint64) {
	delete(c.added, k)
	if c.inBase(k) {
		c.removed[k] = struct{}{}
	}
	c.compact()
}

func (c *credSet) len() int { return len(c.base) - len(c.removed) + len(c.added) }

// compact merges the changes into the slice once they are many.
func (c *credSet) compact() {
	if len(c.added)+len(c.removed) <= 1024+len(c.base)/16 {
		return
	}
	keys := make([]uint64, 0, c.len())
	for _, k := range c.base {
		if _, gone := c.removed[k]; !gone {
			keys = append(keys, k)
		}
	}
	for k := range c.added {
		keys = append(keys, k)
	}
	*c = newCredSet(keys)
}

// authenticate returns the droplet of the request's bearer credential, or
// nil. A credential not in the set of valid ones costs no database round
// trip; a valid one is looked up once and then answered from memory.
func (s *Service) authenticate(r *http.Request) (*agentRef, error) {
	h := r.Header.Get("Authorization")
	cred, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || cred == "" || len(cred) > 256 {
		return nil, nil
	}
	key := hash(cred)
	now := s.cfg.Now()
	s.authMu.RLock()
	ref, hit := s.auth[key]
	valid := s.creds.keys.has(credKey(key))
	loaded, epoch := s.creds.loaded, s.creds.epoch
	negAt, neg := s.neg[key]
	s.authMu.RUnlock()
	if hit {
		return ref, nil
	}
	if (loaded && !valid) || (neg && now.Sub(negAt) < negativeTTL) {
		return nil, nil
	}
	ag, found, err := s.st.AgentByCredential(r.Context(), key)
	if err != nil {
		return nil, fmt.Errorf("authenticate: %w", err)
	}
	if !found {
		s.authMu.Lock()
		if len(s.neg) >= maxNegative {
			clear(s.neg)
		}
		s.neg[key] = now
		s.authMu.Unlock()
		return nil, nil
	}
	ref = &agentRef{droplet: ag.Droplet, dropletS: strconv.FormatInt(ag.Droplet, 10), workspace: ag.Workspace, lastSeq: ag.LastHeartbeatSeq, pending: ag.Pending}
	s.authMu.Lock()
	defer s.authMu.Unlock()
	if s.creds.epoch != epoch {
		// A revocation arrived meanwhile: answer this request (Postgres
		// said valid) but cache nothing.
		return ref, nil
	}
	return s.rememberLocked(key, ref), nil
}

// remember caches an authenticated credential, adds it to the set of valid
// ones, and returns the cached ref (an existing one wins, keeping its
// sequence number). Enrollment calls it for the credential it issued.
func (s *Service) remember(key [32]byte, ref *agentRef) *agentRef {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	return s.rememberLocked(key, ref)
}

func (s *Service) rememberLocked(key [32]byte, ref *agentRef) *agentRef {
	s.creds.keys.add(credKey(key))
	s.m.credentials.Set(float64(s.creds.keys.len()))
	if old, ok := s.auth[key]; ok {
		return old
	}
	delete(s.neg, key)
	s.auth[key] = ref
	return ref
}

// forgetDroplet drops every cached credential of droplet (it enrolled
// again: its old credential is no longer valid).
func (s *Service) forgetDroplet(droplet int64) {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	for k, ref := range s.auth {
		if ref.droplet == droplet {
			delete(s.auth, k)
		}
	}
}

// validated adds a credential (hash) to the set of valid ones ("k").
func (s *Service) validated(key [32]byte) {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	s.creds.keys.add(credKey(key))
	s.m.credentials.Set(float64(s.creds.keys.len()))
}

// revoked removes a credential (hash) from the set of valid ones and from
// the cache ("r").
func (s *Service) revoked(key [32]byte) {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	s.creds.keys.remove(credKey(key))
	delete(s.auth, key)
	s.creds.epoch++
	s.m.credentials.Set(float64(s.creds.keys.len()))
}

// loadCredentials reads the set of valid credentials from Postgres and
// installs it. It runs on the listener's goroutine after LISTEN, so every
// change committed after the read started is applied after it, from the
// notifications queued meanwhile.
func (s *Service) loadCredentials(ctx context.Context) error {
	keys, err := s.st.CredentialPrefixes(ctx)
	if err != nil {
		return err
	}
	s.authMu.Lock()
	defer s.authMu.Unlock()
	// Credentials this replica issued while the read ran are in the read
	// (they committed first) or announced by "k" later.
	s.creds.keys = newCredSet(keys)
	s.creds.loaded = true
	s.m.credentials.Set(float64(s.creds.keys.len()))
	return nil
}

// entry is the newest manifest of a droplet as served: its version and
// ETag, enough to answer a 304 and to park a long-poll. The envelope itself
// lives in the bounded envelopes cache (Service.bodies) and is read from
// Postgres when pushed out (body). Entries are never changed once made; a
// newer version replaces the entry.
type entry struct {
	version int64 // 0: no manifest yet
	etag    string
	// published is when this replica learnt of the manifest (zero: read
	// on demand, not announced).
	published time.Time
}

// etagOf is the quoted hex SHA-256 of an envelope.
func etagOf(envelope []byte) string {
	sum := sha256.Sum256(envelope)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

// manifestFor returns droplet's cached entry, loading it on a miss.
func (s *Service) manifestFor(ctx context.Context, droplet int64) (*entry, error) {
	s.manMu.Lock()
	e, ok := s.man[droplet]
	s.manMu.Unlock()
	if ok {
		return e, nil
	}
	e, err := s.loadManifest(ctx, droplet)
	if err != nil {
		return nil, err
	}
	return s.install(droplet, e), nil
}

// loadManifest reads droplet's newest manifest from Postgres.
func (s *Service) loadManifest(ctx context.Context, droplet int64) (*entry, error) {
	version, env, err := s.st.LatestManifest(ctx, droplet)
	if err != nil {
		return nil, fmt.Errorf("load manifest of droplet %d: %w", droplet, err)
	}
	if version == 0 {
		return &entry{}, nil
	}
	s.bodies.put(droplet, version, env)
	return &entry{version: version, etag: etagOf(env)}, nil
}

// body returns the envelope of droplet's version e: from the bounded cache,
// or else from Postgres (and caches it again).
func (s *Service) body(ctx context.Context, droplet int64, e *entry) ([]byte, error) {
	if env := s.bodies.get(droplet, e.version); env != nil {
		return env, nil
	}
	s.m.envelopeMisses.Inc()
	env, err := s.st.ManifestEnvelope(ctx, droplet, e.version)
	if err != nil {
		return nil, fmt.Errorf("read manifest %d of droplet %d: %w", e.version, droplet, err)
	}
	s.bodies.put(droplet, e.version, env)
	return env, nil
}

// install caches e for droplet unless a newer version is cached, wakes the
// droplet's long-polls when it changed, and returns the cached entry.
func (s *Service) install(droplet int64, e *entry) *entry {
	s.manMu.Lock()
	defer s.manMu.Unlock()
	if cur, ok := s.man[droplet]; ok && cur.version >= e.version {
		return cur
	}
	s.man[droplet] = e
	if ch, ok := s.waiters[droplet]; ok {
		close(ch)
		delete(s.waiters, droplet)
	}
	return e
}

// changed returns a channel closed when droplet's cached entry is no longer
// the one with etag (closed at once if it already is not).
func (s *Service) changed(droplet int64, etag string) <-chan struct{} {
	s.manMu.Lock()
	defer s.manMu.Unlock()
	if cur, ok := s.man[droplet]; !ok || cur.etag != etag {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	ch, ok := s.waiters[droplet]
	if !ok {
		ch = make(chan struct{})
		s.waiters[droplet] = ch
	}
	return ch
}

// flush empties the caches (the notification stream was interrupted, so
// they may be stale). Waiting long-polls are woken to re-read.
func (s *Service) flush() {
	s.authMu.Lock()
	clear(s.auth)
	clear(s.neg)
	// Revocations may have been missed: ask Postgres until the set is
	// loaded again.
	s.creds.loaded = false
	s.creds.epoch++
	s.authMu.Unlock()
	s.bodies.clear()
	s.manMu.Lock()
	clear(s.man)
	for d, ch := range s.waiters {
		close(ch)
		delete(s.waiters, d)
	}
	s.manMu.Unlock()
}

// listen follows the notification channel on a dedicated connection until
// ctx ends, reconnecting with backoff.
func (s *Service) listen(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("notification listener lost; caches flushed", "err", err, "retry_in", backoff.String())
		s.flush()
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

func (s *Service) listenOnce(ctx context.Context) error {
	return s.st.ListenAgents(ctx, func() error {
		// Whatever happened while we were not listening is unknown, also
		// before the first LISTEN: a manifest stored between a long-poll's
		// cache fill and now would otherwise wait out the long-poll.
		s.flush()
		return s.loadCredentials(ctx)
	}, func(payload string) { s.notified(ctx, payload) })
}

// notified applies one notification of the agents channel (see package
// store's ListenAgents).
func (s *Service) notified(ctx context.Context, payload string) {
	f := strings.Fields(payload)
	if len(f) < 2 {
		return
	}
	droplet, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return
	}
	switch f[0] {
	case "k", "r":
		var key [32]byte
		if len(f) != 3 || hex.DecodedLen(len(f[2])) != len(key) {
			return
		}
		if _, err := hex.Decode(key[:], []byte(f[2])); err != nil {
			return
		}
		if f[0] == "k" {
			s.validated(key)
		} else {
			s.revoked(key)
		}
	case "a":
		// Our own enrollment also lands here: the fresh credential is
		// then read once more from Postgres.
		s.forgetDroplet(droplet)
	case "m":
		if len(f) != 3 {
			return
		}
		v, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return
		}
		s.manMu.Lock()
		cur, ok := s.man[droplet]
		s.manMu.Unlock()
		if !ok || cur.version >= v {
			return // not cached here (loaded on demand), or already known
		}
		e, err := s.loadManifest(ctx, droplet)
		if err != nil {
			s.log.Error("load notified manifest failed", "droplet", droplet, "err", err)
			return
		}
		e.published = s.cfg.Now()
		s.install(droplet, e)
	}
}
