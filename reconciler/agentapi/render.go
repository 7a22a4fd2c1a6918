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
	"sync/atomic"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/rollout"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
	"genesis.dev/fleet/tenants"
)

// noCommit is stored for manifests rendered from a plain folder (no git
// commit); the payload's commit is then empty.
const noCommit = "0000000000000000000000000000000000000000"

// liveTarget is workspace's live droplet (false: none, or droplet is set
// and was superseded by a newer enrollment).
func (s *Service) liveTarget(ctx context.Context, droplet int64, workspace string) (store.Target, bool, error) {
	t, ok, err := s.st.LiveTarget(ctx, workspace)
	if err != nil || !ok || (droplet != 0 && t.Droplet != droplet) {
		return store.Target{}, false, err
	}
	return t, true, nil
}

// RenderDroplet renders droplet's manifest if it is the live droplet of its
// workspace and its inputs changed or its manifest nears expiry.
func (s *Service) RenderDroplet(ctx context.Context, droplet int64) error {
	t, ok, err := s.st.LiveTargetOf(ctx, droplet)
	if err != nil {
		return fmt.Errorf("find droplet %d: %w", droplet, err)
	}
	if !ok || t.Droplet != droplet {
		return nil // superseded by a newer enrollment
	}
	return s.renderOne(ctx, t)
}

// RenderWorkspace renders the manifest of workspace's live droplet when
// needed (nothing when no agent has enrolled yet). It is the reconciler's
// hook for update_manifest actions.
func (s *Service) RenderWorkspace(ctx context.Context, workspace string) error {
	t, ok, err := s.liveTarget(ctx, 0, workspace)
	if err != nil {
		return fmt.Errorf("find agent of %s: %w", workspace, err)
	}
	if !ok {
		return nil
	}
	return s.renderOne(ctx, t)
}

// renderOne issues t's manifest when needed. When another render issued a
// version in between (the sweep and an update_manifest action after the
// same commit), it reads the droplet again and decides anew.
func (s *Service) renderOne(ctx context.Context, t store.Target) error {
	snap, ok := s.cfg.Desired()
	if !ok {
		return errors.New("no desired state yet")
	}
	for attempt := 1; ; attempt++ {
		is, err := s.prepare(ctx, &snap, t, s.cfg.Now())
		if err != nil || is == nil {
			return err
		}
		stored, err := s.store(ctx, []*issue{is})
		if err != nil {
			return err
		}
		if stored[0] {
			s.published(is, nil)
			return nil
		}
		if attempt == 3 {
			return fmt.Errorf("issue manifest for droplet %d: another render issued a version %d times in between", t.Droplet, attempt)
		}
		var live bool
		if t, live, err = s.liveTarget(ctx, t.Droplet, t.Workspace); err != nil || !live {
			return err
		}
	}
}

// RenderAction is reconciler.Config.Manifest: it renders for an
// update_manifest action, for a hibernate action's prepare phase (the
// workspace is HIBERNATING, so its manifest says state: hibernated), for a
// spare's assignment, and after a create, wake, resize, rebuild or
// adoption recorded the droplet (an agent that enrolled earlier got a
// manifest without its address): the kinds whose plan.KindInfo says
// Renders. Nothing is issued when the inputs are unchanged.
func (s *Service) RenderAction(ctx context.Context, a plan.Action) error {
	if !a.Kind.Info().Renders {
		return nil
	}
	return s.RenderWorkspace(ctx, a.Workspace)
}

// sweepPage is how many targets a sweep reads and renders at a time.
const sweepPage = 2048

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
	if err := s.st.PruneTokens(ctx, now.Add(-7*24*time.Hour)); err != nil {
		return 0, fmt.Errorf("prune tokens: %w", err)
	}
	// The fleet is walked a page of targets at a time: a fleet-wide change
	// holds one page's targets and the manifests in flight (issueAll's
	// bounded queue), not every droplet's at once.
	var issued int64
	var logged atomic.Int64
	began := time.Now()
	soonest := time.Time{}
	for after := ""; ; {
		ts, err := s.st.SweepTargetsAfter(ctx, after, sweepPage)
		if err != nil {
			return int(issued), fmt.Errorf("list agents: %w", err)
		}
		for _, r := range s.issueAll(ctx, &snap, ts, now, &logged) {
			if r.issued {
				issued++
			}
			if !r.expires.IsZero() && r.expires.After(time.Unix(0, 0)) && (soonest.IsZero() || r.expires.Before(soonest)) {
				soonest = r.expires
			}
		}
		if len(ts) < sweepPage || ctx.Err() != nil {
			break
		}
		after = ts[len(ts)-1].Workspace
	}
	if !soonest.IsZero() {
		s.m.expiry.Set(soonest.Sub(now).Seconds())
	}
	if issued > eachLogged {
		s.log.Info("manifest sweep issued many; past the first, each at debug", "issued", issued, "logged_each", eachLogged,
			"commit", snap.Commit, "correlation_id", snap.Correlation, "took", time.Since(began).Round(time.Millisecond).String())
	}
	return int(issued), ctx.Err()
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

// fleetInputs are the fleet-wide inputs one render takes.
type fleetInputs struct {
	in     *rollout.Inputs
	digest string
	// paced: spec.rollout is declared, so the digest itself is an input
	// (a released tenant gets a new manifest even when nothing else of
	// its manifest changed, and "applied" is exact).
	paced bool
}

// fleetInputsFor is what t's manifest takes its fleet-wide inputs from:
// the desired state's without spec.rollout (every droplet at once) or
// before the first rollout, else the inputs the newest rollout gives t
// (rollout.Effective, read with t in the same query).
func (s *Service) fleetInputsFor(ctx context.Context, snap *tenants.Snapshot, t store.Target) (fleetInputs, error) {
	in, _, digest, err := s.inputs.Desired(snap.Fleet, snap.Templates)
	if err != nil {
		return fleetInputs{}, fmt.Errorf("fleet inputs: %w", err)
	}
	paced := snap.Fleet != nil && snap.Fleet.Spec.Rollout != nil
	if !paced || t.Rollout.ID == "" {
		return fleetInputs{in: in, digest: digest, paced: paced}, nil
	}
	p := t.Rollout
	eff := rollout.Effective(rollout.Position{State: p.State, Baseline: p.Baseline, Target: p.Target, Member: p.Member, Released: p.Released, From: p.From})
	if eff == digest {
		return fleetInputs{in: in, digest: digest, paced: true}, nil
	}
	stored, err := s.inputs.Stored(eff, func(d string) ([]byte, error) { return s.st.RolloutInputs(ctx, d) })
	if err != nil {
		return fleetInputs{}, err
	}
	return fleetInputs{in: stored, digest: eff, paced: true}, nil
}

// build computes a droplet's manifest content from the desired state and
// the fleet inputs it takes, the id of the key it will be signed with and
// the keys to announce; pure.
func build(snap tenants.Snapshot, fi fleetInputs, workspace, droplet, ip, recipient, signer string, announce []string) (content, error) {
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
		N8N: schema.N8NPin{Version: fi.in.N8NFor(t)}, State: string(t.Spec.State),
		Domains: append([]string{}, t.Spec.Domains...), Workflows: []schema.ManifestWorkflow{}, Credentials: []schema.ManifestCredential{},
		SigningKeys: append([]string(nil), announce...),
	}
	if a := fi.in.Agent; a != nil {
		m.Agent = &schema.AgentPin{Version: a.Version, SHA256: a.SHA256, URL: a.URL}
	}
	// The stable name (spec.dns) is what customers' CNAMEs and n8n's
	// webhook URL use; <ip>.sslip.io stays as the bootstrap fallback
	// until its record exists.
	if name := snap.Fleet.StableName(workspace); name != "" {
		m.Domains = append(m.Domains, name)
		m.StableName = name
	}
	if addr, err := netip.ParseAddr(ip); err == nil && addr.Is4() {
		m.Domains = append(m.Domains, addr.String()+".sslip.io")
	}
	for _, w := range t.Spec.Workflows {
		tpl := fi.in.Template(w.Template)
		if tpl == nil {
			// A template the rollout's earlier inputs did not have (added
			// in the same change a tenant started using it): there is no
			// older version to keep, so the desired one.
			tpl = snap.Templates[w.Template]
		}
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
		Agent       *schema.AgentPin `json:",omitempty"`
		Fleet       string           `json:",omitempty"`
	}{Blob: ts.ValidBlob, N8N: m.N8N.Version, State: m.State, Domains: m.Domains, Recipient: recipient, Signer: signer, SigningKeys: m.SigningKeys, Agent: m.Agent}
	if fi.paced {
		in.Fleet = fi.digest
	}
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
