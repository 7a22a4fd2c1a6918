package agentapi

import (
	"errors"
	"io"
	"net/http"

	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/schema"
)

// maxBackupBody bounds POST /v1/agent/backups/{id} bodies.
const maxBackupBody = 8 << 10

// The backup routes: an agent starts a backup (a presigned PUT URL),
// reports how it ended, fetches one of its workspace's backups (a
// presigned GET URL) and reports a restore. Each acts only on the calling
// droplet's own workspace.
func (s *Service) handleBackupStart(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.agentOf(w, r)
	if !ok {
		return
	}
	start, err := s.cfg.Backups.Start(r.Context(), ref.workspace, ref.droplet)
	if err != nil {
		s.backupError(w, ref, "start", err)
		return
	}
	writeJSON(w, http.StatusCreated, start)
}

func (s *Service) handleBackupFinish(w http.ResponseWriter, r *http.Request) {
	s.backupReport(w, r, "finish", func(ref *agentRef, id string, f schema.BackupFinish) error {
		return s.cfg.Backups.Finish(r.Context(), ref.workspace, id, f)
	})
}

func (s *Service) handleRestored(w http.ResponseWriter, r *http.Request) {
	s.backupReport(w, r, "restored", func(ref *agentRef, id string, f schema.BackupFinish) error {
		return s.cfg.Backups.Restored(r.Context(), ref.workspace, ref.dropletS, id, f.Error)
	})
}

// backupReport answers an agent's report about backup {id} (a
// schema.BackupFinish body): 204 once record took it.
func (s *Service) backupReport(w http.ResponseWriter, r *http.Request, call string, record func(*agentRef, string, schema.BackupFinish) error) {
	ref, ok := s.agentOf(w, r)
	if !ok {
		return
	}
	var f schema.BackupFinish
	id, ok := s.backupBody(w, r, &f)
	if !ok {
		return
	}
	if err := record(ref, id, f); err != nil {
		s.backupError(w, ref, call, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleBackupFetch(w http.ResponseWriter, r *http.Request) {
	ref, ok := s.agentOf(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if !backup.ValidID(id) {
		httpError(w, http.StatusBadRequest, "not a backup id")
		return
	}
	f, err := s.cfg.Backups.Fetch(r.Context(), ref.workspace, id)
	if err != nil {
		s.backupError(w, ref, "fetch", err)
		return
	}
	writeJSON(w, http.StatusOK, f)
}

// agentOf authenticates the calling droplet (false: answered).
func (s *Service) agentOf(w http.ResponseWriter, r *http.Request) (*agentRef, bool) {
	ref, err := s.authenticate(r)
	if err != nil {
		s.log.Error("authenticate failed", "err", err)
		httpError(w, http.StatusInternalServerError, "authentication unavailable")
		return nil, false
	}
	if ref == nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="genesis"`)
		httpError(w, http.StatusUnauthorized, "bad credential")
		return nil, false
	}
	return ref, true
}

// backupBody reads the path's backup id and a strict JSON body into v
// (false: answered).
func (s *Service) backupBody(w http.ResponseWriter, r *http.Request, v any) (string, bool) {
	id := r.PathValue("id")
	if !backup.ValidID(id) {
		httpError(w, http.StatusBadRequest, "not a backup id")
		return "", false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBackupBody))
	if err != nil {
		httpError(w, http.StatusRequestEntityTooLarge, "body too large")
		return "", false
	}
	if err := schema.DecodeStrict(body, v); err != nil {
		httpError(w, http.StatusBadRequest, "malformed body: "+err.Error())
		return "", false
	}
	return id, true
}

// backupError answers err of a backup call.
func (s *Service) backupError(w http.ResponseWriter, ref *agentRef, call string, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, backup.ErrDisabled):
		code = http.StatusServiceUnavailable
	case errors.Is(err, backup.ErrBusy):
		w.Header().Set("Retry-After", "600")
		code = http.StatusTooManyRequests
	case errors.Is(err, backup.ErrUnknown):
		code = http.StatusNotFound
	case errors.Is(err, backup.ErrMismatch):
		code = http.StatusConflict
	default:
		s.log.Error("backup call failed", "call", call, "tenant", ref.workspace, "droplet", ref.droplet, "err", err)
		code = http.StatusServiceUnavailable // storage or database: the agent tries again later
	}
	httpError(w, code, err.Error())
}
