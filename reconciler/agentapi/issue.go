package agentapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

// Issuing a manifest is two steps with different costs. prepare is CPU:
// build the content, seal the credentials to the droplet, sign. store is
// Postgres: one statement stores a batch of manifests, raises each
// droplet's issued version and notifies the other replicas. A sweep runs
// prepare on every core and hands the results to two writers, so a
// fleet-wide change streams out in batches instead of one transaction per
// droplet; each stored batch wakes its droplets' long-polls at once.

// maxStoreBatch bounds the manifests one statement stores.
const maxStoreBatch = 256

// storeWriters is how many batches are stored at once.
const storeWriters = 2

// issue is a manifest prepared for one droplet: rendered, its credentials
// sealed to the droplet, signed, ready to store.
type issue struct {
	t        store.Target
	idx      int // in the sweep's target list
	snap     *tenants.Snapshot
	m        schema.Manifest
	env      []byte
	digest   [32]byte
	inputs   [32]byte
	fleet    string // digest of the fleet inputs rendered from
	creds    [32]byte
	resealed bool // false: the previous manifest's ciphertexts were reused
	// c and droplet are what content built (finish seals from them);
	// reuse: the previous manifest's credential ciphertexts stay valid.
	c       content
	droplet string
	reuse   bool
}

// prepare renders t's next manifest, or returns nil when its inputs are
// unchanged and its manifest is far from expiry. Its version is one past
// the droplet's highest issued version as read with t: store refuses it if
// another render issued one since.
func (s *Service) prepare(ctx context.Context, snap *tenants.Snapshot, t store.Target, now time.Time) (*issue, error) {
	is, err := s.content(ctx, snap, t, now)
	if err != nil || is == nil {
		return nil, err
	}
	return is, s.finish(ctx, is, now, nil)
}

// content is prepare's first half: what t's next manifest holds but its
// credentials, version and signature, or nil when none is due (inputs
// unchanged, far from expiry). is.reuse says the previous manifest's
// credential ciphertexts stay valid (finish reads them).
func (s *Service) content(ctx context.Context, snap *tenants.Snapshot, t store.Target, now time.Time) (*issue, error) {
	if !s.enabled {
		return nil, errDisabled
	}
	if s.announceErr != nil {
		return nil, s.announceErr
	}
	dropletS := strconv.FormatInt(t.Droplet, 10)
	fi, err := s.fleetInputsFor(ctx, snap, t)
	if err != nil {
		return nil, err
	}
	c, err := build(*snap, fi, t.Workspace, dropletS, t.IP, t.Recipient, s.cfg.Signer.KeyID(), s.cfg.Announce)
	if err != nil {
		return nil, err
	}
	if t.State == lifecycleHibernating {
		hibernating(&c)
	}
	if err := s.backupSection(ctx, &c, t, dropletS, false); err != nil {
		return nil, err
	}
	rotateSection(&c, t)
	now = now.UTC().Truncate(time.Second)
	if t.Version > 0 && string(t.Inputs) == string(c.inputs[:]) && t.Expires.Sub(now) > s.cfg.ManifestTTL/3 {
		return nil, nil
	}
	is := &issue{t: t, snap: snap, m: c.manifest, c: c, droplet: dropletS, inputs: c.inputs, fleet: fi.digest,
		creds: credsKey(c.creds, t.Recipient, t.Workspace, dropletS)}
	// Same credentials for the same droplet key and slot: the ciphertexts
	// already sealed to this droplet stay valid (and their digests
	// unchanged, so the agent does not rewrite them).
	is.reuse = t.Version > 0 && string(t.Creds) == string(is.creds[:])
	return is, nil
}

// finish completes is: its credentials (the previous manifest's
// ciphertexts when they stay valid, read from envs when it holds the
// droplet's previous envelope, else from the cache or Postgres; otherwise
// sealed anew), version, times and signature.
func (s *Service) finish(ctx context.Context, is *issue, now time.Time, envs map[int64][]byte) error {
	t := is.t
	var creds []schema.ManifestCredential
	var err error
	if is.reuse {
		if env := envs[t.Droplet]; env != nil {
			creds, err = envelopeCreds(env)
		} else {
			creds, err = s.previousCreds(ctx, t)
		}
		if err != nil {
			s.log.Warn("previous manifest's credentials unreadable; sealing again", "tenant", t.Workspace, "droplet", t.Droplet, "err", err)
			creds = nil
		}
	}
	if creds == nil {
		recipient, err := age.ParseX25519Recipient(t.Recipient)
		if err != nil {
			return fmt.Errorf("droplet %d recipient: %w", t.Droplet, err)
		}
		if creds, err = reseal(is.c.creds, s.cfg.Identities, recipient, t.Workspace, is.droplet); err != nil {
			return err
		}
		is.resealed = true
	}
	is.m.Credentials = creds
	if is.m.Backup != nil && is.m.Backup.Restore != nil {
		// Sealed only now: a fresh ciphertext each time, so not an input.
		if err := s.backupSection(ctx, &is.c, t, is.droplet, true); err != nil {
			return err
		}
		is.m.Backup = is.c.manifest.Backup
	}
	now = now.UTC().Truncate(time.Second)
	is.m.Commit = is.snap.Commit
	is.m.IssuedAt, is.m.Expires = now, now.Add(s.cfg.ManifestTTL)
	is.m.Version = t.HWM + 1
	payload, err := json.Marshal(is.m)
	if err != nil {
		return err
	}
	if is.env, err = s.cfg.Signer.Sign(schema.ManifestPayloadType, payload); err != nil {
		return fmt.Errorf("sign: %w", err)
	}
	if len(is.env) > schema.MaxEnvelopeSize {
		return fmt.Errorf("manifest is %d bytes, over the %d-byte limit", len(is.env), schema.MaxEnvelopeSize)
	}
	is.digest = sha256.Sum256(is.env)
	return nil
}

// backupSection puts the manifest's backup section into c and its inputs
// (the policy, recipients, restore id and an operator's outstanding
// request; never the sealed identity).
func (s *Service) backupSection(ctx context.Context, c *content, t store.Target, droplet string, seal bool) error {
	if s.cfg.Backups == nil {
		return nil
	}
	mb, err := s.cfg.Backups.Section(ctx, t.Workspace, droplet, t.Recipient, t.Restore, seal)
	if err != nil || mb == nil {
		return err
	}
	// An operator's backup request is an input: a new one issues a
	// manifest, a satisfied one (a good backup started since) another.
	mb.RequestedAt = t.BackupAsked
	c.manifest.Backup = mb
	if !seal {
		in, err := json.Marshal(mb)
		if err != nil {
			return err
		}
		c.inputs = sha256.Sum256(append(c.inputs[:], in...))
	}
	return nil
}

// credsKey identifies what a manifest's credentials are sealed from: the
// droplet's recipient, the slot each is bound to, and the fleet-sealed
// ciphertexts (never plaintext).
func credsKey(creds []schema.Credential, recipient, workspace, droplet string) [32]byte {
	h := sha256.New()
	for _, f := range []string{recipient, workspace, droplet} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	for _, cr := range creds {
		sum := sha256.Sum256([]byte(cr.Sealed))
		h.Write([]byte(cr.Name + "\x00" + cr.Type + "\x00"))
		h.Write(sum[:])
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// previousCreds returns the credentials of t's newest manifest, from the
// cache or else from Postgres.
func (s *Service) previousCreds(ctx context.Context, t store.Target) ([]schema.ManifestCredential, error) {
	s.manMu.Lock()
	e := s.man[t.Droplet]
	s.manMu.Unlock()
	var env []byte
	if e != nil && e.version == t.Version {
		env = s.bodies.get(t.Droplet, t.Version)
	}
	if env == nil {
		var err error
		if env, err = s.st.ManifestEnvelope(ctx, t.Droplet, t.Version); err != nil {
			return nil, fmt.Errorf("read manifest %d of droplet %d: %w", t.Version, t.Droplet, err)
		}
	}
	return envelopeCreds(env)
}

// envelopeCreds reads the credentials of a manifest this service stored
// (its own signature; nothing from outside).
func envelopeCreds(env []byte) ([]schema.ManifestCredential, error) {
	var e dsse.Envelope
	if err := json.Unmarshal(env, &e); err != nil {
		return nil, err
	}
	payload, err := base64.StdEncoding.DecodeString(e.Payload)
	if err != nil {
		return nil, err
	}
	var m struct {
		Credentials []schema.ManifestCredential `json:"credentials"`
	}
	if err := json.Unmarshal(payload, &m); err != nil {
		return nil, err
	}
	if m.Credentials == nil {
		m.Credentials = []schema.ManifestCredential{}
	}
	return m.Credentials, nil
}

// store stores batch in one statement (store.StoreManifests) and reports
// which manifests were stored (a manifest is left out when another render
// issued a version of its droplet since it was prepared).
func (s *Service) store(ctx context.Context, batch []*issue) ([]bool, error) {
	ms := make([]store.Manifest, len(batch))
	for k, is := range batch {
		m := store.Manifest{Droplet: is.t.Droplet, Version: is.m.Version, Workspace: is.t.Workspace,
			Envelope: is.env, Digest: is.digest[:], IssuedAt: is.m.IssuedAt, Expires: is.m.Expires,
			Commit: is.snap.Commit, InputsHash: is.inputs[:], CredsHash: is.creds[:], FleetInputs: is.fleet}
		if m.Commit == "" {
			m.Commit = noCommit
		}
		if !is.snap.Time.IsZero() {
			m.CommitAt = &is.snap.Time
		}
		if c := is.snap.Correlation; c != "" {
			m.Correlation = &c
		}
		ms[k] = m
	}
	return s.st.StoreManifests(ctx, ms)
}

// eachLogged is how many manifests one sweep logs one by one at info
// ("manifest issued"), and how many "manifest applied" lines a minute
// (eachLoggedWindow) are; past it they are written at debug, and the sweep
// ends with one line saying how many it issued. A fleet-wide change then
// writes a few dozen lines at info, not one per droplet (100,000 at the
// scale run), while a one-tenant change keeps its line; every manifest
// stays in the manifests table and in genesis_manifests_issued_total.
const (
	eachLogged       = 20
	eachLoggedWindow = time.Minute
)

// published serves a stored manifest from the cache (waking its droplet's
// long-polls) and records it. logged counts the manifests its sweep has
// logged (nil: a render of its own, such as an update_manifest action's,
// logged at info for the first eachLogged of every minute: a commit that
// edits every tenant plans an action per tenant).
func (s *Service) published(is *issue, logged *atomic.Int64) {
	s.bodies.put(is.t.Droplet, is.m.Version, is.env)
	s.install(is.t.Droplet, &entry{version: is.m.Version, etag: `"` + hex.EncodeToString(is.digest[:]) + `"`, published: s.cfg.Now()})
	s.m.issued.Inc()
	level := slog.LevelInfo
	switch {
	case logged == nil:
		level = s.boundedLevel(s.issuedLogs, "manifest issued")
	case logged.Add(1) > eachLogged:
		level = slog.LevelDebug
	}
	s.log.Log(context.Background(), level, "manifest issued", "tenant", is.t.Workspace, "droplet", is.t.Droplet, "version", is.m.Version, "commit", is.snap.Commit,
		"correlation_id", is.snap.Correlation, "workflows", len(is.m.Workflows), "credentials", len(is.m.Credentials),
		"resealed", is.resealed, "announced_keys", len(is.m.SigningKeys), "expires", is.m.Expires)
}

// swept is what a sweep did for one target.
type swept struct {
	issued  bool
	expires time.Time // of the droplet's newest manifest
}

// issueAll prepares the manifests of ts on every core and stores them in
// batches as they come; a target whose manifest another render issued in
// the meantime, or whose batch failed, is rendered again on its own. One
// tenant's failure never stops the others.
func (s *Service) issueAll(ctx context.Context, snap *tenants.Snapshot, ts []store.Target, now time.Time, logged *atomic.Int64) []swept {
	out := make([]swept, len(ts))
	for i, t := range ts {
		out[i].expires = t.Expires
	}
	// First what is due (cheap: inputs compared, nothing sealed or read),
	// then the previous envelopes of those that keep their credentials
	// in one statement (a fleet-wide template change reuses every
	// droplet's ciphertexts: one read per droplet, two workers waiting on
	// each, paced a 100,000-droplet sweep), then seal, sign and store.
	due := make([]*issue, len(ts))
	forEach(ctx, len(ts), func(i int) {
		is, err := s.content(ctx, snap, ts[i], now)
		if err != nil {
			s.log.Error("render manifest failed", "tenant", ts[i].Workspace, "droplet", ts[i].Droplet, "err", err)
			return
		}
		if is != nil {
			is.idx = i
			due[i] = is
		}
	})
	due = slices.DeleteFunc(due, func(is *issue) bool { return is == nil })
	envs := s.previousEnvelopes(ctx, due)
	prepared := make(chan *issue, 2*maxStoreBatch)
	go func() {
		forEach(ctx, len(due), func(k int) {
			is := due[k]
			if err := s.finish(ctx, is, now, envs); err != nil {
				s.log.Error("render manifest failed", "tenant", is.t.Workspace, "droplet", is.t.Droplet, "err", err)
				return
			}
			prepared <- is
		})
		close(prepared)
	}()
	var writers sync.WaitGroup
	for range storeWriters {
		writers.Go(func() {
			for first := range prepared {
				batch := []*issue{first}
			fill:
				for len(batch) < maxStoreBatch {
					select {
					case is, ok := <-prepared:
						if !ok {
							break fill
						}
						batch = append(batch, is)
					default:
						break fill
					}
				}
				s.storeBatch(ctx, batch, out, logged)
			}
		})
	}
	writers.Wait()
	return out
}

// storeBatch stores batch and publishes what was stored; the rest is
// rendered again one droplet at a time.
func (s *Service) storeBatch(ctx context.Context, batch []*issue, out []swept, logged *atomic.Int64) {
	stored, err := s.store(ctx, batch)
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("manifest batch failed; storing one by one", "manifests", len(batch), "err", err)
		stored = make([]bool, len(batch))
	}
	for k, is := range batch {
		if stored[k] {
			s.published(is, logged)
			out[is.idx] = swept{issued: true, expires: is.m.Expires}
			continue
		}
		if err := s.renderOne(ctx, is.t); err != nil && ctx.Err() == nil {
			s.log.Error("render manifest failed", "tenant", is.t.Workspace, "droplet", is.t.Droplet, "err", err)
		}
	}
}

// forEach runs f(0) … f(n-1) on every core (at least two workers) and
// returns when all have, or when ctx ends (the rest are not started).
func forEach(ctx context.Context, n int, f func(i int)) {
	var next atomic.Int64
	var workers sync.WaitGroup
	for range max(2, runtime.GOMAXPROCS(0)) {
		workers.Go(func() {
			for i := int(next.Add(1) - 1); i < n && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				f(i)
			}
		})
	}
	workers.Wait()
}

// previousEnvelopes reads, in one statement, the newest envelope of every
// droplet in due whose credentials stay valid and whose envelope the cache
// does not hold. A failure is logged: finish then reads them one by one.
func (s *Service) previousEnvelopes(ctx context.Context, due []*issue) map[int64][]byte {
	var refs []store.ManifestRef
	for _, is := range due {
		if !is.reuse {
			continue
		}
		s.manMu.Lock()
		e := s.man[is.t.Droplet]
		s.manMu.Unlock()
		if e != nil && e.version == is.t.Version && s.bodies.get(is.t.Droplet, is.t.Version) != nil {
			continue
		}
		refs = append(refs, store.ManifestRef{Droplet: is.t.Droplet, Version: is.t.Version})
	}
	if len(refs) == 0 {
		return nil
	}
	envs, err := s.st.ManifestEnvelopes(ctx, refs)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("previous manifests unreadable in one statement; reading them one by one", "manifests", len(refs), "err", err)
	}
	return envs
}
