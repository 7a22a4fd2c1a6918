package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func openState(t testing.TB, dir string) *State {
	t.Helper()
	st, err := OpenState(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func stateFixture(t testing.TB) (*State, *fixture) {
	st := openState(t, t.TempDir())
	return st, &fixture{t: t, signer: newSigner(t), recipient: st.Keys().Identity.Recipient(), workspace: "ws-acme", droplet: "4242", now: testNow}
}

func (f *fixture) policy(applier Applier) Policy {
	return Policy{Workspace: f.workspace, Droplet: f.droplet, Trusted: trustedOf(f.signer), Now: f.now, Applier: applier}
}

func TestKeysAreMadeOnceAndPrivate(t *testing.T) {
	dir := t.TempDir()
	st := openState(t, dir)
	k1 := st.Keys()
	if _, err := OpenState(dir); err == nil {
		t.Fatal("a second OpenState of a held directory succeeded")
	}
	st.Close()
	st2 := openState(t, dir)
	k2 := st2.Keys()
	if k1.Recipient() != k2.Recipient() || k1.PublicKeyPEM() != k2.PublicKeyPEM() {
		t.Error("keys changed when the state directory was opened again")
	}
	if !strings.HasPrefix(k1.Recipient(), "age1") || !strings.Contains(k1.PublicKeyPEM(), "BEGIN PUBLIC KEY") {
		t.Errorf("recipient %q, public key %q", k1.Recipient(), k1.PublicKeyPEM())
	}
	for _, name := range []string{ageKeyFile, signingKeyFile} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	rk, err := ReadKeys(dir)
	if err != nil || rk.Recipient() != k1.Recipient() {
		t.Errorf("ReadKeys = %v, %v", rk.Recipient(), err)
	}
	if _, err := ReadKeys(t.TempDir()); err == nil {
		t.Error("ReadKeys of an empty directory made keys")
	}
}

func TestAcceptAppliesThenRecords(t *testing.T) {
	st, f := stateFixture(t)
	env := f.sign(f.manifest(3), nil)
	var got map[string]string
	var recordedDuringApply int64
	apply := ApplyFunc(func(ctx context.Context, m *schema.Manifest, creds map[string]json.RawMessage) error {
		recordedDuringApply = st.Applied().Version
		got = map[string]string{}
		for k, v := range creds {
			got[k] = string(v)
		}
		return nil
	})
	v, err := Accept(context.Background(), st, env, f.policy(apply))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"gmail": `{"secret":"s3cret-gmail"}`, "openai": `{"secret":"s3cret-openai"}`}
	if diff := cmp.Diff(got, want); diff != "" {
		t.Errorf("applier credentials (-got +want):\n%s", diff)
	}
	if recordedDuringApply != 0 {
		t.Errorf("version %d recorded before Apply returned", recordedDuringApply)
	}
	if len(v.Credentials) != 0 {
		t.Error("Accept returned plaintext credentials")
	}
	a := st.Applied()
	if a.Version != 3 || !bytes.Equal(a.Envelope, env) || a.Digest != sha(env) {
		t.Errorf("applied = v%d digest %s", a.Version, a.Digest)
	}
	raw, err := os.ReadFile(filepath.Join(st.Dir(), appliedFile))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("s3cret")) {
		t.Error("plaintext credential in the state directory")
	}
	fi, _ := os.Stat(filepath.Join(st.Dir(), appliedFile))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("applied file mode %v", fi.Mode().Perm())
	}

	// An applier failure records nothing.
	env4 := f.sign(f.manifest(4), nil)
	_, err = Accept(context.Background(), st, env4, f.policy(ApplyFunc(func(context.Context, *schema.Manifest, map[string]json.RawMessage) error {
		return errors.New("n8n is down")
	})))
	var ae *ApplyError
	if !errors.As(err, &ae) || ae.Version != 4 {
		t.Fatalf("Accept with a failing applier = %v", err)
	}
	if st.Applied().Version != 3 {
		t.Errorf("version %d recorded after a failed apply", st.Applied().Version)
	}
}

func TestRestartKeepsTheFloor(t *testing.T) {
	st, f := stateFixture(t)
	dir := st.Dir()
	v5 := f.sign(f.manifest(5), nil)
	if _, err := Accept(context.Background(), st, v5, f.policy(nil)); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st = openState(t, dir)
	applied := 0
	counting := ApplyFunc(func(context.Context, *schema.Manifest, map[string]json.RawMessage) error { applied++; return nil })
	// The same bytes again: a no-op, not applied again.
	v, err := Accept(context.Background(), st, v5, f.policy(counting))
	if err != nil || !v.Unchanged || applied != 0 {
		t.Fatalf("same manifest after restart: %v, unchanged=%v, applied %d times", err, v != nil && v.Unchanged, applied)
	}
	// Lower, or the same version with other bytes: refused.
	if _, err := Accept(context.Background(), st, f.sign(f.manifest(4), nil), f.policy(counting)); ReasonOf(err) != ReasonRollback {
		t.Errorf("v4 after v5: %v", err)
	}
	m := f.manifest(5)
	m.Commit = strings.Repeat("f", 40)
	if _, err := Accept(context.Background(), st, f.sign(m, nil), f.policy(counting)); ReasonOf(err) != ReasonVersionReused {
		t.Errorf("v5 with other bytes: %v", err)
	}
	// Reapply runs the recorded manifest through the applier with its
	// credentials.
	var creds int
	ok, err := Reapply(context.Background(), st, ApplyFunc(func(_ context.Context, m *schema.Manifest, c map[string]json.RawMessage) error {
		if m.Version != 5 {
			t.Errorf("reapplied version %d", m.Version)
		}
		creds = len(c)
		return nil
	}))
	if !ok || err != nil || creds != 2 {
		t.Errorf("Reapply = %v, %v, %d credentials", ok, err, creds)
	}
	// A damaged record refuses to start instead of starting from zero.
	st.Close()
	os.WriteFile(filepath.Join(dir, appliedFile), []byte(`{"version":`), 0o600)
	if _, err := OpenState(dir); err == nil {
		t.Error("OpenState accepted a damaged applied record")
	}
}

func TestNewDropletIDStartsItsOwnVersions(t *testing.T) {
	st, f := stateFixture(t)
	if _, err := Accept(context.Background(), st, f.sign(f.manifest(40), nil), f.policy(nil)); err != nil {
		t.Fatal(err)
	}
	// Woken from a snapshot on droplet 5151: its versions start anew, the
	// old droplet's floor does not apply, and the old droplet's manifests
	// are refused.
	woken := *f
	woken.droplet = "5151"
	if _, err := Accept(context.Background(), st, woken.sign(woken.manifest(1), nil), woken.policy(nil)); err != nil {
		t.Fatalf("first manifest of the new droplet: %v", err)
	}
	if _, err := Accept(context.Background(), st, f.sign(f.manifest(41), nil), woken.policy(nil)); ReasonOf(err) != ReasonMismatch {
		t.Errorf("old droplet's manifest on the new droplet: %v", err)
	}
}

func TestRotation(t *testing.T) {
	st, f := stateFixture(t)
	newKey := newSigner(t)
	// Signed by the new key before it is announced: unknown.
	if _, err := Accept(context.Background(), st, f.sign(f.manifest(1), newKey), f.policy(nil)); ReasonOf(err) != ReasonUnknownKey {
		t.Fatalf("new key before rotation: %v", err)
	}
	m := f.manifest(1)
	m.SigningKeys = []string{pubPEM(newKey)}
	if _, err := Accept(context.Background(), st, f.sign(m, nil), f.policy(nil)); err != nil {
		t.Fatal(err)
	}
	dir := st.Dir()
	st.Close()
	st = openState(t, dir)
	// After a restart, with only the old key configured, the new key's
	// manifests verify.
	v, err := Accept(context.Background(), st, f.sign(f.manifest(2), newKey), f.policy(nil))
	if err != nil || v.KeyID != newKey.KeyID() {
		t.Fatalf("manifest signed by the rotated-in key: %v", err)
	}
	tr, err := st.Trusted(nil)
	if err != nil || len(tr) != 1 || tr[newKey.KeyID()] == nil {
		t.Errorf("trusted set from the state = %v, %v", tr, err)
	}
}

func TestVerifyChecksEveryCredential(t *testing.T) {
	st, f := stateFixture(t)
	exp := Expectation{Workspace: f.workspace, Droplet: f.droplet, Trusted: trustedOf(f.signer), Identity: st.Keys().Identity, Now: testNow}
	m := f.manifest(1)
	// The second credential is the broken one: a check that stops at the
	// first would pass it.
	m.Credentials[1] = f.credential("openai", schema.SealedCredential{Workspace: f.workspace, Droplet: "9999", Name: "openai", Data: json.RawMessage(`{}`)})
	_, err := Verify(f.sign(m, nil), exp)
	if ReasonOf(err) != ReasonCredential || !strings.Contains(err.Error(), "openai") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Error("error holds a credential")
	}
	// A nil identity cannot pass credentials.
	exp.Identity = nil
	if _, err := Verify(f.sign(f.manifest(1), nil), exp); ReasonOf(err) != ReasonCredential {
		t.Errorf("no identity: %v", err)
	}
}

func TestWorkflowDigestOfCompactForm(t *testing.T) {
	st, f := stateFixture(t)
	exp := Expectation{Workspace: f.workspace, Droplet: f.droplet, Trusted: trustedOf(f.signer), Identity: st.Keys().Identity, Now: testNow}
	m := f.manifest(1)
	pretty := []byte("{\n  \"name\": \"x\"\n}")
	m.Workflows[0] = schema.ManifestWorkflow{Name: "x", SHA256: sha(pretty), JSON: pretty}
	// json.Marshal compacts the RawMessage, so the signed payload holds
	// the compact form while the digest was taken of the pretty one.
	if _, err := Verify(f.sign(m, nil), exp); ReasonOf(err) != ReasonWorkflow {
		t.Errorf("digest of a form not in the payload: %v", err)
	}
	m.Workflows[0].SHA256 = sha([]byte(`{"name":"x"}`))
	if _, err := Verify(f.sign(m, nil), exp); err != nil {
		t.Errorf("digest of the compact form: %v", err)
	}
}

// FuzzVerify feeds arbitrary envelopes to the verifier: it must never
// panic, and what it accepts must satisfy the invariants.
func FuzzVerify(f *testing.F) {
	dir := f.TempDir()
	st, err := OpenState(dir)
	if err != nil {
		f.Fatal(err)
	}
	defer st.Close()
	fx := &fixture{t: f, signer: dsse.NewSigner(fixedKey()), recipient: st.Keys().Identity.Recipient(), workspace: "ws-acme", droplet: "4242", now: testNow}
	good := fx.sign(fx.manifest(7), nil)
	f.Add(good, false)
	f.Add(good[:len(good)/2], false)
	f.Add([]byte(`{"payload":"","payloadType":"`+schema.ManifestPayloadType+`","signatures":[]}`), false)
	f.Add([]byte(`{"_type":"genesis.manifest.v1","workspace":"ws-acme","droplet":"4242","version":8}`), true)
	payload, _ := json.Marshal(fx.manifest(8))
	f.Add(payload, true)
	exp := Expectation{Workspace: fx.workspace, Droplet: fx.droplet, Trusted: trustedOf(fx.signer), Identity: st.Keys().Identity,
		AppliedVersion: 7, AppliedDigest: sha(good), Now: testNow}
	f.Fuzz(func(t *testing.T, data []byte, isPayload bool) {
		env := data
		if isPayload {
			// Sign it, so the fuzzer reaches the payload checks.
			e, err := fx.signer.Sign(schema.ManifestPayloadType, data)
			if err != nil {
				t.Fatal(err)
			}
			env = e
		}
		v, err := Verify(env, exp)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		m := v.Manifest
		if m.Workspace != exp.Workspace || m.Droplet != exp.Droplet || m.Type != schema.ManifestType {
			t.Fatalf("accepted a foreign manifest %q/%q", m.Workspace, m.Droplet)
		}
		if m.Version < exp.AppliedVersion || (m.Version == exp.AppliedVersion && v.Digest != exp.AppliedDigest) {
			t.Fatalf("accepted version %d over %d", m.Version, exp.AppliedVersion)
		}
		if !testNow.Before(m.Expires) || len(v.Credentials) != len(m.Credentials) {
			t.Fatal("accepted an expired manifest or skipped a credential")
		}
	})
}

// fixedKey is a deterministic signing key so the fuzz corpus stays valid
// between runs.
func fixedKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
}

func TestStateDirModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	st := openState(t, dir)
	if err := st.SaveCredential("ws", "1", "cred-secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.NextSeq(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, %v", fi.Mode().Perm(), err)
	}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", d.Name(), fi.Mode().Perm())
		}
		if strings.Contains(d.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", d.Name())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if c, ok, err := st.Credential("1"); c != "cred-secret" || !ok || err != nil {
		t.Errorf("Credential(1) = %q %v %v", c, ok, err)
	}
	if _, ok, _ := st.Credential("2"); ok {
		t.Error("another droplet's credential returned")
	}
}

// TestAcceptOtherDSSEEncodings: an envelope in URL-safe unpadded base64 with
// an empty keyid (both allowed by DSSE's envelope specification) is
// accepted, and after a restart the recorded envelope is reapplied.
func TestAcceptOtherDSSEEncodings(t *testing.T) {
	st, f := stateFixture(t)
	dir := st.Dir()
	var env dsse.Envelope
	if err := json.Unmarshal(f.sign(f.manifest(2), nil), &env); err != nil {
		t.Fatal(err)
	}
	recode := func(s string) string {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	env.Payload = recode(env.Payload)
	env.Signatures[0].Sig, env.Signatures[0].KeyID = recode(env.Signatures[0].Sig), ""
	raw, _ := json.Marshal(env)
	v, err := Accept(context.Background(), st, raw, f.policy(nil))
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if v.KeyID != dsse.KeyID(f.signer.Public()) {
		t.Errorf("key id %q, want the signer's %q", v.KeyID, dsse.KeyID(f.signer.Public()))
	}
	st.Close()
	st = openState(t, dir)
	var version int64
	ok, err := Reapply(context.Background(), st, ApplyFunc(func(_ context.Context, m *schema.Manifest, _ map[string]json.RawMessage) error {
		version = m.Version
		return nil
	}))
	if !ok || err != nil || version != 2 {
		t.Errorf("Reapply = %v, %v, version %d; want true, nil, 2", ok, err, version)
	}
}

// TestVerifyStableNameAmongDomains: a manifest's stable_name must be one
// of its domains (Caddy serves only the domains; a name outside them would
// keep the caddy component down for ever).
func TestVerifyStableNameAmongDomains(t *testing.T) {
	st, f := stateFixture(t)
	exp := Expectation{Workspace: f.workspace, Droplet: f.droplet, Trusted: trustedOf(f.signer), Identity: st.Keys().Identity, Now: testNow}
	m := f.manifest(1)
	m.Domains = []string{"track.acme.test", f.workspace + ".t.genesis.test"}
	m.StableName = f.workspace + ".t.genesis.test"
	if _, err := Verify(f.sign(m, nil), exp); err != nil {
		t.Fatalf("stable name among the domains: %v", err)
	}
	m.StableName = "other.t.genesis.test"
	_, err := Verify(f.sign(m, nil), exp)
	if ReasonOf(err) != ReasonMalformed || !strings.Contains(err.Error(), `stable_name "other.t.genesis.test" is not one of domains`) {
		t.Errorf("stable name outside the domains: %v", err)
	}
}
