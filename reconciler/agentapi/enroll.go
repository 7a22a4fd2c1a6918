package agentapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"

	"filippo.io/age"
	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
)

// maxEnrollBody bounds POST /v1/enroll.
const maxEnrollBody = 16 << 10

var workspaceID = regexp.MustCompile(`^[a-z0-9-]{3,40}$`)

// enrollment is a checked EnrollRequest.
type enrollment struct {
	schema.EnrollRequest
	droplet int64
	pub     []byte
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
	if _, err := age.ParseX25519Recipient(r.AgeRecipient); err != nil {
		return e, errors.New("age_recipient is not an age X25519 recipient")
	}
	pub, err := dsse.ParsePublicKeyPEM([]byte(r.SigningKey))
	if err != nil {
		return e, fmt.Errorf("signing_key: %w", err)
	}
	e.pub = pub
	return e, nil
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

// enrollError is a refused enrollment with its status code.
type enrollError struct {
	code   int
	result string
	msg    string
}

func (e *enrollError) Error() string { return e.msg }

var (
	errTokenInvalid = &enrollError{http.StatusUnauthorized, "unauthorized", "the provisioning token is unknown, used or expired"}
	errTokenForeign = &enrollError{http.StatusForbidden, "forbidden", "the provisioning token is for another workspace or droplet"}
	errDropletTaken = &enrollError{http.StatusForbidden, "forbidden", "the droplet is enrolled for another workspace"}
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
	cred, err := s.enroll(r.Context(), req)
	var ee *enrollError
	switch {
	case errors.As(err, &ee):
		s.m.enrollments.WithLabelValues(ee.result).Inc()
		s.log.Warn("enrollment refused", "tenant", req.Workspace, "droplet", req.DropletID, "droplet_name", req.DropletName, "reason", ee.msg)
		httpError(w, ee.code, ee.msg)
		return
	case err != nil:
		s.m.enrollments.WithLabelValues("error").Inc()
		s.log.Error("enrollment failed", "tenant", req.Workspace, "droplet", req.DropletID, "err", err)
		httpError(w, http.StatusInternalServerError, "enrollment failed")
		return
	}
	s.m.enrollments.WithLabelValues("ok").Inc()
	s.log.Info("agent enrolled", "tenant", req.Workspace, "droplet", req.DropletID, "droplet_name", req.DropletName, "agent_version", req.AgentVersion)
	// The first manifest; if it fails the sweep renders it later and the
	// agent retries its 404s meanwhile.
	if err := s.RenderDroplet(r.Context(), req.droplet); err != nil {
		s.log.Error("render first manifest failed", "tenant", req.Workspace, "droplet", req.DropletID, "err", err)
	}
	writeJSON(w, http.StatusOK, schema.EnrollResponse{Workspace: req.Workspace, DropletID: req.DropletID, Credential: cred})
}

// enroll consumes the token and records the agent in one transaction, and
// returns its credential. Nothing is stored when it fails.
func (s *Service) enroll(ctx context.Context, req enrollment) (string, error) {
	cred, err := secret()
	if err != nil {
		return "", err
	}
	credHash := hash(cred)
	tokHash := hash(req.Token)
	now := s.cfg.Now()
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE enrollment_tokens SET used_at = $2, used_by = $3
			WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 AND workspace = $4 AND droplet_name = $5`,
			tokHash[:], now, req.droplet, req.Workspace, req.DropletName)
		if err != nil {
			return fmt.Errorf("consume token: %w", err)
		}
		if tag.RowsAffected() == 0 {
			// Why: a usable token bound elsewhere is foreign (403, and
			// it stays usable); anything else is 401.
			var usable bool
			err := tx.QueryRow(ctx, `SELECT used_at IS NULL AND expires_at > $2 FROM enrollment_tokens WHERE token_hash = $1`, tokHash[:], now).Scan(&usable)
			if errors.Is(err, pgx.ErrNoRows) || (err == nil && !usable) {
				return errTokenInvalid
			}
			if err != nil {
				return fmt.Errorf("check token: %w", err)
			}
			return errTokenForeign
		}
		// Versions continue from the workspace's highest, so an agent
		// woken from a snapshot never sees its version go down.
		var ok bool
		err = tx.QueryRow(ctx, `INSERT INTO agents (droplet_id, workspace, age_recipient, ed25519_public_key, credential_hash, enrolled_at, manifest_version)
			VALUES ($1, $2::text, $3, $4, $5, $6, (SELECT coalesce(max(manifest_version), 0) FROM agents WHERE workspace = $2::text))
			ON CONFLICT (droplet_id) DO UPDATE SET age_recipient = EXCLUDED.age_recipient, ed25519_public_key = EXCLUDED.ed25519_public_key,
				credential_hash = EXCLUDED.credential_hash, enrolled_at = EXCLUDED.enrolled_at, last_heartbeat_seq = 0
			WHERE agents.workspace = EXCLUDED.workspace
			RETURNING true`, req.droplet, req.Workspace, req.AgeRecipient, req.pub, credHash[:], now).Scan(&ok)
		if errors.Is(err, pgx.ErrNoRows) {
			return errDropletTaken
		}
		if err != nil {
			return fmt.Errorf("record agent: %w", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE fleet_status SET state = 'HANDSHAKE', state_since = now(), updated_at = now()
			WHERE workspace = $1 AND droplet_id = $2 AND state IN ('BOOTING', 'INITIALIZING')`, req.Workspace, req.droplet); err != nil {
			return fmt.Errorf("record handshake: %w", err)
		}
		_, err = tx.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, "a "+req.DropletID)
		return err
	})
	if err != nil {
		return "", err
	}
	s.forgetDroplet(req.droplet)
	s.remember(credHash, &agentRef{droplet: req.droplet, dropletS: req.DropletID, workspace: req.Workspace})
	return cred, nil
}
