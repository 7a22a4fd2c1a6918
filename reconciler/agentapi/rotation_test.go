package agentapi

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	fleetagent "genesis.dev/fleet/agent"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// stateDroplet is an enrolled droplet whose agent side is the real agent
// package: its keys and applied manifest live in an agent.State.
type stateDroplet struct {
	ws, id string
	state  *fleetagent.State
	cred   string
	// bootstrap is what cloud-init gave the agent.
	bootstrap dsse.Trusted
}

// enrollState provisions ws's droplet and enrolls it with the keys of a
// fresh agent state directory.
func (w *world) enrollState(ws string, droplet int, ip string, bootstrap dsse.Trusted) *stateDroplet {
	w.t.Helper()
	w.provision(ws, 1, droplet, ip)
	st, err := fleetagent.OpenState(w.t.TempDir())
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { st.Close() })
	name := plan.DropletName(ws, 1)
	id := fmt.Sprint(droplet)
	req := schema.EnrollRequest{Token: w.token(ws, name), Workspace: ws, DropletID: id, DropletName: name,
		AgeRecipient: st.Keys().Recipient(), SigningKey: st.Keys().PublicKeyPEM(), AgentVersion: "test"}
	resp, err := (&fleetagent.Client{BaseURL: w.srv.URL}).Enroll(context.Background(), req)
	if err != nil {
		w.t.Fatalf("enroll %s: %v", ws, err)
	}
	w.firstManifest()
	return &stateDroplet{ws: ws, id: id, state: st, cred: resp.Credential, bootstrap: bootstrap}
}

// pull fetches d's manifest from srv and hands it to agent.Accept, as the
// running agent does.
func (d *stateDroplet) pull(t *testing.T, srvURL string) (*fleetagent.Verified, error) {
	t.Helper()
	mr, err := (&fleetagent.Client{BaseURL: srvURL}).Manifest(context.Background(), d.cred, "", 0)
	if err != nil || len(mr.Envelope) == 0 {
		t.Fatalf("get manifest of %s: %v %+v", d.ws, err, mr)
	}
	return fleetagent.Accept(context.Background(), d.state, mr.Envelope,
		fleetagent.Policy{Workspace: d.ws, Droplet: d.id, Trusted: d.bootstrap, Now: time.Now()})
}

// TestSigningKeyRotation follows the rotation procedure: announce the new
// key in manifests signed by the old one, then sign with the new key. An
// agent that applied the announcement accepts the new key's manifests; one
// that never saw it refuses them as signed by an unknown key and keeps its
// last good manifest.
func TestSigningKeyRotation(t *testing.T) {
	ctx := context.Background()
	w := newWorld(t)
	oldKey := w.signer
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	newKey := dsse.NewSigner(priv)
	oldPEM, newPEM := string(dsse.MarshalPublicKeyPEM(oldKey.Public())), string(dsse.MarshalPublicKeyPEM(newKey.Public()))
	bootstrap := dsse.Trusted{}
	bootstrap.Add(oldKey.Public())

	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.setTenant("ws-beta", "blob2", tenantSpec{})
	seen := w.enrollState("ws-acme", 1001, "203.0.113.7", bootstrap)
	missed := w.enrollState("ws-beta", 1002, "203.0.113.8", bootstrap)
	for _, d := range []*stateDroplet{seen, missed} {
		v, err := d.pull(t, w.srv.URL)
		if err != nil {
			t.Fatalf("%s: first manifest: %v", d.ws, err)
		}
		if v.Manifest.Version != 1 || v.KeyID != oldKey.KeyID() || len(v.Manifest.SigningKeys) != 0 {
			t.Fatalf("%s: first manifest: version %d key %s signing_keys %d", d.ws, v.Manifest.Version, v.KeyID, len(v.Manifest.SigningKeys))
		}
	}

	// 1. The reconciler restarts announcing the new key: every manifest is
	// issued again, still signed by the old key.
	announcing, announcingURL := w.replica(func(c *Config) { c.Announce = []string{newPEM} })
	if n, err := announcing.Sweep(ctx); err != nil || n != 2 {
		t.Fatalf("sweep after announcing: issued %d, %v; want 2", n, err)
	}
	if n, err := announcing.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("second sweep: issued %d, %v; want 0", n, err)
	}
	ud, err := announcing.UserData(ctx, plan.Action{Kind: plan.Create, Workspace: "ws-acme", Gen: 2, Droplet: plan.DropletName("ws-acme", 2)})
	if err != nil {
		t.Fatal(err)
	}
	ac, err := fleetagent.ConfigFromUserData([]byte(ud))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ac.SigningKeys, []string{oldPEM, newPEM}); diff != "" {
		t.Errorf("new droplets' bootstrap keys (-got +want):\n%s", diff)
	}
	v, err := seen.pull(t, announcingURL.URL)
	if err != nil {
		t.Fatalf("announcing manifest: %v", err)
	}
	if diff := cmp.Diff(v.Manifest.SigningKeys, []string{newPEM}); v.Manifest.Version != 2 || v.KeyID != oldKey.KeyID() || diff != "" {
		t.Fatalf("announcing manifest: version %d key %s signing_keys (-got +want):\n%s", v.Manifest.Version, v.KeyID, diff)
	}
	trusted, err := seen.state.Trusted(seen.bootstrap)
	if err != nil || len(trusted) != 2 {
		t.Fatalf("trusted after the announcement: %d keys, %v", len(trusted), err)
	}

	// 2. The reconciler restarts signing with the new key (still
	// announcing it): every manifest is signed again.
	w.advance(time.Second) // a new issued_at
	switched, switchedURL := w.replica(func(c *Config) { c.Signer, c.Announce = newKey, []string{newPEM} })
	if n, err := switched.Sweep(ctx); err != nil || n != 2 {
		t.Fatalf("sweep after the switch: issued %d, %v; want 2", n, err)
	}
	v, err = seen.pull(t, switchedURL.URL)
	if err != nil {
		t.Fatalf("agent that saw the announcement: %v", err)
	}
	if v.Manifest.Version != 3 || v.KeyID != newKey.KeyID() {
		t.Fatalf("new-key manifest: version %d key %s", v.Manifest.Version, v.KeyID)
	}
	_, err = missed.pull(t, switchedURL.URL)
	if got := fleetagent.ReasonOf(err); got != fleetagent.ReasonUnknownKey {
		t.Fatalf("agent that missed the announcement: reason %q (%v), want %q", got, err, fleetagent.ReasonUnknownKey)
	}
	if a := missed.state.Applied(); a.Version != 1 || len(a.TrustedKeys) != 0 {
		t.Fatalf("agent that missed the announcement: applied version %d, %d learned keys; want 1, 0", a.Version, len(a.TrustedKeys))
	}

	// The learned key survives a restart of the agent.
	dir := seen.state.Dir()
	seen.state.Close()
	if seen.state, err = fleetagent.OpenState(dir); err != nil {
		t.Fatal(err)
	}
	if v, err = seen.pull(t, switchedURL.URL); err != nil || !v.Unchanged {
		t.Fatalf("after an agent restart: %+v, %v; want the applied manifest unchanged", v, err)
	}
}

// TestAnnounceBadKey: a key that does not parse is never announced (every
// agent would reject the manifest); the renderer refuses instead.
func TestAnnounceBadKey(t *testing.T) {
	w := newWorld(t, func(c *Config) {
		c.Announce = []string{"-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"}
	})
	w.setTenant("ws-acme", "blob1", tenantSpec{})
	w.provision("ws-acme", 1, 1001, "203.0.113.7")
	if err := w.svc.RenderWorkspace(context.Background(), "ws-acme"); err != nil {
		t.Fatal(err) // no agent yet: nothing to render
	}
	a := newAgent(t)
	name := plan.DropletName("ws-acme", 1)
	w.enroll(a, a.request(w.token("ws-acme", name), "ws-acme", "1001", name))
	if n := w.count(`SELECT count(*) FROM manifests`); n != 0 {
		t.Fatalf("%d manifests issued with a bad announced key", n)
	}
	if _, err := w.svc.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := w.count(`SELECT count(*) FROM manifests`); n != 0 {
		t.Fatalf("%d manifests issued with a bad announced key", n)
	}
}
