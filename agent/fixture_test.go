package agent

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/schema/sealing"
)

// fixture makes manifests the way the reconciler does: signed with a test
// fleet key, credentials sealed to one droplet's recipient.
type fixture struct {
	t         testing.TB
	signer    *dsse.Signer
	recipient age.Recipient
	workspace string
	droplet   string
	now       time.Time
}

func newSigner(t testing.TB) *dsse.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return dsse.NewSigner(k)
}

func trustedOf(signers ...*dsse.Signer) dsse.Trusted {
	t := dsse.Trusted{}
	for _, s := range signers {
		t.Add(s.Public())
	}
	return t
}

func pubPEM(s *dsse.Signer) string { return string(dsse.MarshalPublicKeyPEM(s.Public())) }

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// manifest is a good manifest of version v: one workflow, two credentials.
func (f *fixture) manifest(v int64) schema.Manifest {
	f.t.Helper()
	wf := json.RawMessage(`{"name":"Lead intake","nodes":[{"credentials":{"gmailOAuth2":{"id":"TEMPLATE_GMAIL_UUID"}}}]}`)
	m := schema.Manifest{
		Type:      schema.ManifestType,
		Workspace: f.workspace,
		Droplet:   f.droplet,
		Version:   v,
		IssuedAt:  f.now.Add(-time.Minute).UTC(),
		Expires:   f.now.Add(24 * time.Hour).UTC(),
		Commit:    "0123456789abcdef0123456789abcdef01234567",
		N8N:       schema.N8NPin{Version: "1.123.81"},
		Domains:   []string{"track.acme.com", "203.0.113.7.sslip.io"},
		Workflows: []schema.ManifestWorkflow{{Name: "lead-intake", SHA256: sha(wf), JSON: wf}},
	}
	for _, name := range []string{"gmail", "openai"} {
		m.Credentials = append(m.Credentials, f.credential(name, schema.SealedCredential{
			Workspace: f.workspace, Droplet: f.droplet, Name: name, Data: json.RawMessage(`{"secret":"s3cret-` + name + `"}`),
		}))
	}
	return m
}

// credential seals c to the droplet's recipient into slot name.
func (f *fixture) credential(name string, c schema.SealedCredential) schema.ManifestCredential {
	f.t.Helper()
	sealed, d, err := sealing.Seal(f.recipient, c)
	if err != nil {
		f.t.Fatal(err)
	}
	return schema.ManifestCredential{Name: name, Type: "generic", Sealed: sealed, SHA256: d}
}

// sign signs m with s (the fixture's signer if nil).
func (f *fixture) sign(m schema.Manifest, s *dsse.Signer) []byte {
	f.t.Helper()
	payload, err := json.Marshal(m)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.signPayload(payload, s)
}

func (f *fixture) signPayload(payload []byte, s *dsse.Signer) []byte {
	f.t.Helper()
	if s == nil {
		s = f.signer
	}
	env, err := s.Sign(schema.ManifestPayloadType, payload)
	if err != nil {
		f.t.Fatal(err)
	}
	return env
}
