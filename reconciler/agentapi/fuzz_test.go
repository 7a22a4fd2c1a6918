package agentapi

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"testing"

	"filippo.io/age"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// FuzzDecodeHeartbeat: any body either is refused or decodes to a heartbeat
// that satisfies the checks and survives a round trip unchanged.
func FuzzDecodeHeartbeat(f *testing.F) {
	good, _ := json.Marshal(hb("ws-acme", "1001", 3, 1, true))
	f.Add(good)
	f.Add([]byte(`{"workspace":"ws-acme","droplet":"1001","seq":1}`))
	f.Add([]byte(`{"workspace":"ws-acme","workspace":"x","droplet":"1001","seq":1}`))
	f.Add([]byte(`{"seq":-1}`))
	f.Add([]byte(`{"droplet":"01","seq":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"components":{"n8n":{"ok":true,"ok":false}}}`))
	f.Add([]byte(`{"workspace":"ws-acme","droplet":"1001","seq":1,"swap_used_bytes":5,"swap_total_bytes":4}`))
	f.Add([]byte(`{"workspace":"ws-acme","droplet":"1001","seq":1,"repairs":[{"component":"n8n","at":"2026-12-07T06:00:00Z","detail":"repaired: started again"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := decodeHeartbeat(body)
		if err != nil {
			return
		}
		if h.Seq <= 0 || h.AppliedVersion < 0 || len(h.Components) > 32 || h.SwapUsed > h.SwapTotal {
			t.Fatalf("accepted a heartbeat that breaks the checks: %+v", h)
		}
		if _, err := parseDroplet(h.Droplet); err != nil {
			t.Fatalf("accepted droplet %q", h.Droplet)
		}
		again, err := json.Marshal(h)
		if err != nil {
			t.Fatal(err)
		}
		h2, err := decodeHeartbeat(again)
		if err != nil {
			t.Fatalf("re-encoded heartbeat refused: %v\n%s", err, again)
		}
		b2, _ := json.Marshal(h2)
		if string(b2) != string(again) {
			t.Fatalf("round trip changed the heartbeat:\n%s\n%s", again, b2)
		}
	})
}

// FuzzDecodeEnroll: any body either is refused or yields a request whose
// keys parse and whose droplet id is canonical.
func FuzzDecodeEnroll(f *testing.F) {
	id, _ := age.GenerateX25519Identity()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	good, _ := json.Marshal(schema.EnrollRequest{Token: "t", Workspace: "ws-acme", DropletID: "1001", DropletName: "genesis-ws-acme-1",
		AgeRecipient: id.Recipient().String(), SigningKey: string(dsse.MarshalPublicKeyPEM(pub)), AgentVersion: "1"})
	f.Add(good)
	f.Add([]byte(`{"token":"t","workspace":"WS","droplet_id":"-1"}`))
	f.Add([]byte(`{"token":"t","token":"u"}`))
	f.Add([]byte(`{} {}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, err := decodeEnroll(body)
		if err != nil {
			return
		}
		if e.droplet <= 0 || !workspaceID.MatchString(e.Workspace) || e.Token == "" || len(e.pub) != ed25519.PublicKeySize {
			t.Fatalf("accepted %+v", e)
		}
		r, err := age.ParseX25519Recipient(e.AgeRecipient)
		if err != nil {
			t.Fatalf("accepted recipient %q", e.AgeRecipient)
		}
		if e.recipient != r.String() {
			t.Fatalf("recipient %q not canonical: %q", e.AgeRecipient, e.recipient)
		}
		// The credential is a function of the token, droplet and keys:
		// a retry derives it again, another droplet id does not.
		cred := credentialFor(e)
		if again := credentialFor(e); again != cred {
			t.Fatal("credential derivation is not deterministic")
		}
		other := e
		other.droplet++
		if credentialFor(other) == cred {
			t.Fatal("credential does not depend on the droplet id")
		}
	})
}
