package agent

import (
	"context"
	"testing"

	"genesis.dev/fleet/schema"
)

// spareManifest is a hot spare's manifest: no tenant in it.
func (f *fixture) spareManifest(v int64) schema.Manifest {
	m := f.manifest(v)
	m.State, m.Domains, m.Workflows, m.Credentials = schema.ManifestStateSpare, []string{}, []schema.ManifestWorkflow{}, []schema.ManifestCredential{}
	return m
}

// TestSpareAdoptsTenant: a spare's agent takes the one change of workspace,
// to a tenant's, in a manifest signed by the fleet key for its own droplet,
// and keeps it across a restart; it then refuses any other workspace.
func TestSpareAdoptsTenant(t *testing.T) {
	dir := t.TempDir()
	st := openState(t, dir)
	spare := &fixture{t: t, signer: newSigner(t), recipient: st.Keys().Identity.Recipient(), workspace: "spare-nyc1-1", droplet: "4242", now: testNow}
	ctx := context.Background()
	if _, err := Accept(ctx, st, spare.sign(spare.spareManifest(3), nil), spare.policy(nil)); err != nil {
		t.Fatalf("spare manifest: %v", err)
	}
	if got := st.Workspace(spare.workspace, spare.droplet); got != spare.workspace {
		t.Fatalf("Workspace before assignment = %q", got)
	}
	tenant := *spare
	tenant.workspace = "ws-acme"
	tenantPolicy := spare.policy(nil) // the agent still expects its spare workspace

	bad := []struct {
		name string
		env  []byte
		want Reason
	}{
		{"another droplet", func() []byte { o := tenant; o.droplet = "5151"; return o.sign(o.manifest(4), nil) }(), ReasonMismatch},
		{"another spare", func() []byte { o := tenant; o.workspace = "spare-nyc1-2"; return o.sign(o.manifest(4), nil) }(), ReasonMismatch},
		{"not a workspace id", func() []byte { o := tenant; o.workspace = "WS_ACME"; return o.sign(o.manifest(4), nil) }(), ReasonMismatch},
		{"unknown key", tenant.sign(tenant.manifest(4), newSigner(t)), ReasonUnknownKey},
		{"tampered envelope", func() []byte {
			env := tenant.sign(tenant.manifest(4), nil)
			return []byte(string(env[:len(env)-8]) + `AAAAA"}]}`)
		}(), ReasonMalformed},
		{"rollback", tenant.sign(tenant.manifest(2), nil), ReasonRollback},
	}
	for _, tt := range bad {
		_, err := Accept(ctx, st, tt.env, tenantPolicy)
		if ReasonOf(err) == "" || (tt.want != ReasonMalformed && ReasonOf(err) != tt.want) {
			t.Errorf("%s: %v, want %s", tt.name, err, tt.want)
		}
		if got := st.Workspace(spare.workspace, spare.droplet); got != spare.workspace {
			t.Fatalf("%s: a refused manifest changed the workspace to %q", tt.name, got)
		}
	}

	v, err := Accept(ctx, st, tenant.sign(tenant.manifest(4), nil), tenantPolicy)
	if err != nil {
		t.Fatalf("tenant manifest on the spare: %v", err)
	}
	if len(v.Manifest.Credentials) != 2 {
		t.Fatalf("credentials = %d, want the tenant's 2 (opened for the tenant's slot)", len(v.Manifest.Credentials))
	}
	if got := st.Workspace(spare.workspace, spare.droplet); got != "ws-acme" {
		t.Fatalf("Workspace after assignment = %q, want ws-acme", got)
	}
	// Persisted: a restart serves the tenant.
	st.Close()
	st = openState(t, dir)
	if got := st.Workspace(spare.workspace, spare.droplet); got != "ws-acme" {
		t.Fatalf("Workspace after restart = %q, want ws-acme", got)
	}
	// A tenant never changes workspace again, nor goes back to a spare.
	for _, ws := range []string{"ws-other", "spare-nyc1-1"} {
		o := tenant
		o.workspace = ws
		if _, err := Accept(ctx, st, o.sign(o.manifest(5), nil), tenant.policy(nil)); ReasonOf(err) != ReasonMismatch {
			t.Errorf("tenant droplet took a manifest for %s: %v", ws, err)
		}
	}
	if _, err := Accept(ctx, st, tenant.sign(tenant.manifest(5), nil), tenant.policy(nil)); err != nil {
		t.Fatalf("the tenant's next manifest: %v", err)
	}
}

// TestTenantRefusesWorkspaceChange: a droplet that is not a spare never
// takes another workspace's manifest, however well signed.
func TestTenantRefusesWorkspaceChange(t *testing.T) {
	st, f := stateFixture(t)
	other := *f
	other.workspace = "ws-other"
	if _, err := Accept(context.Background(), st, other.sign(other.manifest(1), nil), f.policy(nil)); ReasonOf(err) != ReasonMismatch {
		t.Fatalf("got %v, want %s", err, ReasonMismatch)
	}
	if got := st.Workspace(f.workspace, f.droplet); got != f.workspace {
		t.Fatalf("Workspace = %q", got)
	}
}
