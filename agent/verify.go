package agent

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/schema/sealing"
)

// Reason names why a manifest was rejected. The set is fixed (it labels a
// metric and tests match on it).
type Reason string

// The reasons a manifest is rejected.
const (
	ReasonTooLarge      Reason = "too_large"      // envelope over schema.MaxEnvelopeSize
	ReasonMalformed     Reason = "malformed"      // envelope or payload not strictly decodable, or inconsistent
	ReasonPayloadType   Reason = "payload_type"   // wrong DSSE payloadType or payload _type
	ReasonUnknownKey    Reason = "unknown_key"    // no signature by a trusted key
	ReasonBadSignature  Reason = "bad_signature"  // a trusted key's signature does not verify
	ReasonMismatch      Reason = "mismatch"       // another workspace's or droplet's manifest
	ReasonRollback      Reason = "rollback"       // version lower than the applied one
	ReasonVersionReused Reason = "version_reused" // the applied version with other bytes
	ReasonVersionJump   Reason = "version_jump"   // absurd version (jump or near the int64 limit)
	ReasonExpired       Reason = "expired"        // expires has passed (freeze)
	ReasonFuture        Reason = "future"         // issued_at beyond the clock-skew allowance
	ReasonDuplicate     Reason = "duplicate"      // two workflows or credentials with one name
	ReasonWorkflow      Reason = "workflow"       // a workflow's sha256 does not match its JSON
	ReasonCredential    Reason = "credential"     // a credential does not open, or is bound to another slot
)

// RejectError is a rejected manifest. Its message never holds credential
// data.
type RejectError struct {
	Reason Reason
	Err    error
}

func (e *RejectError) Error() string {
	return "manifest rejected: " + string(e.Reason) + ": " + e.Err.Error()
}

func (e *RejectError) Unwrap() error { return e.Err }

func reject(r Reason, format string, a ...any) error {
	return &RejectError{Reason: r, Err: fmt.Errorf(format, a...)}
}

// ReasonOf is err's Reason, or "" if err is not a rejection.
func ReasonOf(err error) Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// Version limits. A version above MaxVersion could leave the droplet unable
// to take another manifest; a jump above MaxVersionJump past the applied one
// is no reconciler's doing.
const (
	MaxVersion     = math.MaxInt64 - 1<<32
	MaxVersionJump = 1 << 32
)

// DefaultMaxClockSkew is how far in the future issued_at may be.
const DefaultMaxClockSkew = 5 * time.Minute

// Expectation is what a manifest is verified against.
type Expectation struct {
	Workspace string
	Droplet   string
	Trusted   dsse.Trusted
	// Identity opens the manifest's credentials.
	Identity age.Identity
	// AppliedVersion and AppliedDigest are this droplet's applied manifest
	// (zero if none).
	AppliedVersion int64
	AppliedDigest  string
	Now            time.Time
	// MaxClockSkew bounds how far in the future issued_at may be; zero
	// means DefaultMaxClockSkew.
	MaxClockSkew time.Duration
}

// Verified is an accepted manifest. Credentials hold plaintext: keep it in
// memory, never log it.
type Verified struct {
	Manifest schema.Manifest
	// Envelope is the exact verified bytes; Digest their hex SHA-256.
	Envelope []byte
	Digest   string
	// KeyID is the id of the key that signed it.
	KeyID string
	// SigningKeys are the keys the manifest asks to trust from now on.
	SigningKeys []ed25519.PublicKey
	// Credentials are the opened credential data by name.
	Credentials map[string]json.RawMessage
	// Unchanged means it is the applied manifest again (same version, same
	// bytes): nothing to do.
	Unchanged bool
}

// MaxRotateToken bounds a manifest's sealed rotation token (an age file
// of a 32-byte secret is a few hundred bytes).
const MaxRotateToken = 4 << 10

// Verify checks one manifest envelope against e. Any failure is a
// *RejectError. It is the one verifier behind both the running agent and
// genesis-agent verify.
func Verify(envelope []byte, e Expectation) (*Verified, error) {
	if len(envelope) > schema.MaxEnvelopeSize {
		return nil, reject(ReasonTooLarge, "envelope is over %d bytes", schema.MaxEnvelopeSize)
	}
	payload, keyID, err := dsse.Verify(envelope, schema.ManifestPayloadType, e.Trusted)
	switch {
	case err == nil:
	case errors.Is(err, dsse.ErrPayloadType):
		return nil, &RejectError{Reason: ReasonPayloadType, Err: err}
	case errors.Is(err, dsse.ErrUnknownKey):
		return nil, &RejectError{Reason: ReasonUnknownKey, Err: err}
	case errors.Is(err, dsse.ErrBadSignature):
		return nil, &RejectError{Reason: ReasonBadSignature, Err: err}
	default:
		return nil, &RejectError{Reason: ReasonMalformed, Err: err}
	}
	var m schema.Manifest
	if err := schema.DecodeStrict(payload, &m); err != nil {
		return nil, reject(ReasonMalformed, "payload: %v", err)
	}
	if m.Type != schema.ManifestType {
		return nil, reject(ReasonPayloadType, "payload _type %q, want %q", m.Type, schema.ManifestType)
	}
	if m.Droplet != e.Droplet || (m.Workspace != e.Workspace && !adoptable(e.Workspace, m.Workspace)) {
		return nil, reject(ReasonMismatch, "manifest is for %q/%q, this is %q/%q", m.Workspace, m.Droplet, e.Workspace, e.Droplet)
	}
	d := digest(envelope)
	switch {
	case m.Version < 1:
		return nil, reject(ReasonMalformed, "version %d is not positive", m.Version)
	case m.Version > MaxVersion || m.Version-e.AppliedVersion > MaxVersionJump:
		return nil, reject(ReasonVersionJump, "version %d is an absurd jump from the applied version %d", m.Version, e.AppliedVersion)
	case m.Version < e.AppliedVersion:
		return nil, reject(ReasonRollback, "version %d is lower than the applied version %d", m.Version, e.AppliedVersion)
	case m.Version == e.AppliedVersion && d != e.AppliedDigest:
		return nil, reject(ReasonVersionReused, "version %d is the applied version with different bytes", m.Version)
	}
	skew := e.MaxClockSkew
	if skew <= 0 {
		skew = DefaultMaxClockSkew
	}
	switch {
	case m.IssuedAt.IsZero() || m.Expires.IsZero():
		return nil, reject(ReasonMalformed, "issued_at and expires are required")
	case !m.Expires.After(m.IssuedAt):
		return nil, reject(ReasonMalformed, "expires %s is not after issued_at %s", m.Expires.Format(time.RFC3339), m.IssuedAt.Format(time.RFC3339))
	case !e.Now.Before(m.Expires):
		return nil, reject(ReasonExpired, "manifest version %d expired at %s (now %s)", m.Version, m.Expires.UTC().Format(time.RFC3339), e.Now.UTC().Format(time.RFC3339))
	case m.IssuedAt.Sub(e.Now) > skew:
		return nil, reject(ReasonFuture, "manifest version %d issued at %s, more than %s after now %s", m.Version, m.IssuedAt.UTC().Format(time.RFC3339), skew, e.Now.UTC().Format(time.RFC3339))
	}
	if r := m.Rotate; r != nil {
		switch {
		case r.Generation < 1:
			return nil, reject(ReasonMalformed, "rotate.generation %d is not positive", r.Generation)
		case r.Token == "":
			return nil, reject(ReasonMalformed, "rotate.token is required")
		case len(r.Token) > MaxRotateToken:
			return nil, reject(ReasonMalformed, "rotate.token is over %d bytes", MaxRotateToken)
		}
	}
	if m.StableName != "" && !slices.Contains(m.Domains, m.StableName) {
		return nil, reject(ReasonMalformed, "stable_name %q is not one of domains", m.StableName)
	}
	v := &Verified{Manifest: m, Envelope: envelope, Digest: d, KeyID: keyID, Unchanged: m.Version == e.AppliedVersion}
	for i, p := range m.SigningKeys {
		k, err := dsse.ParsePublicKeyPEM([]byte(p))
		if err != nil {
			return nil, reject(ReasonMalformed, "signing_keys[%d]: %v", i, err)
		}
		v.SigningKeys = append(v.SigningKeys, k)
	}
	seen := map[string]bool{}
	for i, w := range m.Workflows {
		if w.Name == "" {
			return nil, reject(ReasonMalformed, "workflows[%d] has no name", i)
		}
		if seen[w.Name] {
			return nil, reject(ReasonDuplicate, "two workflows named %q", w.Name)
		}
		seen[w.Name] = true
		if !workflowDigestMatches(w) {
			return nil, reject(ReasonWorkflow, "workflow %q: sha256 does not match its JSON", w.Name)
		}
	}
	seen = map[string]bool{}
	for i, c := range m.Credentials {
		if c.Name == "" {
			return nil, reject(ReasonMalformed, "credentials[%d] has no name", i)
		}
		if seen[c.Name] {
			return nil, reject(ReasonDuplicate, "two credentials named %q", c.Name)
		}
		seen[c.Name] = true
	}
	v.Credentials = make(map[string]json.RawMessage, len(m.Credentials))
	for _, c := range m.Credentials {
		if e.Identity == nil {
			return nil, reject(ReasonCredential, "credential %q: no identity to open it", c.Name)
		}
		data, err := sealing.Open(e.Identity, c, m.Workspace, e.Droplet)
		if err != nil {
			Forget(v.Credentials)
			return nil, &RejectError{Reason: ReasonCredential, Err: err}
		}
		v.Credentials[c.Name] = data
	}
	return v, nil
}

// adoptable reports whether a droplet serving workspace may take a manifest
// naming workspace next: only a hot spare (schema.SparePrefix, which no
// tenant may use) changes workspace, once, to a tenant's. The manifest must
// still be signed by a trusted key and name this droplet; credentials are
// then opened for the new workspace's slot.
func adoptable(workspace, next string) bool {
	return schema.IsSpareWorkspace(workspace) && !schema.IsSpareWorkspace(next) && workspaceID.MatchString(next)
}

// workspaceID is a tenant workspace id (schema's rule).
var workspaceID = regexp.MustCompile(`^[a-z0-9-]{3,40}$`)

// workflowDigestMatches checks a workflow's sha256: the hex SHA-256 of its
// json value as it appears in the payload. The digest of the compacted
// value is accepted too, since encoding/json compacts a RawMessage when it
// marshals one.
func workflowDigestMatches(w schema.ManifestWorkflow) bool {
	if digest(w.JSON) == w.SHA256 {
		return true
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, w.JSON); err != nil {
		return false
	}
	return digest(buf.Bytes()) == w.SHA256
}

// Forget overwrites opened credential data, best effort, once it is no
// longer needed.
func Forget(creds map[string]json.RawMessage) {
	for name, data := range creds {
		clear(data)
		delete(creds, name)
	}
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
