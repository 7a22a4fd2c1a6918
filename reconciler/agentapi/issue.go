package agentapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"

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
	t        target
	idx      int // in the sweep's target list
	snap     *tenants.Snapshot
	m        schema.Manifest
	env      []byte
	digest   [32]byte
	inputs   [32]byte
	creds    [32]byte
	resealed bool // false: the previous manifest's ciphertexts were reused
}

// prepare renders t's next manifest, or returns nil when its inputs are
// unchanged and its manifest is far from expiry. Its version is one past
// the droplet's highest issued version as read with t: store refuses it if
// another render issued one since.
func (s *Service) prepare(ctx context.Context, snap *tenants.Snapshot, t target, now time.Time) (*issue, error) {
	if !s.enabled {
		return nil, errDisabled
	}
	if s.announceErr != nil {
		return nil, s.announceErr
	}
	dropletS := strconv.FormatInt(t.droplet, 10)
	c, err := build(*snap, t.workspace, dropletS, t.ip, t.recipient, s.cfg.Signer.KeyID(), s.cfg.Announce)
	if err != nil {
		return nil, err
	}
	if t.state == lifecycleHibernating {
		hibernating(&c)
	}
	now = now.UTC().Truncate(time.Second)
	if t.version > 0 && string(t.inputs) == string(c.inputs[:]) && t.expires.Sub(now) > s.cfg.ManifestTTL/3 {
		return nil, nil
	}
	is := &issue{t: t, snap: snap, m: c.manifest, inputs: c.inputs, creds: credsKey(c.creds, t.recipient, t.workspace, dropletS)}
	var creds []schema.ManifestCredential
	if t.version > 0 && string(t.creds) == string(is.creds[:]) {
		// Same credentials for the same droplet key and slot: the
		// ciphertexts already sealed to this droplet stay valid (and
		// their digests unchanged, so the agent does not rewrite them).
		if creds, err = s.previousCreds(ctx, t); err != nil {
			s.log.Warn("previous manifest's credentials unreadable; sealing again", "tenant", t.workspace, "droplet", t.droplet, "err", err)
		}
	}
	if creds == nil {
		recipient, err := age.ParseX25519Recipient(t.recipient)
		if err != nil {
			return nil, fmt.Errorf("droplet %d recipient: %w", t.droplet, err)
		}
		if creds, err = reseal(c.creds, s.cfg.Identities, recipient, t.workspace, dropletS); err != nil {
			return nil, err
		}
		is.resealed = true
	}
	is.m.Credentials = creds
	is.m.Commit = snap.Commit
	is.m.IssuedAt, is.m.Expires = now, now.Add(s.cfg.ManifestTTL)
	is.m.Version = t.hwm + 1
	payload, err := json.Marshal(is.m)
	if err != nil {
		return nil, err
	}
	if is.env, err = s.cfg.Signer.Sign(schema.ManifestPayloadType, payload); err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if len(is.env) > schema.MaxEnvelopeSize {
		return nil, fmt.Errorf("manifest is %d bytes, over the %d-byte limit", len(is.env), schema.MaxEnvelopeSize)
	}
	is.digest = sha256.Sum256(is.env)
	return is, nil
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
func (s *Service) previousCreds(ctx context.Context, t target) ([]schema.ManifestCredential, error) {
	s.manMu.Lock()
	e := s.man[t.droplet]
	s.manMu.Unlock()
	var env []byte
	if e != nil && e.version == t.version {
		env = e.body
	} else if err := s.pool.QueryRow(ctx, `SELECT envelope FROM manifests WHERE droplet_id = $1 AND version = $2`, t.droplet, t.version).Scan(&env); err != nil {
		return nil, fmt.Errorf("read manifest %d of droplet %d: %w", t.version, t.droplet, err)
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

// storeSQL stores a batch of prepared manifests in one statement. A
// manifest is stored only if its droplet's issued version is still the
// one it was prepared after (checked under the agent row's lock, taken in
// droplet order); the rest are left out and reported as not stored. The
// manifests trigger checks every version again.
const storeSQL = `WITH i AS (
	SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::bytea[], $5::bytea[], $6::timestamptz[], $7::timestamptz[],
		$8::text[], $9::bytea[], $10::timestamptz[], $11::text[], $12::bytea[])
	AS i(droplet_id, version, workspace, envelope, digest, issued_at, expires_at, commit, inputs_hash, commit_at, correlation, creds_hash)
), ok AS (
	SELECT a.droplet_id FROM agents a JOIN i ON a.droplet_id = i.droplet_id AND a.workspace = i.workspace::workspace_id
	WHERE a.manifest_version = i.version - 1
	ORDER BY a.droplet_id FOR NO KEY UPDATE OF a
), ins AS (
	INSERT INTO manifests (droplet_id, version, workspace, envelope, digest, issued_at, expires_at, commit, inputs_hash, commit_at, correlation, creds_hash)
	SELECT i.droplet_id, i.version, i.workspace, i.envelope, i.digest, i.issued_at, i.expires_at, i.commit, i.inputs_hash, i.commit_at, i.correlation, i.creds_hash
	FROM i JOIN ok USING (droplet_id)
	RETURNING droplet_id, workspace, version
), fs AS (
	UPDATE fleet_status f SET manifest_version_issued = GREATEST(f.manifest_version_issued, ins.version), updated_at = now()
	FROM ins WHERE f.workspace = ins.workspace
)
SELECT droplet_id, pg_notify('` + notifyChannel + `', 'm ' || droplet_id || ' ' || version) FROM ins`

// store writes batch in one statement and reports which manifests were
// stored (a manifest is left out when another render issued a version of
// its droplet since it was prepared).
func (s *Service) store(ctx context.Context, batch []*issue) ([]bool, error) {
	n := len(batch)
	var (
		droplets, versions = make([]int64, n), make([]int64, n)
		workspaces         = make([]string, n)
		envs, digests      = make([][]byte, n), make([][]byte, n)
		issued, expires    = make([]time.Time, n), make([]time.Time, n)
		commits            = make([]string, n)
		inputs, creds      = make([][]byte, n), make([][]byte, n)
		commitAt           = make([]*time.Time, n)
		correlation        = make([]*string, n)
	)
	for k, is := range batch {
		droplets[k], versions[k], workspaces[k] = is.t.droplet, is.m.Version, is.t.workspace
		envs[k], digests[k] = is.env, is.digest[:]
		issued[k], expires[k] = is.m.IssuedAt, is.m.Expires
		commits[k] = is.snap.Commit
		if commits[k] == "" {
			commits[k] = noCommit
		}
		inputs[k], creds[k] = is.inputs[:], is.creds[:]
		if !is.snap.Time.IsZero() {
			commitAt[k] = &is.snap.Time
		}
		if c := is.snap.Correlation; c != "" {
			correlation[k] = &c
		}
	}
	rows, err := s.pool.Query(ctx, storeSQL, droplets, versions, workspaces, envs, digests, issued, expires, commits, inputs, commitAt, correlation, creds)
	if err != nil {
		return nil, fmt.Errorf("store %d manifests: %w", n, err)
	}
	got := map[int64]bool{}
	for rows.Next() {
		var d int64
		var notified any
		if err := rows.Scan(&d, &notified); err != nil {
			rows.Close()
			return nil, fmt.Errorf("store %d manifests: %w", n, err)
		}
		got[d] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store %d manifests: %w", n, err)
	}
	out := make([]bool, n)
	for k, is := range batch {
		out[k] = got[is.t.droplet]
	}
	return out, nil
}

// published serves a stored manifest from the cache (waking its droplet's
// long-polls) and records it.
func (s *Service) published(is *issue) {
	s.install(is.t.droplet, &entry{version: is.m.Version, etag: `"` + hex.EncodeToString(is.digest[:]) + `"`, body: is.env, published: s.cfg.Now()})
	s.m.issued.Inc()
	s.log.Info("manifest issued", "tenant", is.t.workspace, "droplet", is.t.droplet, "version", is.m.Version, "commit", is.snap.Commit,
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
func (s *Service) issueAll(ctx context.Context, snap *tenants.Snapshot, ts []target, now time.Time) []swept {
	out := make([]swept, len(ts))
	for i, t := range ts {
		out[i].expires = t.expires
	}
	prepared := make(chan *issue, 2*maxStoreBatch)
	var next atomic.Int64
	var workers sync.WaitGroup
	for range max(2, runtime.GOMAXPROCS(0)) {
		workers.Go(func() {
			for i := int(next.Add(1) - 1); i < len(ts) && ctx.Err() == nil; i = int(next.Add(1) - 1) {
				is, err := s.prepare(ctx, snap, ts[i], now)
				if err != nil {
					s.log.Error("render manifest failed", "tenant", ts[i].workspace, "droplet", ts[i].droplet, "err", err)
					continue
				}
				if is != nil {
					is.idx = i
					prepared <- is
				}
			}
		})
	}
	go func() { workers.Wait(); close(prepared) }()
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
				s.storeBatch(ctx, batch, out)
			}
		})
	}
	writers.Wait()
	return out
}

// storeBatch stores batch and publishes what was stored; the rest is
// rendered again one droplet at a time.
func (s *Service) storeBatch(ctx context.Context, batch []*issue, out []swept) {
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
			s.published(is)
			out[is.idx] = swept{issued: true, expires: is.m.Expires}
			continue
		}
		if err := s.renderOne(ctx, is.t); err != nil && ctx.Err() == nil {
			s.log.Error("render manifest failed", "tenant", is.t.workspace, "droplet", is.t.droplet, "err", err)
		}
	}
}
