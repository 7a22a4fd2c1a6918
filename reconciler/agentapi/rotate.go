package agentapi

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
)

// Secret rotation, the agent protocol's part (see store's rotations.go for
// the records and migration 0022 for the credential rules):
//
//  1. RequestRotation (any replica; the operator's rotate_secrets) records
//     the next generation with a fresh one-time token, kept only as its
//     hash and sealed to the droplet's current age recipient, and renders
//     the droplet's manifest: it carries rotate {generation, token}.
//  2. The agent rotates n8n's owner password and API key and the database
//     password (each new one verified before the old one is given up),
//     then makes new keys and trades the token, authenticated with its
//     current credential, for the new keys' credential (POST
//     /v1/agent/reenroll). Both credentials work now.
//  3. The agent's first heartbeat with the new credential promotes it: the
//     old credential is revoked, the new keys become the droplet's (the
//     next manifest is sealed to the new recipient), and the rotation
//     succeeds when the heartbeat reports the generation done.
//
// Failures: a refused re-enrollment, or an agent that dies before using
// its new credential, leaves the old credential valid (nothing is revoked
// before the new one was used); the agent retries with the same keys
// (same credential: the derivation is deterministic) while the rotation
// runs. A rotation that does not finish within RotationTTL is failed by
// the next request for the workspace, which drops the unused next
// credential.

// Rotation defaults.
const (
	// DefaultRotationsPerMinute is the fleet-wide budget of rotation
	// requests per minute.
	DefaultRotationsPerMinute = 10
	// RotationTTL is how long a rotation's token stays valid.
	RotationTTL = 24 * time.Hour
	// maxReenrollBody bounds POST /v1/agent/reenroll.
	maxReenrollBody = 16 << 10
)

// RequestRotation records a rotation of workspace's secrets by actor for
// reason and renders its droplet's manifest (a failed render is left to
// the sweep). Errors wrap store's ErrUnknownTenant, ErrNotRunning,
// ErrRotationRunning and ErrRotationBudget.
func (s *Service) RequestRotation(ctx context.Context, workspace, actor, reason string) (store.Rotation, error) {
	if !s.enabled {
		return store.Rotation{}, errDisabled
	}
	per := s.cfg.RotationsPerMinute
	if per <= 0 {
		per = DefaultRotationsPerMinute
	}
	rot, err := s.st.RequestRotation(ctx, store.RotationRequest{
		Workspace: workspace, Actor: actor, Reason: reason, PerMinute: per, TTL: RotationTTL,
		Seal: func(droplet int64, recipient string, gen int64) ([32]byte, string, error) {
			return sealRotationToken(workspace, droplet, recipient, gen)
		},
	})
	if err != nil {
		return store.Rotation{}, err
	}
	s.m.rotations.WithLabelValues("requested").Inc()
	s.log.Warn("secret rotation requested", "tenant", workspace, "generation", rot.Generation, "droplet", rot.Droplet, "actor", actor, "reason", reason)
	if err := s.RenderWorkspace(ctx, workspace); err != nil {
		s.log.Error("render manifest for a secret rotation failed; the sweep renders it", "tenant", workspace, "err", err)
	}
	return rot, nil
}

// sealRotationToken makes a rotation's token and seals it to the droplet's
// recipient, bound to the slot schema.RotateSlot(gen).
func sealRotationToken(workspace string, droplet int64, recipient string, gen int64) ([32]byte, string, error) {
	rcpt, err := age.ParseX25519Recipient(recipient)
	if err != nil {
		return [32]byte{}, "", fmt.Errorf("droplet %d recipient: %w", droplet, err)
	}
	token, err := secret()
	if err != nil {
		return [32]byte{}, "", err
	}
	data, err := json.Marshal(token)
	if err != nil {
		return [32]byte{}, "", err
	}
	sealed, _, err := sealing.Seal(rcpt, schema.SealedCredential{Workspace: workspace, Droplet: strconv.FormatInt(droplet, 10), Name: schema.RotateSlot(gen), Data: data})
	if err != nil {
		return [32]byte{}, "", fmt.Errorf("seal rotation token: %w", err)
	}
	return hash(token), sealed, nil
}

// rotateSection puts t's running rotation into c's manifest and inputs.
func rotateSection(c *content, t store.Target) {
	if t.RotateGeneration <= 0 || t.RotateToken == "" {
		return
	}
	c.manifest.Rotate = &schema.ManifestRotate{Generation: t.RotateGeneration, Token: t.RotateToken}
	sum := sha256.Sum256([]byte(t.RotateToken))
	c.inputs = sha256.Sum256(append(append(c.inputs[:], "rotate:"+strconv.FormatInt(t.RotateGeneration, 10)+":"...), sum[:]...))
}

// reenrollment is a checked ReenrollRequest.
type reenrollment struct {
	schema.ReenrollRequest
	recipient string
	pub       []byte
}

// decodeReenroll reads and checks a re-enrollment body (outside input:
// fuzzed).
func decodeReenroll(body []byte) (reenrollment, error) {
	var e reenrollment
	if err := schema.DecodeStrict(body, &e.ReenrollRequest); err != nil {
		return e, fmt.Errorf("malformed re-enrollment: %w", err)
	}
	r := e.ReenrollRequest
	switch {
	case r.Token == "" || len(r.Token) > 256:
		return e, errors.New("token is required")
	case r.Generation <= 0:
		return e, errors.New("generation must be positive")
	}
	var err error
	e.recipient, e.pub, err = parseAgentKeys(r.AgeRecipient, r.SigningKey)
	return e, err
}

// handleReenroll is POST /v1/agent/reenroll: an agent authenticated with
// its current credential trades its rotation's token for the credential of
// its new keys (derived like an enrollment's, so a retry with the same
// keys gets the same one). 401 bad credential (or one already next), 400
// malformed, 403 token refused.
func (s *Service) handleReenroll(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.agentOf(w, r)
	if !ok {
		s.m.rotations.WithLabelValues("reenroll_unauthorized").Inc()
		return
	}
	if ref.pending {
		s.m.rotations.WithLabelValues("reenroll_unauthorized").Inc()
		httpError(w, http.StatusUnauthorized, "re-enroll with the current credential, not the next one")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReenrollBody))
	if err != nil {
		httpError(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	req, err := decodeReenroll(body)
	if err != nil {
		s.m.rotations.WithLabelValues("reenroll_bad_request").Inc()
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	cred := credentialFor(enrollment{EnrollRequest: schema.EnrollRequest{Token: req.Token}, droplet: ref.droplet, pub: req.pub, recipient: req.recipient})
	credHash := hash(cred)
	err = s.st.Reenroll(r.Context(), store.Reenrollment{Droplet: ref.droplet, Workspace: ref.workspace, TokenHash: hash(req.Token),
		Generation: req.Generation, AgeRecipient: req.recipient, SigningKey: req.pub, CredentialHash: credHash})
	switch {
	case errors.Is(err, store.ErrRotationToken):
		s.m.rotations.WithLabelValues("reenroll_refused").Inc()
		s.log.Warn("re-enrollment refused", "tenant", ref.workspace, "droplet", ref.droplet, "generation", req.Generation, "reason", err.Error())
		httpError(w, http.StatusForbidden, err.Error())
		return
	case err != nil:
		s.log.Error("re-enrollment failed", "tenant", ref.workspace, "droplet", ref.droplet, "err", err)
		httpError(w, http.StatusInternalServerError, "re-enrollment failed")
		return
	}
	s.m.rotations.WithLabelValues("reenrolled").Inc()
	s.log.Info("agent re-enrolled new keys", "tenant", ref.workspace, "droplet", ref.droplet, "generation", req.Generation, "age_recipient", req.recipient)
	s.remember(credHash, &agentRef{droplet: ref.droplet, dropletS: ref.dropletS, workspace: ref.workspace, pending: true})
	writeJSON(w, http.StatusOK, schema.EnrollResponse{Workspace: ref.workspace, DropletID: ref.dropletS, Credential: cred})
}

// rotationHeartbeat handles a heartbeat's part in a rotation before it is
// queued: one sent with the next credential promotes it (and revokes the
// old one); a report of an error or a completed generation is recorded.
// An error means the heartbeat is not accepted (the agent retries).
func (s *Service) rotationHeartbeat(ctx context.Context, r *http.Request, ref *agentRef, hb schema.Heartbeat) error {
	var done, working int64
	var errText string
	if rp := hb.Rotation; rp != nil {
		done, working, errText = rp.Done, rp.Working, rp.Error
	}
	if ref.pending {
		cred, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		p, err := s.st.PromoteCredential(ctx, ref.droplet, hash(cred), done)
		if err != nil {
			return err
		}
		if p.Promoted {
			s.m.rotations.WithLabelValues("promoted").Inc()
			s.log.Info("new agent credential in use; old one revoked", "tenant", ref.workspace, "droplet", ref.droplet)
			s.forgetDroplet(ref.droplet)
		}
		if p.Succeeded > 0 {
			s.m.rotations.WithLabelValues("succeeded").Inc()
			s.log.Info("secret rotation succeeded", "tenant", ref.workspace, "droplet", ref.droplet, "generation", p.Succeeded)
		}
		// The recipient changed: the next manifest is sealed to it.
		s.renderSoon(ref.droplet)
		return nil
	}
	if working == 0 && errText == "" {
		return nil
	}
	finished, err := s.st.ReportRotation(ctx, ref.droplet, done, working, errText)
	if err != nil {
		return err
	}
	if finished > 0 {
		s.m.rotations.WithLabelValues("succeeded").Inc()
		s.log.Info("secret rotation succeeded", "tenant", ref.workspace, "droplet", ref.droplet, "generation", finished)
	}
	return nil
}
