package agentapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"time"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
	"genesis.dev/fleet/tenants"
)

// noCommit is stored for manifests rendered from a plain folder (no git
// commit); the payload's commit is then empty.
const noCommit = "0000000000000000000000000000000000000000"

// target is a droplet to render for: the newest enrolled agent of a
// workspace, with what its last manifest was made from.
type target struct {
	droplet   int64
	workspace string
	recipient string
	ip        string // "" until fleet_status records this droplet's address
	state     string // fleet_status lifecycle
	version   int64  // of its newest manifest (0: none)
	expires   time.Time
	inputs    []byte
}

// targetsSQL lists the newest agent of each workspace (a droplet woken
// from a snapshot enrolls again, so the newest enrollment is the live
// droplet) with its newest manifest.
const targetsSQL = `SELECT DISTINCT ON (a.workspace) a.droplet_id, a.workspace, a.age_recipient,
	CASE WHEN f.droplet_id = a.droplet_id THEN coalesce(host(f.ip), '') ELSE '' END, f.state,
	coalesce(m.version, 0), coalesce(m.expires_at, 'epoch'), m.inputs_hash
FROM agents a JOIN fleet_status f ON f.workspace = a.workspace
LEFT JOIN LATERAL (SELECT version, expires_at, inputs_hash FROM manifests
	WHERE droplet_id = a.droplet_id ORDER BY version DESC LIMIT 1) m ON true`

func scanTargets(rows pgx.Rows) ([]target, error) {
	defer rows.Close()
	var out []target
	for rows.Next() {
		var t target
		if err := rows.Scan(&t.droplet, &t.workspace, &t.recipient, &t.ip, &t.state, &t.version, &t.expires, &t.inputs); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RenderDroplet renders droplet's manifest if it is the live droplet of its
// workspace and its inputs changed or its manifest nears expiry.
func (s *Service) RenderDroplet(ctx context.Context, droplet int64) error {
	rows, err := s.pool.Query(ctx, targetsSQL+` WHERE a.workspace = (SELECT workspace FROM agents WHERE droplet_id = $1)
		ORDER BY a.workspace, a.enrolled_at DESC`, droplet)
	if err != nil {
		return fmt.Errorf("find droplet %d: %w", droplet, err)
	}
	ts, err := scanTargets(rows)
	if err != nil {
		return fmt.Errorf("find droplet %d: %w", droplet, err)
	}
	if len(ts) == 0 || ts[0].droplet != droplet {
		return nil // superseded by a newer enrollment
	}
	snap, ok := s.cfg.Desired()
	if !ok {
		return errors.New("no desired state yet")
	}
	_, _, err = s.render(ctx, snap, ts[0])
	return err
}

// RenderWorkspace renders the manifest of workspace's live droplet when
// needed (nothing when no agent has enrolled yet). It is the reconciler's
// hook for update_manifest actions.
func (s *Service) RenderWorkspace(ctx context.Context, workspace string) error {
	rows, err := s.pool.Query(ctx, targetsSQL+` WHERE a.workspace = $1 ORDER BY a.workspace, a.enrolled_at DESC`, workspace)
	if err != nil {
		return fmt.Errorf("find agent of %s: %w", workspace, err)
	}
	ts, err := scanTargets(rows)
	if err != nil || len(ts) == 0 {
		return err
	}
	snap, ok := s.cfg.Desired()
	if !ok {
		return errors.New("no desired state yet")
	}
	_, _, err = s.render(ctx, snap, ts[0])
	return err
}

// RenderAction is reconciler.Config.Manifest: it renders for an
// update_manifest action, for a hibernate action's prepare phase (the
// workspace is HIBERNATING, so its manifest says state: hibernated), for a
// spare's assignment, and after a create, wake, rebuild or adoption
// recorded the droplet (an agent that enrolled earlier got a manifest
// without its address). Nothing is issued when the inputs are unchanged.
func (s *Service) RenderAction(ctx context.Context, a plan.Action) error {
	switch a.Kind {
	case plan.UpdateManifest, plan.Hibernate, plan.AssignSpare,
		// A droplet just recorded: its address is known now.
		plan.Create, plan.Wake, plan.Rebuild, plan.Adopt:
	default:
		return nil
	}
	return s.RenderWorkspace(ctx, a.Workspace)
}

// sweepLoop runs Sweep every cfg.Sweep and on Kick while leading.
func (s *Service) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.Sweep)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		if !s.enabled || !s.cfg.Leading() {
			continue
		}
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("manifest sweep failed", "err", err)
		}
	}
}

// Sweep renders every live droplet whose inputs changed or whose manifest
// nears expiry, and returns how many manifests it issued. It also removes
// provisioning tokens expired a week ago.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	snap, ok := s.cfg.Desired()
	if !ok {
		return 0, nil
	}
	now := s.cfg.Now()
	if _, err := s.pool.Exec(ctx, `DELETE FROM enrollment_tokens WHERE expires_at < $1`, now.Add(-7*24*time.Hour)); err != nil {
		return 0, fmt.Errorf("prune tokens: %w", err)
	}
	rows, err := s.pool.Query(ctx, targetsSQL+` WHERE f.state NOT IN ('HIBERNATED', 'DESTROYING', 'DESTROYED')
		ORDER BY a.workspace, a.enrolled_at DESC`)
	if err != nil {
		return 0, fmt.Errorf("list agents: %w", err)
	}
	ts, err := scanTargets(rows)
	if err != nil {
		return 0, fmt.Errorf("list agents: %w", err)
	}
	type result struct {
		issued  bool
		expires time.Time
	}
	results := make([]result, len(ts))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, t := range ts {
		g.Go(func() error {
			exp, issued, err := s.render(gctx, snap, t)
			if err != nil {
				// One tenant's failure never stops the others.
				s.log.Error("render manifest failed", "tenant", t.workspace, "droplet", t.droplet, "err", err)
			}
			results[i] = result{issued: issued, expires: exp}
			return nil
		})
	}
	_ = g.Wait()
	n := 0
	soonest := time.Time{}
	for _, r := range results {
		if r.issued {
			n++
		}
		if !r.expires.IsZero() && r.expires.After(time.Unix(0, 0)) && (soonest.IsZero() || r.expires.Before(soonest)) {
			soonest = r.expires
		}
	}
	if !soonest.IsZero() {
		s.m.expiry.Set(soonest.Sub(now).Seconds())
	}
	return n, ctx.Err()
}

// content is what a manifest is rendered from, but for the credentials'
// plaintext (opened only when a manifest is issued).
type content struct {
	manifest schema.Manifest // without version, times and credentials
	creds    []schema.Credential
	inputs   [32]byte
}

// ErrNoTenant means the workspace is not (validly) in the desired state.
var ErrNoTenant = errors.New("tenant is not in the desired state")

// build computes a droplet's manifest content from the desired state, the
// id of the key it will be signed with and the keys to announce; pure.
func build(snap tenants.Snapshot, workspace, droplet, ip, recipient, signer string, announce []string) (content, error) {
	var c content
	ts, ok := snap.Tenants[workspace]
	if (!ok || ts.Tenant == nil) && schema.IsSpareWorkspace(workspace) && snap.Fleet != nil {
		return buildSpare(snap, workspace, droplet, recipient, signer, announce)
	}
	if !ok || ts.Tenant == nil {
		return c, ErrNoTenant
	}
	t := ts.Tenant
	m := schema.Manifest{
		Type: schema.ManifestType, Workspace: workspace, Droplet: droplet,
		N8N: schema.N8NPin{Version: t.N8NVersion(snap.Fleet)}, State: string(t.Spec.State),
		Domains: append([]string{}, t.Spec.Domains...), Workflows: []schema.ManifestWorkflow{}, Credentials: []schema.ManifestCredential{},
		SigningKeys: append([]string(nil), announce...),
	}
	if addr, err := netip.ParseAddr(ip); err == nil && addr.Is4() {
		m.Domains = append(m.Domains, addr.String()+".sslip.io")
	}
	for _, w := range t.Spec.Workflows {
		tpl := snap.Templates[w.Template]
		if tpl == nil {
			return c, fmt.Errorf("workflow %s: no template %s", w.Template, w.Template)
		}
		// Placeholders stay: the agent maps them to its n8n ids.
		keep := make(map[string]string, len(tpl.Placeholders))
		for ph := range tpl.Placeholders {
			keep[ph] = ph
		}
		js, err := tpl.Render(keep, w.Params)
		if err != nil {
			return c, fmt.Errorf("workflow %s: %w", w.Template, err)
		}
		sum := sha256.Sum256(js)
		m.Workflows = append(m.Workflows, schema.ManifestWorkflow{Name: w.Template, SHA256: hex.EncodeToString(sum[:]), JSON: js})
	}
	c.manifest, c.creds = m, t.Spec.Credentials
	// The inputs' identity: everything above plus the credentials'
	// ciphertexts (never their plaintext), the recipient, the signing key
	// (switching it re-signs every manifest, so the old key goes out of
	// use at once) and the announced keys.
	type credIn struct{ Name, Type, Sealed string }
	in := struct {
		Blob        string
		N8N         string
		State       string
		Domains     []string
		Workflows   []string
		Creds       []credIn
		Recipient   string
		Signer      string
		SigningKeys []string
	}{Blob: ts.ValidBlob, N8N: m.N8N.Version, State: m.State, Domains: m.Domains, Recipient: recipient, Signer: signer, SigningKeys: m.SigningKeys}
	for _, w := range m.Workflows {
		in.Workflows = append(in.Workflows, w.Name+"="+w.SHA256)
	}
	for _, cr := range c.creds {
		sum := sha256.Sum256([]byte(cr.Sealed))
		in.Creds = append(in.Creds, credIn{cr.Name, cr.Type, hex.EncodeToString(sum[:])})
	}
	b, err := json.Marshal(in)
	if err != nil {
		return c, err
	}
	c.inputs = sha256.Sum256(b)
	return c, nil
}

// reseal opens each tenant credential with the fleet identities and seals
// it to the droplet's recipient, bound to its slot. Plaintext lives only in
// this function's memory and is wiped after use; errors never carry it.
func reseal(creds []schema.Credential, ids []age.Identity, recipient age.Recipient, workspace, droplet string) ([]schema.ManifestCredential, error) {
	out := make([]schema.ManifestCredential, 0, len(creds))
	for _, cr := range creds {
		plain, err := sealing.Decrypt(cr.Sealed, ids...)
		if err != nil {
			return nil, fmt.Errorf("open credential %s: %w", cr.Name, err)
		}
		valid := json.Valid(plain) && len(plain) > 0 && firstNonSpace(plain) == '{'
		var sealed, digest string
		if valid {
			sealed, digest, err = sealing.Seal(recipient, schema.SealedCredential{Workspace: workspace, Droplet: droplet, Name: cr.Name, Data: plain})
		}
		clear(plain)
		if !valid {
			return nil, fmt.Errorf("credential %s: the sealed data is not a JSON object", cr.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("seal credential %s: %w", cr.Name, err)
		}
		out = append(out, schema.ManifestCredential{Name: cr.Name, Type: cr.Type, Sealed: sealed, SHA256: digest})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func firstNonSpace(b []byte) byte {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// errAlreadyIssued ends a render that a concurrent one made needless.
var errAlreadyIssued = errors.New("manifest with these inputs already issued")

// render issues a new manifest for t when its inputs changed or its
// manifest nears expiry; it returns the expiry of the droplet's newest
// manifest and whether it issued one.
func (s *Service) render(ctx context.Context, snap tenants.Snapshot, t target) (time.Time, bool, error) {
	if !s.enabled {
		return t.expires, false, errDisabled
	}
	if s.announceErr != nil {
		return t.expires, false, s.announceErr
	}
	dropletS := strconv.FormatInt(t.droplet, 10)
	c, err := build(snap, t.workspace, dropletS, t.ip, t.recipient, s.cfg.Signer.KeyID(), s.cfg.Announce)
	if err != nil {
		return t.expires, false, err
	}
	if t.state == lifecycleHibernating {
		hibernating(&c)
	}
	now := s.cfg.Now().UTC().Truncate(time.Second)
	if t.version > 0 && string(t.inputs) == string(c.inputs[:]) && t.expires.Sub(now) > s.cfg.ManifestTTL/3 {
		return t.expires, false, nil
	}
	recipient, err := age.ParseX25519Recipient(t.recipient)
	if err != nil {
		return t.expires, false, fmt.Errorf("droplet %d recipient: %w", t.droplet, err)
	}
	m := c.manifest
	if m.Credentials, err = reseal(c.creds, s.cfg.Identities, recipient, t.workspace, dropletS); err != nil {
		return t.expires, false, err
	}
	m.Commit = snap.Commit
	commit := snap.Commit
	if commit == "" {
		commit = noCommit
	}
	m.IssuedAt, m.Expires = now, now.Add(s.cfg.ManifestTTL)
	var e *entry
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var hwm int64
		if err := tx.QueryRow(ctx, `SELECT manifest_version FROM agents WHERE droplet_id = $1 AND workspace = $2 FOR NO KEY UPDATE`,
			t.droplet, t.workspace).Scan(&hwm); err != nil {
			return fmt.Errorf("lock agent: %w", err)
		}
		// Renders of one droplet can race (an update_manifest action and
		// the sweep after the same commit): under the agent's row lock,
		// skip if another render already issued these inputs.
		var lastInputs []byte
		var lastExpires time.Time
		err := tx.QueryRow(ctx, `SELECT inputs_hash, expires_at FROM manifests WHERE droplet_id = $1 ORDER BY version DESC LIMIT 1`,
			t.droplet).Scan(&lastInputs, &lastExpires)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("read latest manifest: %w", err)
		}
		if err == nil && string(lastInputs) == string(c.inputs[:]) && lastExpires.Sub(now) > s.cfg.ManifestTTL/3 {
			return errAlreadyIssued
		}
		m.Version = hwm + 1
		payload, err := json.Marshal(m)
		if err != nil {
			return err
		}
		env, err := s.cfg.Signer.Sign(schema.ManifestPayloadType, payload)
		if err != nil {
			return fmt.Errorf("sign: %w", err)
		}
		if len(env) > schema.MaxEnvelopeSize {
			return fmt.Errorf("manifest is %d bytes, over the %d-byte limit", len(env), schema.MaxEnvelopeSize)
		}
		digest := sha256.Sum256(env)
		var commitAt *time.Time
		if !snap.Time.IsZero() {
			commitAt = &snap.Time
		}
		if _, err := tx.Exec(ctx, `INSERT INTO manifests (droplet_id, version, workspace, envelope, digest, issued_at, expires_at, commit, inputs_hash, commit_at, correlation)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			t.droplet, m.Version, t.workspace, env, digest[:], m.IssuedAt, m.Expires, commit, c.inputs[:], commitAt, nullIfEmpty(snap.Correlation)); err != nil {
			return fmt.Errorf("store manifest: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE fleet_status SET manifest_version_issued = GREATEST(manifest_version_issued, $2), updated_at = now() WHERE workspace = $1`,
			t.workspace, m.Version); err != nil {
			return fmt.Errorf("record issued version: %w", err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, fmt.Sprintf("m %d %d", t.droplet, m.Version)); err != nil {
			return err
		}
		e = &entry{version: m.Version, etag: `"` + hex.EncodeToString(digest[:]) + `"`, body: env}
		return nil
	})
	if errors.Is(err, errAlreadyIssued) {
		return t.expires, false, nil
	}
	if err != nil {
		return t.expires, false, fmt.Errorf("issue manifest for droplet %d: %w", t.droplet, err)
	}
	s.install(t.droplet, e)
	s.m.issued.Inc()
	s.log.Info("manifest issued", "tenant", t.workspace, "droplet", t.droplet, "version", m.Version, "commit", snap.Commit, "correlation_id", snap.Correlation,
		"workflows", len(m.Workflows), "credentials", len(m.Credentials), "announced_keys", len(m.SigningKeys), "expires", m.Expires)
	return m.Expires, true, nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
