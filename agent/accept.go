package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/schema/sealing"
)

// Applier makes the droplet match a verified manifest (n8n credentials and
// workflows, Caddy, the n8n version). It must be idempotent: a manifest is
// applied again after a restart, and again after a failure. credentials
// holds plaintext by credential name; it is only valid during the call.
type Applier interface {
	Apply(ctx context.Context, m *schema.Manifest, credentials map[string]json.RawMessage) error
}

// ApplyFunc adapts a function to Applier.
type ApplyFunc func(ctx context.Context, m *schema.Manifest, credentials map[string]json.RawMessage) error

// Apply calls f.
func (f ApplyFunc) Apply(ctx context.Context, m *schema.Manifest, credentials map[string]json.RawMessage) error {
	return f(ctx, m, credentials)
}

// acceptAll is the default Applier: it accepts every verified manifest and
// changes nothing (issue 6 brings the n8n and Caddy convergence).
type acceptAll struct{}

func (acceptAll) Apply(context.Context, *schema.Manifest, map[string]json.RawMessage) error {
	return nil
}

// ApplyError is an Applier's failure: the manifest was valid, the droplet
// could not be made to match it yet. It is retried.
type ApplyError struct {
	Version int64
	Err     error
}

func (e *ApplyError) Error() string {
	return fmt.Sprintf("apply manifest version %d: %v", e.Version, e.Err)
}

func (e *ApplyError) Unwrap() error { return e.Err }

// Policy is what Accept needs besides the envelope.
type Policy struct {
	Workspace string
	Droplet   string
	// Trusted are the configured signing keys; the state directory adds the
	// keys accepted manifests announced.
	Trusted      dsse.Trusted
	Now          time.Time
	MaxClockSkew time.Duration
	// Applier accepts every manifest when nil.
	Applier Applier
}

// Accept verifies envelope against the state directory, applies it, and
// records it as applied (exact bytes, version, newly trusted keys) in one
// atomic write. Nothing is recorded unless every step succeeds; a
// rejection leaves the directory as it was. The same manifest again is a
// no-op that reports Unchanged. The returned Verified has its credentials
// forgotten already.
func Accept(ctx context.Context, s *State, envelope []byte, p Policy) (*Verified, error) {
	trusted, err := s.Trusted(p.Trusted)
	if err != nil {
		return nil, err
	}
	version, dig := s.Floor(p.Workspace, p.Droplet)
	v, err := Verify(envelope, Expectation{
		Workspace:      p.Workspace,
		Droplet:        p.Droplet,
		Trusted:        trusted,
		Identity:       s.identity(),
		AppliedVersion: version,
		AppliedDigest:  dig,
		Now:            p.Now,
		MaxClockSkew:   p.MaxClockSkew,
	})
	if err != nil {
		return nil, err
	}
	defer Forget(v.Credentials)
	if v.Unchanged {
		return v, nil
	}
	applier := p.Applier
	if applier == nil {
		applier = acceptAll{}
	}
	if err := applier.Apply(ctx, &v.Manifest, v.Credentials); err != nil {
		return nil, &ApplyError{Version: v.Manifest.Version, Err: err}
	}
	if err := s.commit(v, p.Now); err != nil {
		return nil, err
	}
	return v, nil
}

// Reapply applies the recorded manifest again (after a restart: convergence
// is level-based). Its credentials are opened for the slot they were sealed
// for. It returns false if nothing is recorded.
func Reapply(ctx context.Context, s *State, applier Applier) (bool, error) {
	a := s.Applied()
	m, err := appliedManifest(a)
	if m == nil || err != nil {
		return err != nil, err
	}
	creds := make(map[string]json.RawMessage, len(m.Credentials))
	defer Forget(creds)
	for _, c := range m.Credentials {
		data, err := sealing.Open(s.identity(), c, a.Workspace, a.Droplet)
		if err != nil {
			return true, fmt.Errorf("reapply recorded manifest: %w", err)
		}
		creds[c.Name] = data
	}
	if applier == nil {
		applier = acceptAll{}
	}
	if err := applier.Apply(ctx, m, creds); err != nil {
		return true, &ApplyError{Version: m.Version, Err: err}
	}
	return true, nil
}

// appliedManifest decodes the recorded manifest (nil: none recorded).
func appliedManifest(a Applied) (*schema.Manifest, error) {
	if len(a.Envelope) == 0 {
		return nil, nil
	}
	payload, err := envelopePayload(a.Envelope)
	if err != nil {
		return nil, fmt.Errorf("reapply recorded manifest: %w", err)
	}
	var m schema.Manifest
	if err := schema.DecodeStrict(payload, &m); err != nil {
		return nil, fmt.Errorf("reapply recorded manifest: %w", err)
	}
	return &m, nil
}

// envelopePayload decodes a recorded envelope without checking its
// signature again: it was verified when it was accepted, and the key that
// signed it may since have rotated out of use.
func envelopePayload(envelope []byte) ([]byte, error) {
	var env dsse.Envelope
	if err := schema.DecodeStrict(envelope, &env); err != nil {
		return nil, err
	}
	if env.PayloadType != schema.ManifestPayloadType {
		return nil, fmt.Errorf("payload type %q", env.PayloadType)
	}
	return env.DecodedPayload()
}
