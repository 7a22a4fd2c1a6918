package agentapi

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"time"

	"filippo.io/age"

	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// maxEnrollBody bounds POST /v1/enroll.
const maxEnrollBody = 16 << 10

// notYetRetry is the Retry-After of a "not yet" answer: the executor
// records a created droplet within seconds of DigitalOcean's answer.
const notYetRetry = 5 * time.Second

var workspaceID = regexp.MustCompile(`^[a-z0-9-]{3,40}$`)

// enrollment is a checked EnrollRequest.
type enrollment struct {
	schema.EnrollRequest
	droplet int64
	pub     []byte
	// recipient is AgeRecipient in its canonical spelling.
	recipient string
}

// decodeEnroll reads and checks an enrollment body (outside input: fuzzed).
func decodeEnroll(body []byte) (enrollment, error) {
	var e enrollment
	if err := schema.DecodeStrict(body, &e.EnrollRequest); err != nil {
		return e, fmt.Errorf("malformed enrollment: %w", err)
	}
	r := e.EnrollRequest
	switch {
	case r.Token == "" || len(r.Token) > 256:
		return e, errors.New("token is required")
	case !workspaceID.MatchString(r.Workspace):
		return e, errors.New("workspace is not a workspace id")
	case r.DropletName == "" || len(r.DropletName) > 255:
		return e, errors.New("droplet_name is required")
	case len(r.AgentVersion) > 100:
		return e, errors.New("agent_version is too long")
	}
	id, err := parseDroplet(r.DropletID)
	if err != nil {
		return e, err
	}
	e.droplet = id
	e.recipient, e.pub, err = parseAgentKeys(r.AgeRecipient, r.SigningKey)
	return e, err
}

// parseAgentKeys reads the public halves of an agent's keys as an
// enrollment or a re-enrollment sends them: its age recipient (returned in
// its canonical spelling) and its ed25519 signing key (PEM).
func parseAgentKeys(ageRecipient, signingKey string) (recipient string, pub []byte, err error) {
	rcpt, err := age.ParseX25519Recipient(ageRecipient)
	if err != nil {
		return "", nil, errors.New("age_recipient is not an age X25519 recipient")
	}
	pub, err = dsse.ParsePublicKeyPEM([]byte(signingKey))
	if err != nil {
		return "", nil, fmt.Errorf("signing_key: %w", err)
	}
	return rcpt.String(), pub, nil
}

// parseDroplet reads a droplet id as the wire spells it: a canonical
// positive decimal.
func parseDroplet(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != s {
		return 0, errors.New("droplet id must be a positive decimal number")
	}
	return id, nil
}

// credentialLabel separates the credential derivation from any other use
// of a token.
const credentialLabel = "genesis.dev/fleet agent credential v1"

// credentialFor derives the credential of an enrollment: HMAC-SHA256 keyed
// by the token over the label, the droplet id, and the agent's canonical
// age recipient and ed25519 public key, each length-prefixed. A retry with
// the same token and keys derives the same credential, so a lost response
// costs nothing; nothing but its SHA-256 is stored.
func credentialFor(e enrollment) string {
	m := hmac.New(sha256.New, []byte(e.Token))
	for _, part := range [][]byte{[]byte(credentialLabel), []byte(strconv.FormatInt(e.droplet, 10)), []byte(e.recipient), e.pub} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		m.Write(n[:])
		m.Write(part)
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// enrollError is a refused enrollment with its status code.
type enrollError struct {
	code   int
	result string
	msg    string
}

func (e *enrollError) Error() string { return e.msg }

var (
	errTokenInvalid   = &enrollError{http.StatusUnauthorized, "unauthorized", "the provisioning token is unknown, used or expired"}
	errTokenForeign   = &enrollError{http.StatusForbidden, "forbidden", "the provisioning token is for another workspace or droplet"}
	errDropletRevoked = &enrollError{http.StatusForbidden, "forbidden", "the droplet was destroyed or replaced; its agent may not enroll again"}
	errDropletTaken   = &enrollError{http.StatusForbidden, "forbidden", "the droplet is enrolled for another workspace"}
	errNotYet         = &enrollError{http.StatusServiceUnavailable, "not_yet", "the droplet is not recorded yet: retry later"}
)

func (s *Service) handleEnroll(w http.ResponseWriter, r *http.Request) {
	if !s.enabled {
		s.m.enrollments.WithLabelValues("disabled").Inc()
		s.log.Error("enrollment refused: agent protocol disabled", "err", errDisabled)
		httpError(w, http.StatusServiceUnavailable, errDisabled.Error())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEnrollBody))
	if err != nil {
		s.m.enrollments.WithLabelValues("bad_request").Inc()
		httpError(w, http.StatusRequestEntityTooLarge, "body too large")
		return
	}
	req, err := decodeEnroll(body)
	if err != nil {
		s.m.enrollments.WithLabelValues("bad_request").Inc()
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	cred, repeated, err := s.enroll(r.Context(), req)
	var ee *enrollError
	switch {
	case errors.As(err, &ee):
		s.m.enrollments.WithLabelValues(ee.result).Inc()
		if ok, suppressed := s.refusals.Allow(ee.result, s.cfg.Now()); suppressed > 0 {
			s.log.Warn("enrollment refusals not logged", "result", ee.result, "suppressed", suppressed, "window", refusalWindow.String())
		} else if ok {
			s.log.Warn("enrollment refused", "tenant", req.Workspace, "droplet", req.DropletID, "droplet_name", req.DropletName, "reason", ee.msg)
		}
		if ee == errNotYet {
			w.Header().Set("Retry-After", strconv.Itoa(int(notYetRetry/time.Second)))
		}
		httpError(w, ee.code, ee.msg)
		return
	case err != nil:
		s.m.enrollments.WithLabelValues("error").Inc()
		s.log.Error("enrollment failed", "tenant", req.Workspace, "droplet", req.DropletID, "err", err)
		httpError(w, http.StatusInternalServerError, "enrollment failed")
		return
	}
	if repeated {
		s.m.enrollments.WithLabelValues("repeated").Inc()
		s.log.Info("agent enrollment repeated", "tenant", req.Workspace, "droplet", req.DropletID, "droplet_name", req.DropletName)
	} else {
		s.m.enrollments.WithLabelValues("ok").Inc()
		s.log.Info("agent enrolled", "tenant", req.Workspace, "droplet", req.DropletID, "droplet_name", req.DropletName, "agent_version", req.AgentVersion)
	}
	// The answer goes out before any rendering: a slow render must not
	// time the agent out. The first manifest is rendered by Run's worker
	// (the agent retries its 404s meanwhile; the sweep renders it if the
	// queue was full).
	writeJSON(w, http.StatusOK, schema.EnrollResponse{Workspace: req.Workspace, DropletID: req.DropletID, Credential: cred})
	s.renderSoon(req.droplet)
}

// enroll consumes the token and records the agent in one transaction, and
// returns its credential. Nothing is stored when it fails. A retry of a
// completed enrollment (same token, droplet and keys, token not expired)
// returns the same credential with repeated set, and changes nothing.
func (s *Service) enroll(ctx context.Context, req enrollment) (cred string, repeated bool, err error) {
	cred = credentialFor(req)
	credHash := hash(cred)
	now := s.cfg.Now()
	rec := store.Enrollment{TokenHash: hash(req.Token), Workspace: req.Workspace, DropletName: req.DropletName, Droplet: req.droplet,
		AgeRecipient: req.AgeRecipient, SigningKey: req.pub, CredentialHash: credHash}
	err = s.st.InTx(ctx, func(tx *store.Tx) error {
		consumed, err := tx.ConsumeToken(ctx, rec, now)
		if err != nil {
			return fmt.Errorf("consume token: %w", err)
		}
		if !consumed {
			repeated, err = s.whyNot(ctx, tx, req, rec.TokenHash, credHash, now)
			return err
		}
		err = tx.RecordAgent(ctx, rec, now)
		switch {
		case errors.Is(err, store.ErrDropletTaken):
			return errDropletTaken
		case errors.Is(err, store.ErrDropletRevoked):
			return errDropletRevoked
		case err != nil:
			return fmt.Errorf("record agent: %w", err)
		}
		if err := tx.MarkEnrolled(ctx, req.Workspace, req.droplet); err != nil {
			return fmt.Errorf("record handshake: %w", err)
		}
		return tx.NotifyEnrolled(ctx, req.DropletID)
	})
	if err != nil {
		return "", false, err
	}
	if !repeated {
		s.forgetDroplet(req.droplet)
	}
	s.remember(credHash, &agentRef{droplet: req.droplet, dropletS: req.DropletID, workspace: req.Workspace})
	return cred, repeated, nil
}

// whyNot explains a token the consuming UPDATE did not match: it reports a
// repeat of the enrollment that consumed it (true, nil), or the refusal.
//
//   - unknown or expired: 401 (also for a repeat: a retry is honoured only
//     within the token's lifetime);
//   - used: a repeat when the droplet and the derived credential match
//     what was recorded (same token, same keys), else 401;
//   - unused but for another workspace or droplet name, or bound to another
//     droplet id: 403, and the token stays usable by its own droplet;
//   - unused and not bound yet (the agent was faster than the executor's
//     record of the create): not yet, 503 with Retry-After. The caller's
//     claim is never bound.
func (s *Service) whyNot(ctx context.Context, tx *store.Tx, req enrollment, tokHash, credHash [32]byte, now time.Time) (bool, error) {
	tok, found, err := tx.Token(ctx, tokHash, now)
	ws, name := tok.Workspace, tok.DropletName
	switch {
	case err != nil:
		return false, fmt.Errorf("check token: %w", err)
	case !found:
		return false, errTokenInvalid
	case tok.Expired:
		return false, errTokenInvalid
	case tok.Used:
		if tok.UsedBy != req.droplet || ws != req.Workspace || name != req.DropletName {
			return false, errTokenInvalid
		}
		// A revoked credential (its droplet destroyed or replaced since)
		// is never handed out again.
		same, err := tx.HasCredential(ctx, req.droplet, req.Workspace, credHash)
		if err != nil {
			return false, fmt.Errorf("check repeated enrollment: %w", err)
		}
		if !same {
			return false, errTokenInvalid
		}
		return true, nil
	case ws != req.Workspace || name != req.DropletName:
		return false, errTokenForeign
	case tok.Bound == 0:
		return false, errNotYet
	default:
		return false, errTokenForeign
	}
}

// renderSoon queues droplet's first manifest for Run's render worker;
// when the queue is full the leader's sweep renders it.
func (s *Service) renderSoon(droplet int64) {
	s.firstsPending.Add(1)
	select {
	case s.firsts <- droplet:
	default:
		s.firstsPending.Add(-1)
		s.log.Warn("first manifest queue full; the sweep renders it", "droplet", droplet)
	}
}

// renderFirsts renders queued first manifests until ctx ends.
func (s *Service) renderFirsts(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case droplet := <-s.firsts:
			if err := s.RenderDroplet(ctx, droplet); err != nil && ctx.Err() == nil {
				s.log.Error("render first manifest failed", "droplet", droplet, "err", err)
			}
			s.firstsPending.Add(-1)
		}
	}
}

// refusalWindow and refusalBurst bound the log lines of refused
// enrollments: per result, the first refusalBurst of each window are
// logged; the rest are only counted (genesis_enrollments_total counts
// every one), and the first refusal after the window logs how many were
// not.
const (
	refusalWindow = time.Minute
	refusalBurst  = 5
)
