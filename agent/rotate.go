package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
)

// Secret rotation, the agent's part. A manifest with rotate {generation,
// token} above the generation this droplet completed asks for it once:
//
//  1. n8n and the database (Config.RotateSecrets: the converger's new API
//     key and owner password, the compose stack's database password; each
//     new secret verified before the old one is given up). Idempotent per
//     generation: a retry resumes.
//  2. New agent keys, written to age.key.next and signing.key.next before
//     they are used, so a retry sends the same keys.
//  3. The token (opened with the current identity) and the current
//     credential buy the new keys' credential (POST /v1/agent/reenroll),
//     kept in credential.next.json. The old credential still works.
//  4. The switch: a heartbeat sent with the new credential, reporting the
//     generation done. Its acceptance is the reconciler's proof that the
//     new credential works: it revokes the old one then. The agent then
//     moves the next files into place (the old age identity is kept as
//     age.key.prev to open what was sealed to it) and uses the new
//     credential from then on.
//
// Failures: any error before the switch leaves the old credential and keys
// in use and is retried (heartbeats report it); a refused switch (the
// reconciler dropped the next credential: the rotation failed or expired)
// drops credential.next.json. An agent that dies after the reconciler
// accepted the switch but before it moved its files finds its old
// credential refused and credential.next.json present at its next start,
// and switches then (trySwitch).

// Rotation files in the state directory.
const (
	rotationFile       = "rotation.json"        // rotationRecord
	nextAgeKeyFile     = "age.key.next"         // the new age identity, before the switch
	nextSigningKeyFile = "signing.key.next"     // the new ed25519 key, before the switch
	nextCredentialFile = "credential.next.json" // the new keys' credential, before the switch
	prevAgeKeyFile     = "age.key.prev"         // the age identity the last switch replaced
)

// rotationRecord is rotation.json.
type rotationRecord struct {
	// Done is the highest generation completed.
	Done int64 `json:"done"`
	// Working is the generation under way (0: none), Error why its last
	// attempt stopped.
	Working int64  `json:"working,omitempty"`
	Error   string `json:"error,omitempty"`
}

// rotation reads rotation.json (zero: none).
func (s *State) rotation() rotationRecord {
	var r rotationRecord
	data, err := os.ReadFile(filepath.Join(s.dir, rotationFile))
	if err == nil {
		_ = schema.DecodeStrict(data, &r)
	}
	return r
}

func (s *State) saveRotation(r rotationRecord) error {
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, rotationFile), append(data, '\n'), 0o600)
}

// RotationReport is what heartbeats say about rotations (nil: never asked).
func (s *State) RotationReport() *schema.RotationReport {
	r := s.rotation()
	if r.Done == 0 && r.Working == 0 {
		return nil
	}
	return &schema.RotationReport{Done: r.Done, Working: r.Working, Error: r.Error}
}

// loadPrev reads age.key.prev if there is one; s.mu is held or s is new.
func (s *State) loadPrev() error {
	data, err := os.ReadFile(filepath.Join(s.dir, prevAgeKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read previous age identity: %w", err)
	}
	ids, err := age.ParseIdentities(strings.NewReader(string(data)))
	if err != nil || len(ids) != 1 {
		return fmt.Errorf("read previous age identity: want exactly one X25519 identity")
	}
	id, ok := ids[0].(*age.X25519Identity)
	if !ok {
		return fmt.Errorf("read previous age identity: want an X25519 identity")
	}
	s.prev = id
	return nil
}

// identities opens age files with the current identity, then the one the
// last rotation replaced.
type identities []age.Identity

func (ids identities) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	for _, id := range ids {
		key, err := id.Unwrap(stanzas)
		if errors.Is(err, age.ErrIncorrectIdentity) {
			continue
		}
		return key, err
	}
	return nil, age.ErrIncorrectIdentity
}

// identity is what manifests' sealed parts are opened with.
func (s *State) identity() age.Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.prev == nil {
		return s.keys.Identity
	}
	return identities{s.keys.Identity, s.prev}
}

// nextKeys are the keys of the rotation under way, made on first use.
func (s *State) nextKeys() (Keys, error) {
	return readKeyFiles(s.dir, nextAgeKeyFile, nextSigningKeyFile, true)
}

// nextCredential is the new keys' credential (false: none yet).
func (s *State) nextCredential(droplet string) (string, bool) {
	data, err := os.ReadFile(filepath.Join(s.dir, nextCredentialFile))
	if err != nil {
		return "", false
	}
	var c storedCredential
	if schema.DecodeStrict(data, &c) != nil || c.Droplet != droplet || c.Credential == "" {
		return "", false
	}
	return c.Credential, true
}

func (s *State) saveNextCredential(workspace, droplet, credential string) error {
	data, err := json.Marshal(storedCredential{Workspace: workspace, Droplet: droplet, Credential: credential})
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, nextCredentialFile), append(data, '\n'), 0o600)
}

func (s *State) dropNextCredential() error {
	err := os.Remove(filepath.Join(s.dir, nextCredentialFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// switchKeys makes the next keys and credential the droplet's (after the
// reconciler accepted the new credential) and records gen done. Each
// rename is atomic; a crash between them is finished by the next call
// (trySwitch at start finds the next credential and calls it again).
func (s *State) switchKeys(gen int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(filepath.Join(s.dir, nextAgeKeyFile)); err == nil {
		if err := os.Rename(filepath.Join(s.dir, ageKeyFile), filepath.Join(s.dir, prevAgeKeyFile)); err != nil {
			return fmt.Errorf("switch keys: %w", err)
		}
		if err := os.Rename(filepath.Join(s.dir, nextAgeKeyFile), filepath.Join(s.dir, ageKeyFile)); err != nil {
			return fmt.Errorf("switch keys: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dir, nextSigningKeyFile)); err == nil {
		if err := os.Rename(filepath.Join(s.dir, nextSigningKeyFile), filepath.Join(s.dir, signingKeyFile)); err != nil {
			return fmt.Errorf("switch keys: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(s.dir, nextCredentialFile)); err == nil {
		if err := os.Rename(filepath.Join(s.dir, nextCredentialFile), filepath.Join(s.dir, credentialFile)); err != nil {
			return fmt.Errorf("switch keys: %w", err)
		}
	}
	if err := syncDir(s.dir); err != nil {
		return err
	}
	keys, err := readKeys(s.dir, false)
	if err != nil {
		return err
	}
	s.keys = keys
	if err := s.loadPrev(); err != nil {
		return err
	}
	return s.saveRotation(rotationRecord{Done: gen})
}

// Reenroll is POST /v1/agent/reenroll with the current credential.
func (c *Client) Reenroll(ctx context.Context, credential string, req schema.ReenrollRequest) (schema.EnrollResponse, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return schema.EnrollResponse{}, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url("/v1/agent/reenroll"), strings.NewReader(string(body)))
	if err != nil {
		return schema.EnrollResponse{}, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Authorization", "Bearer "+credential)
	resp, err := c.http().Do(hreq)
	if err != nil {
		return schema.EnrollResponse{}, fmt.Errorf("reenroll: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return schema.EnrollResponse{}, statusError("reenroll", resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return schema.EnrollResponse{}, fmt.Errorf("reenroll: read response: %w", err)
	}
	var er schema.EnrollResponse
	if err := json.Unmarshal(data, &er); err != nil || er.Credential == "" {
		return schema.EnrollResponse{}, errors.New("reenroll: malformed response")
	}
	return er, nil
}

// rotateLoop carries out the rotation the applied manifest asks for: at
// start, after each accepted manifest (rotateKick), and after a failure
// every RetryMin..RetryMax (backoff), until ctx ends.
func (a *Agent) rotateLoop(ctx context.Context) error {
	bo := Backoff{min: a.cfg.RetryMin, max: a.cfg.RetryMax}
	for {
		wait := time.Duration(-1)
		if err := a.rotateOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = bo.Next()
			a.log.Error("secret rotation failed; old secrets kept", "err", err, "retry_in", wait)
		} else {
			bo.Reset()
		}
		var t <-chan time.Time
		var timer *time.Timer
		if wait >= 0 {
			timer = time.NewTimer(wait)
			t = timer.C
		}
		select {
		case <-ctx.Done():
		case <-a.rotateKick:
		case <-t:
		}
		if timer != nil {
			timer.Stop()
		}
		if ctx.Err() != nil {
			return nil
		}
	}
}

// rotateOnce carries out the applied manifest's rotation if it is not done.
func (a *Agent) rotateOnce(ctx context.Context) error {
	st := a.cfg.State
	m, err := appliedManifest(st.Applied())
	if err != nil || m == nil || m.Rotate == nil {
		return err
	}
	gen := m.Rotate.Generation
	rec := st.rotation()
	if gen <= rec.Done {
		return nil
	}
	err = a.rotate(ctx, m, gen)
	if err == nil {
		return nil
	}
	msg := err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	if serr := st.saveRotation(rotationRecord{Done: rec.Done, Working: gen, Error: msg}); serr != nil {
		a.log.Error("record rotation error", "err", serr)
	}
	a.heartbeatSoon()
	return err
}

func (a *Agent) rotate(ctx context.Context, m *schema.Manifest, gen int64) error {
	st := a.cfg.State
	ws, droplet := a.workspace(), a.cfg.DropletID
	rec := st.rotation()
	if rec.Working != gen {
		if err := st.saveRotation(rotationRecord{Done: rec.Done, Working: gen}); err != nil {
			return err
		}
		a.log.Warn("secret rotation started", "generation", gen)
	}
	// A switch the reconciler accepted before a crash: finish it.
	if switched, err := a.trySwitch(ctx, gen); err != nil || switched {
		return err
	}
	if a.cfg.RotateSecrets != nil {
		if err := a.cfg.RotateSecrets(ctx, gen); err != nil {
			return err
		}
	}
	keys, err := st.nextKeys()
	if err != nil {
		return fmt.Errorf("make new agent keys: %w", err)
	}
	if _, ok := st.nextCredential(droplet); !ok {
		tok := m.Rotate.Token
		data, err := sealing.Open(st.identity(), schema.ManifestCredential{Name: schema.RotateSlot(gen), Sealed: tok, SHA256: sealing.Digest(tok)}, ws, droplet)
		if err != nil {
			return fmt.Errorf("open rotation token: %w", err)
		}
		var token string
		if err := json.Unmarshal(data, &token); err != nil || token == "" {
			return errors.New("open rotation token: not a token")
		}
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		resp, err := a.client.Reenroll(rctx, a.credential(), schema.ReenrollRequest{Token: token, Generation: gen,
			AgeRecipient: keys.Recipient(), SigningKey: keys.PublicKeyPEM()})
		cancel()
		if err != nil {
			return fmt.Errorf("re-enroll new keys: %w", err)
		}
		if err := st.saveNextCredential(ws, droplet, resp.Credential); err != nil {
			return err
		}
		a.log.Info("new agent keys re-enrolled", "generation", gen, "age_recipient", keys.Recipient())
	}
	switched, err := a.trySwitch(ctx, gen)
	if err != nil {
		return err
	}
	if !switched {
		return errors.New("switch to the new credential: refused; re-enrolling")
	}
	return nil
}

// trySwitch sends a heartbeat with the next credential reporting gen done
// (none: false). Accepted: the keys and credential switch. Refused (401,
// 403): the reconciler does not hold it (any more): it is dropped and the
// old one stays. Other errors leave everything as it is.
func (a *Agent) trySwitch(ctx context.Context, gen int64) (bool, error) {
	st := a.cfg.State
	next, ok := st.nextCredential(a.cfg.DropletID)
	if !ok {
		return false, nil
	}
	seq, err := st.NextSeq()
	if err != nil {
		return false, err
	}
	hb := a.heartbeat(ctx, seq)
	hb.Rotation = &schema.RotationReport{Done: gen}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = a.client.Heartbeat(rctx, next, hb)
	cancel()
	var se *StatusError
	if errors.As(err, &se) && (se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden) {
		a.log.Warn("new credential refused; keeping the old one", "generation", gen, "code", se.Code)
		return false, st.dropNextCredential()
	}
	if err != nil {
		return false, fmt.Errorf("switch to the new credential: %w", err)
	}
	if err := st.switchKeys(gen); err != nil {
		return false, err
	}
	a.setCredential(next)
	a.log.Warn("secret rotation done: new agent credential in use, old one revoked", "generation", gen)
	return true, nil
}
