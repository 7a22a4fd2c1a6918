package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/agent"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/schema/sealing"
)

// bin is the genesis-agent binary TestMain builds.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "genesis-agent-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "genesis-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build genesis-agent: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// runBin runs the binary with stdin and a minimal environment.
func runBin(t *testing.T, stdin []byte, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %v: %v", args, err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// now is the time every verification is judged at.
var now = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// world holds the fleet's signing key and one droplet's keys.
type world struct {
	t         *testing.T
	signer    *dsse.Signer
	keyFile   string // the signer's public key, PEM
	keysDir   string // a state directory holding only the droplet's keys
	recipient age.Recipient
	workspace string
	droplet   string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, signer: newSigner(t), workspace: "ws-acme", droplet: "4242"}
	tmp := t.TempDir()
	w.keyFile = filepath.Join(tmp, "fleet.pub")
	if err := os.WriteFile(w.keyFile, dsse.MarshalPublicKeyPEM(w.signer.Public()), 0o644); err != nil {
		t.Fatal(err)
	}
	w.keysDir = filepath.Join(tmp, "keys")
	r := runBin(t, nil, nil, "keys", "--state-dir", w.keysDir)
	if r.code != 0 {
		t.Fatalf("keys: %+v", r)
	}
	line, _, _ := strings.Cut(r.stdout, "\n")
	rec, err := age.ParseX25519Recipient(line)
	if err != nil {
		t.Fatalf("keys printed %q: %v", r.stdout, err)
	}
	w.recipient = rec
	return w
}

func newSigner(t *testing.T) *dsse.Signer {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return dsse.NewSigner(k)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// stateDir makes a fresh state directory holding the droplet's keys.
func (w *world) stateDir() string {
	w.t.Helper()
	dir := filepath.Join(w.t.TempDir(), "state")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		w.t.Fatal(err)
	}
	for _, f := range []string{"age.key", "signing.key"} {
		data, err := os.ReadFile(filepath.Join(w.keysDir, f))
		if err != nil {
			w.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o600); err != nil {
			w.t.Fatal(err)
		}
	}
	return dir
}

func (w *world) seal(slot string, c schema.SealedCredential) schema.ManifestCredential {
	w.t.Helper()
	s, d, err := sealing.Seal(w.recipient, c)
	if err != nil {
		w.t.Fatal(err)
	}
	return schema.ManifestCredential{Name: slot, Type: "generic", Sealed: s, SHA256: d}
}

func (w *world) cred(name string) schema.SealedCredential {
	return schema.SealedCredential{Workspace: w.workspace, Droplet: w.droplet, Name: name, Data: json.RawMessage(`{"secret":"s3cret-` + name + `"}`)}
}

// manifest is a good manifest of version v.
func (w *world) manifest(v int64) schema.Manifest {
	wf := json.RawMessage(`{"name":"Lead intake","nodes":[]}`)
	return schema.Manifest{
		Type: schema.ManifestType, Workspace: w.workspace, Droplet: w.droplet, Version: v,
		IssuedAt: now.Add(-time.Minute), Expires: now.Add(24 * time.Hour),
		Commit: strings.Repeat("a", 40), N8N: schema.N8NPin{Version: "1.123.81"},
		Domains:     []string{"track.acme.com"},
		Workflows:   []schema.ManifestWorkflow{{Name: "lead-intake", SHA256: sha(wf), JSON: wf}},
		Credentials: []schema.ManifestCredential{w.seal("gmail", w.cred("gmail")), w.seal("openai", w.cred("openai"))},
	}
}

func (w *world) sign(m schema.Manifest, s *dsse.Signer) []byte {
	w.t.Helper()
	payload, err := json.Marshal(m)
	if err != nil {
		w.t.Fatal(err)
	}
	return w.signPayload(payload, schema.ManifestPayloadType, s)
}

func (w *world) signPayload(payload []byte, payloadType string, s *dsse.Signer) []byte {
	w.t.Helper()
	if s == nil {
		s = w.signer
	}
	env, err := s.Sign(payloadType, payload)
	if err != nil {
		w.t.Fatal(err)
	}
	return env
}

// good signs a good manifest of version v changed by edit.
func (w *world) good(v int64, edit func(*schema.Manifest)) []byte {
	m := w.manifest(v)
	if edit != nil {
		edit(&m)
	}
	return w.sign(m, nil)
}

func (w *world) verifyArgs(dir string, extra ...string) []string {
	return append([]string{"verify", "--trusted-key", w.keyFile, "--workspace", w.workspace, "--droplet", w.droplet,
		"--state-dir", dir, "--now", now.Format(time.RFC3339)}, extra...)
}

// snapshot is every file of a state directory (but the lock) with its mode.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	snap := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "lock" {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		snap[d.Name()] = fi.Mode().String() + " " + sha(data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// envelopeEdit rewrites an envelope's JSON text.
func envelopeEdit(env []byte, f func(map[string]any)) []byte {
	var m map[string]any
	json.Unmarshal(env, &m)
	f(m)
	b, _ := json.Marshal(m)
	return b
}

// TestHostileInput is the conformance suite of the verifier: every way a
// manifest must be refused, through genesis-agent verify (a process) and
// through agent.Accept, each leaving the state directory as it was.
func TestHostileInput(t *testing.T) {
	w := newWorld(t)
	other := newSigner(t)
	big := json.RawMessage(`"` + strings.Repeat("x", schema.MaxEnvelopeSize*3/4) + `"`)

	tests := []struct {
		name   string
		setup  [][]byte // accepted first
		env    []byte
		reason agent.Reason
		detail string
	}{
		{name: "bad signature", reason: agent.ReasonBadSignature, detail: "bad signature",
			env: envelopeEdit(w.good(1, nil), func(e map[string]any) {
				m := w.manifest(1)
				m.Version = 2
				p, _ := json.Marshal(m)
				e["payload"] = base64.StdEncoding.EncodeToString(p)
			})},
		{name: "unknown key", reason: agent.ReasonUnknownKey, detail: "no signature by a trusted key",
			env: w.sign(w.manifest(1), other)},
		{name: "wrong payloadType", reason: agent.ReasonPayloadType, detail: `"application/json"`,
			env: w.signPayload(mustJSON(w.manifest(1)), "application/json", nil)},
		{name: "wrong _type", reason: agent.ReasonPayloadType, detail: `_type "genesis.manifest.v0"`,
			env: w.good(1, func(m *schema.Manifest) { m.Type = "genesis.manifest.v0" })},
		{name: "duplicate key in payload", reason: agent.ReasonMalformed, detail: `duplicate key "version"`,
			env: w.signPayload(bytes.Replace(mustJSON(w.manifest(1)), []byte(`"version":1,`), []byte(`"version":1,"version":9,`), 1), schema.ManifestPayloadType, nil)},
		{name: "trailing data in payload", reason: agent.ReasonMalformed, detail: "trailing data",
			env: w.signPayload(append(mustJSON(w.manifest(1)), []byte(` {}`)...), schema.ManifestPayloadType, nil)},
		{name: "unknown field in payload", reason: agent.ReasonMalformed, detail: `unknown field "admin"`,
			env: w.signPayload(bytes.Replace(mustJSON(w.manifest(1)), []byte(`{"_type"`), []byte(`{"admin":true,"_type"`), 1), schema.ManifestPayloadType, nil)},
		{name: "duplicate key in envelope", reason: agent.ReasonMalformed, detail: `duplicate key "payloadType"`,
			env: bytes.Replace(w.good(1, nil), []byte(`"payloadType":`), []byte(`"payloadType":"x","payloadType":`), 1)},
		{name: "trailing data after envelope", reason: agent.ReasonMalformed, detail: "trailing data",
			env: append(w.good(1, nil), []byte("\n{}")...)},
		{name: "another workspace", reason: agent.ReasonMismatch, detail: `for "ws-other"/"4242"`,
			env: w.good(1, func(m *schema.Manifest) { m.Workspace = "ws-other" })},
		{name: "another droplet", reason: agent.ReasonMismatch, detail: `for "ws-acme"/"4243"`,
			env: w.good(1, func(m *schema.Manifest) { m.Droplet = "4243" })},
		{name: "rollback after restart", reason: agent.ReasonRollback, detail: "version 4 is lower than the applied version 5",
			setup: [][]byte{w.good(5, nil)}, env: w.good(4, nil)},
		{name: "same version other bytes", reason: agent.ReasonVersionReused, detail: "version 5 is the applied version with different bytes",
			setup: [][]byte{w.good(5, nil)}, env: w.good(5, func(m *schema.Manifest) { m.Commit = strings.Repeat("b", 40) })},
		{name: "absurd jump", reason: agent.ReasonVersionJump, detail: "absurd jump",
			setup: [][]byte{w.good(5, nil)}, env: w.good(5+1<<32+1, nil)},
		{name: "near 2^63", reason: agent.ReasonVersionJump, detail: "absurd jump",
			env: w.good(1<<63-1, nil)},
		{name: "zero version", reason: agent.ReasonMalformed, detail: "version 0 is not positive",
			env: w.good(0, nil)},
		{name: "expired (freeze)", reason: agent.ReasonExpired, detail: "expired at 2030-01-02T03:04:04Z",
			env: w.good(1, func(m *schema.Manifest) { m.IssuedAt = now.Add(-25 * time.Hour); m.Expires = now.Add(-time.Second) })},
		{name: "issued in the future", reason: agent.ReasonFuture, detail: "more than 5m0s after now",
			env: w.good(1, func(m *schema.Manifest) { m.IssuedAt = now.Add(6 * time.Minute) })},
		{name: "expires before issued", reason: agent.ReasonMalformed, detail: "is not after issued_at",
			env: w.good(1, func(m *schema.Manifest) { m.IssuedAt = now; m.Expires = now.Add(-time.Hour) })},
		{name: "no times", reason: agent.ReasonMalformed, detail: "issued_at and expires are required",
			env: w.good(1, func(m *schema.Manifest) { m.IssuedAt = time.Time{} })},
		{name: "over 4 MiB", reason: agent.ReasonTooLarge, detail: "over 4194304 bytes",
			env: w.good(1, func(m *schema.Manifest) {
				m.Workflows = []schema.ManifestWorkflow{{Name: "big", SHA256: sha(big), JSON: big}}
			})},
		{name: "credential digest", reason: agent.ReasonCredential, detail: "credential gmail: ciphertext digest does not match",
			env: w.good(1, func(m *schema.Manifest) { m.Credentials[0].SHA256 = strings.Repeat("0", 64) })},
		{name: "credential in another slot", reason: agent.ReasonCredential, detail: "credential openai: credential is bound to another slot (sealed for ws-acme/4242/gmail)",
			env: w.good(1, func(m *schema.Manifest) { m.Credentials[1] = w.seal("openai", w.cred("gmail")) })},
		{name: "credential for another droplet", reason: agent.ReasonCredential, detail: "bound to another slot (sealed for ws-acme/9999/openai)",
			env: w.good(1, func(m *schema.Manifest) {
				c := w.cred("openai")
				c.Droplet = "9999"
				m.Credentials[1] = w.seal("openai", c)
			})},
		{name: "credential for another workspace", reason: agent.ReasonCredential, detail: "sealed for ws-evil/4242/gmail",
			env: w.good(1, func(m *schema.Manifest) {
				c := w.cred("gmail")
				c.Workspace = "ws-evil"
				m.Credentials[0] = w.seal("gmail", c)
			})},
		{name: "credential sealed to another recipient", reason: agent.ReasonCredential, detail: "credential gmail: identity did not match",
			env: w.good(1, func(m *schema.Manifest) {
				id, _ := age.GenerateX25519Identity()
				s, d, _ := sealing.Seal(id.Recipient(), w.cred("gmail"))
				m.Credentials[0] = schema.ManifestCredential{Name: "gmail", Sealed: s, SHA256: d}
			})},
		{name: "duplicate credential names", reason: agent.ReasonDuplicate, detail: `two credentials named "gmail"`,
			env: w.good(1, func(m *schema.Manifest) { m.Credentials = append(m.Credentials, w.seal("gmail", w.cred("gmail"))) })},
		{name: "duplicate workflow names", reason: agent.ReasonDuplicate, detail: `two workflows named "lead-intake"`,
			env: w.good(1, func(m *schema.Manifest) { m.Workflows = append(m.Workflows, m.Workflows[0]) })},
		{name: "workflow digest", reason: agent.ReasonWorkflow, detail: `workflow "lead-intake": sha256 does not match`,
			env: w.good(1, func(m *schema.Manifest) { m.Workflows[0].JSON = json.RawMessage(`{"name":"Evil","nodes":[]}`) })},
		{name: "bad signing key", reason: agent.ReasonMalformed, detail: "signing_keys[0]",
			env: w.good(1, func(m *schema.Manifest) { m.SigningKeys = []string{"not a key"} })},
		{name: "not JSON", reason: agent.ReasonMalformed, detail: "malformed envelope",
			env: []byte("\x00\x01garbage")},
		{name: "empty", reason: agent.ReasonMalformed, detail: "malformed envelope",
			env: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/process", func(t *testing.T) {
			dir := w.stateDir()
			for i, env := range tc.setup {
				if r := runBin(t, env, nil, w.verifyArgs(dir)...); r.code != 0 {
					t.Fatalf("setup %d: %+v", i, r)
				}
			}
			before := snapshot(t, dir)
			r := runBin(t, tc.env, nil, w.verifyArgs(dir)...)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1; stdout %q stderr %q", r.code, r.stdout, r.stderr)
			}
			want := "genesis-agent: manifest rejected: " + string(tc.reason) + ": "
			if !strings.HasPrefix(r.stderr, want) || !strings.Contains(r.stderr, tc.detail) {
				t.Errorf("stderr %q, want %q ... %q", r.stderr, want, tc.detail)
			}
			if strings.Contains(r.stderr, "s3cret") || r.stdout != "" {
				t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
			}
			if diff := cmp.Diff(snapshot(t, dir), before); diff != "" {
				t.Errorf("the state directory changed after a rejection (-got +want):\n%s", diff)
			}
		})
		t.Run(tc.name+"/func", func(t *testing.T) {
			dir := w.stateDir()
			st, err := agent.OpenState(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			p := agent.Policy{Workspace: w.workspace, Droplet: w.droplet, Trusted: dsse.Trusted{}, Now: now}
			p.Trusted.Add(w.signer.Public())
			for i, env := range tc.setup {
				if _, err := agent.Accept(context.Background(), st, env, p); err != nil {
					t.Fatalf("setup %d: %v", i, err)
				}
			}
			before := snapshot(t, dir)
			applied := false
			p.Applier = agent.ApplyFunc(func(context.Context, *schema.Manifest, map[string]json.RawMessage) error { applied = true; return nil })
			_, err = agent.Accept(context.Background(), st, tc.env, p)
			if got := agent.ReasonOf(err); got != tc.reason || !strings.Contains(err.Error(), tc.detail) {
				t.Errorf("err = %v (reason %q), want %q ... %q", err, got, tc.reason, tc.detail)
			}
			if applied {
				t.Error("a rejected manifest reached the applier")
			}
			if diff := cmp.Diff(snapshot(t, dir), before); diff != "" {
				t.Errorf("the state directory changed after a rejection (-got +want):\n%s", diff)
			}
		})
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func TestVerifyAcceptsAndRecords(t *testing.T) {
	w := newWorld(t)
	dir := w.stateDir()
	empty := snapshot(t, dir)
	v1 := w.good(1, nil)
	r := runBin(t, v1, nil, w.verifyArgs(dir)...)
	if r.code != 0 || r.stdout != "1\n" {
		t.Fatalf("v1: %+v", r)
	}
	after := snapshot(t, dir)
	if cmp.Equal(after, empty) || !strings.HasPrefix(after["applied.json"], "-rw------- ") {
		t.Fatalf("acceptance did not record 0600 applied.json: %v", after)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "applied.json"))
	var rec struct {
		Version  int64  `json:"version"`
		Digest   string `json:"digest"`
		Envelope []byte `json:"envelope"`
	}
	if err := json.Unmarshal(data, &rec); err != nil || rec.Version != 1 || rec.Digest != sha(v1) || !bytes.Equal(rec.Envelope, v1) {
		t.Errorf("applied.json: version %d digest %s, exact bytes %v (%v)", rec.Version, rec.Digest, bytes.Equal(rec.Envelope, v1), err)
	}
	if bytes.Contains(data, []byte("s3cret")) {
		t.Error("plaintext in the state directory")
	}
	// The same bytes after a restart: accepted as a no-op.
	r = runBin(t, v1, nil, w.verifyArgs(dir)...)
	if r.code != 0 || r.stdout != "1\n" || !strings.Contains(r.stderr, "already applied") {
		t.Errorf("same bytes again: %+v", r)
	}
	if diff := cmp.Diff(snapshot(t, dir), after); diff != "" {
		t.Errorf("a no-op changed the state (-got +want):\n%s", diff)
	}
	// Versions may skip (a reconciler re-renders droplets independently).
	if r := runBin(t, w.good(7, nil), nil, w.verifyArgs(dir)...); r.code != 0 || r.stdout != "7\n" {
		t.Errorf("v7: %+v", r)
	}
	// The clock-skew allowance is configurable.
	future := w.good(8, func(m *schema.Manifest) { m.IssuedAt = now.Add(10 * time.Minute) })
	if r := runBin(t, future, nil, w.verifyArgs(dir)...); r.code != 1 {
		t.Errorf("issued 10m ahead with the default skew: %+v", r)
	}
	if r := runBin(t, future, nil, w.verifyArgs(dir, "--max-clock-skew", "15m")...); r.code != 0 {
		t.Errorf("issued 10m ahead with a 15m skew: %+v", r)
	}
}

func TestVerifyRotation(t *testing.T) {
	w := newWorld(t)
	dir := w.stateDir()
	newKey, stranger := newSigner(t), newSigner(t)
	// Before the announcement the new key is unknown.
	if r := runBin(t, w.sign(w.manifest(1), newKey), nil, w.verifyArgs(dir)...); r.code != 1 || !strings.Contains(r.stderr, "unknown_key") {
		t.Fatalf("new key before rotation: %+v", r)
	}
	announce := w.good(1, func(m *schema.Manifest) {
		m.SigningKeys = []string{string(dsse.MarshalPublicKeyPEM(newKey.Public()))}
	})
	if r := runBin(t, announce, nil, w.verifyArgs(dir)...); r.code != 0 {
		t.Fatalf("announcement: %+v", r)
	}
	// Only the old key is given on the command line: the new one comes
	// from the state directory.
	if r := runBin(t, w.sign(w.manifest(2), newKey), nil, w.verifyArgs(dir)...); r.code != 0 || r.stdout != "2\n" {
		t.Errorf("signed by the new key: %+v", r)
	}
	if r := runBin(t, w.good(3, nil), nil, w.verifyArgs(dir)...); r.code != 0 {
		t.Errorf("signed by the old key after rotation: %+v", r)
	}
	if r := runBin(t, w.sign(w.manifest(4), stranger), nil, w.verifyArgs(dir)...); r.code != 1 || !strings.Contains(r.stderr, "unknown_key") {
		t.Errorf("signed by a stranger: %+v", r)
	}
}

func TestKeysCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	r1 := runBin(t, nil, nil, "keys", "--state-dir", dir)
	r2 := runBin(t, nil, nil, "keys", "--state-dir", dir)
	if r1.code != 0 || r1.stdout != r2.stdout {
		t.Fatalf("keys: %+v then %+v", r1, r2)
	}
	lines := strings.SplitN(r1.stdout, "\n", 2)
	if !strings.HasPrefix(lines[0], "age1") {
		t.Errorf("first line %q is not an age recipient", lines[0])
	}
	if _, err := dsse.ParsePublicKeyPEM([]byte(lines[1])); err != nil {
		t.Errorf("public key: %v", err)
	}
	if strings.Contains(r1.stdout, "PRIVATE") || strings.Contains(r1.stdout, "AGE-SECRET-KEY") {
		t.Error("keys printed a private key")
	}
	for _, f := range []string{"age.key", "signing.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v %v", f, fi, err)
		}
	}
}

func TestUsage(t *testing.T) {
	w := newWorld(t)
	dir := w.stateDir()
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"no command", nil, 2, "", "Usage: genesis-agent COMMAND"},
		{"unknown command", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{"help", []string{"--help"}, 0, "Usage: genesis-agent COMMAND", ""},
		{"run help", []string{"run", "--help"}, 0, "-metrics-listen address", ""},
		{"keys help", []string{"keys", "--help"}, 0, "-state-dir directory", ""},
		{"verify help", []string{"verify", "--help"}, 0, "Exit status: 0 accepted, 1 rejected", ""},
		{"verify without key", []string{"verify", "--workspace", "w", "--droplet", "1", "--state-dir", dir}, 2, "", "--trusted-key is required"},
		{"verify without droplet", []string{"verify", "--trusted-key", w.keyFile, "--workspace", "w", "--state-dir", dir}, 2, "", "are required"},
		{"verify bad now", w.verifyArgs(dir, "--now", "yesterday"), 2, "", "--now"},
		{"verify bad key file", []string{"verify", "--trusted-key", filepath.Join(dir, "age.key"), "--workspace", "w", "--droplet", "1", "--state-dir", dir}, 2, "", "not a PEM PUBLIC KEY"},
		{"verify unknown flag", []string{"verify", "--frob"}, 2, "", "flag provided but not defined"},
		{"keys without dir", []string{"keys"}, 2, "", "--state-dir is required"},
		{"run both configs", []string{"run", "--config", "a", "--user-data", "b", "--droplet-id", "1", "--state-dir", dir}, 2, "", "not both"},
		{"run missing config", []string{"run", "--config", filepath.Join(dir, "nope.json"), "--droplet-id", "1", "--state-dir", dir}, 1, "", "read agent config"},
		{"run bad n8n runtime", []string{"run", "--n8n-runtime", "podman", "--droplet-id", "1", "--state-dir", dir}, 2, "", `--n8n-runtime: want compose or none, got "podman"`},
		{"run bad https port", []string{"run", "--caddy-https-port", "0", "--droplet-id", "1", "--state-dir", dir}, 2, "", "--caddy-https-port: 0 is not a port"},
		{"run bad http port", []string{"run", "--caddy-http-port", "70000", "--droplet-id", "1", "--state-dir", dir}, 2, "", "--caddy-http-port: 70000 is not a port"},
		{"run help shows caddy flags", []string{"run", "--help"}, 0, "-caddy-internal-tls", ""},
		{"run help shows acme flags", []string{"run", "--help"}, 0, "-acme-ca-roots file", ""},
		{"run help shows probe flags", []string{"run", "--help"}, 0, "-postgres-probe command", ""},
		{"run bad swap threshold", []string{"run", "--swap-max-percent", "0", "--droplet-id", "1", "--state-dir", dir}, 2, "", "--swap-max-percent: want a percentage above 0 and at most 100, got 0"},
		{"run acme ca not https", []string{"run", "--acme-ca", "http://127.0.0.1:14000/dir", "--droplet-id", "1", "--state-dir", dir}, 2, "", `--acme-ca "http://127.0.0.1:14000/dir": want an https URL`},
		{"run acme ca with internal tls", []string{"run", "--caddy-internal-tls", "--acme-ca-roots", "ca.pem", "--droplet-id", "1", "--state-dir", dir}, 2, "", "choose one issuer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := runBin(t, nil, nil, tc.args...)
			if r.code != tc.code || !strings.Contains(r.stdout, tc.stdout) || !strings.Contains(r.stderr, tc.stderr) || (tc.stderr == "" && r.stderr != "") {
				t.Errorf("got exit %d stdout %q stderr %q; want %d, %q, %q", r.code, r.stdout, r.stderr, tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}
