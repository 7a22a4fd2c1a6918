package stateapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"filippo.io/age"
	"filippo.io/age/armor"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema/sealing"
	"genesis.dev/fleet/tenants"
	"genesis.dev/fleet/tenants/yamledit"
)

// DefaultMaxBody caps request bodies.
const DefaultMaxBody = 1 << 20

// Config wires the API.
type Config struct {
	Writer *tenants.Writer
	// Store records audit entries and supplies observed status.
	Store *store.Store
	// Identities are the reconciler's age identities: a credential sealed by
	// the dashboard must open with one of them (when any are given).
	Identities []age.Identity
	// Pushed is called after a commit reached the branch (the watcher's
	// Trigger, so the reconciler acts at once).
	Pushed func()
	// Poll is how often Run refreshes the writer's view; 1m when 0.
	Poll    time.Duration
	MaxBody int64
	Logger  *slog.Logger
	// RecoveryPoints is every tenant's recovery point
	// ((*backup.Service).Points), shown as recovery_point in the tenant
	// reads (GET /v1/tenants, GET /v1/tenants/{id}); nil leaves it out.
	RecoveryPoints func() map[string]backup.Point
	// Availability is a tenant's measured availability
	// (reconciler/availability TenantReport), shown as availability in GET
	// /v1/tenants/{id}; nil leaves it out.
	Availability func(ctx context.Context, workspace string) (*api.TenantAvailability, error)
}

// API serves the tenant endpoints.
type API struct {
	cfg     Config
	log     *slog.Logger
	refresh chan struct{}
}

// New returns the API; Run keeps its view of the branch fresh.
func New(cfg Config) *API {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = DefaultMaxBody
	}
	if cfg.Poll <= 0 {
		cfg.Poll = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Pushed == nil {
		cfg.Pushed = func() {}
	}
	return &API{cfg: cfg, log: cfg.Logger.With("component", "stateapi"), refresh: make(chan struct{}, 1)}
}

// Refresh asks Run to fetch the branch now (the push webhook calls it).
func (a *API) Refresh() {
	select {
	case a.refresh <- struct{}{}:
	default:
	}
}

// Run fetches the branch at start, on Refresh and every Poll, until ctx ends.
func (a *API) Run(ctx context.Context) error {
	t := time.NewTicker(a.cfg.Poll)
	defer t.Stop()
	for {
		if _, err := a.cfg.Writer.Fetch(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("fetch state repository", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-a.refresh:
		}
	}
}

// Handlers are the API's routes by ServeMux pattern.
func (a *API) Handlers() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /v1/tenants":                   http.HandlerFunc(a.list),
		"GET /v1/tenants/{id}":              http.HandlerFunc(a.get),
		"POST /v1/tenants":                  http.HandlerFunc(a.create),
		"PUT /v1/tenants/{id}":              http.HandlerFunc(a.replace),
		"PATCH /v1/tenants/{id}":            http.HandlerFunc(a.patch),
		"DELETE /v1/tenants/{id}":           http.HandlerFunc(a.offboard),
		"POST /v1/tenants/{id}/credentials": http.HandlerFunc(a.credential),
	}
}

func (a *API) head(w http.ResponseWriter) (tenants.Snapshot, bool) {
	snap := a.cfg.Writer.Head()
	if snap.Commit == "" {
		api.WriteProblem(w, http.StatusServiceUnavailable, "state repository not read yet")
		return snap, false
	}
	return snap, true
}

func (a *API) status(ctx context.Context) map[string]*api.TenantStatus {
	out := map[string]*api.TenantStatus{}
	if a.cfg.Store == nil {
		return out
	}
	rows, err := a.cfg.Store.Fleet(ctx)
	if err != nil {
		a.log.Warn("read fleet status", "err", err)
		return out
	}
	for _, row := range rows {
		st := api.TenantStatus(row)
		out[row.Workspace] = &st
	}
	return out
}

// points is every tenant's recovery point (none when not wired).
func (a *API) points() map[string]backup.Point {
	if a.cfg.RecoveryPoints == nil {
		return nil
	}
	return a.cfg.RecoveryPoints()
}

func view(snap tenants.Snapshot, ts tenants.TenantState, st *api.TenantStatus) api.Tenant {
	t := api.Tenant{ID: ts.ID, File: ts.File, ETag: ts.Blob, Commit: snap.Commit, Valid: ts.Status == tenants.StatusValid, Errors: ts.Errors, Status: st}
	if t.Valid {
		t.Tenant = ts.Tenant
	}
	return t
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	snap, ok := a.head(w)
	if !ok {
		return
	}
	st := a.status(r.Context())
	pts := a.points()
	out := api.TenantList{Commit: snap.Commit, Tenants: []api.Tenant{}}
	for _, id := range snap.IDs() {
		t := view(snap, snap.Tenants[id], st[id])
		if p, ok := pts[id]; ok {
			t.RecoveryPoint = p.API()
		}
		out.Tenants = append(out.Tenants, t)
	}
	api.WriteJSON(w, http.StatusOK, out)
}

// current is the tenant id as it stands at the writer's head, with its
// file's text.
func (a *API) current(ctx context.Context, id string) (*api.Tenant, bool) {
	snap := a.cfg.Writer.Head()
	ts, ok := snap.Tenants[id]
	if !ok {
		return nil, false
	}
	t := view(snap, ts, a.status(ctx)[id])
	if p, ok := a.points()[id]; ok {
		t.RecoveryPoint = p.API()
	}
	if data, err := a.cfg.Writer.ReadBlob(ts.Blob); err == nil {
		t.YAML = string(data)
	}
	if a.cfg.Availability != nil {
		av, err := a.cfg.Availability(ctx, id)
		if err != nil {
			a.log.Warn("read availability", "workspace", id, "err", err)
		}
		t.Availability = av
	}
	return &t, true
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.head(w); !ok {
		return
	}
	t, ok := a.current(r.Context(), r.PathValue("id"))
	if !ok {
		api.WriteProblem(w, http.StatusNotFound, fmt.Sprintf("tenant %q not found", r.PathValue("id")))
		return
	}
	w.Header().Set("ETag", quote(t.ETag))
	api.WriteJSON(w, http.StatusOK, t)
}

// body reads a capped request body of one of the JSON content types.
func (a *API) body(w http.ResponseWriter, r *http.Request, types ...string) ([]byte, bool) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	okType := false
	for _, t := range types {
		okType = okType || ct == t
	}
	if !okType {
		api.WriteProblem(w, http.StatusUnsupportedMediaType, "Content-Type must be "+strings.Join(types, " or "))
		return nil, false
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		api.WriteProblem(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body is larger than %d bytes", a.cfg.MaxBody))
		return nil, false
	}
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, "read body: "+err.Error())
		return nil, false
	}
	return data, true
}

// ifMatch returns the version a write is made against; 428 without one.
func ifMatch(w http.ResponseWriter, r *http.Request) (string, bool) {
	v := strings.TrimSpace(r.Header.Get("If-Match"))
	v = strings.TrimPrefix(v, "W/")
	v = strings.Trim(v, `"`)
	if v == "" {
		api.WriteProblem(w, http.StatusPreconditionRequired, "If-Match is required: send the ETag of the tenant version this change is made against")
		return "", false
	}
	return v, true
}

// fieldName is the pattern every field name of a tenant file matches (the
// schema's camelCase names, TEMPLATE_*_UUID placeholders and template
// param names): a body with any other key, at any depth, is refused before
// anything else is done with it, so no caller-chosen byte (a newline, a
// control character, a quote) can reach a commit message or a log line as
// a field name.
var fieldName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,127}$`)

func checkFieldName(name string) error {
	if !fieldName.MatchString(name) {
		return errors.New("a field name is 1-128 characters of A-Z, a-z, 0-9 and _, starting with a letter")
	}
	return nil
}

// object decodes a tenant or patch body once (yamledit.ParseJSON: nesting,
// size, duplicate keys and field names bounded while reading, errors naming
// the field); the schema judges its fields afterwards.
func object(data []byte, what string) (*yamledit.Value, error) {
	v, err := yamledit.ParseJSON(data, checkFieldName)
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	if !v.Object() {
		return nil, errors.New("body must be " + what)
	}
	return v, nil
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	data, ok := a.body(w, r, "application/json")
	if !ok {
		return
	}
	v, err := object(data, "a JSON object")
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	id, _ := v.String("metadata", "id")
	if !validID(id) {
		api.WriteProblem(w, http.StatusBadRequest, fmt.Sprintf("metadata.id: %q must be 3-40 characters of a-z, 0-9 and -", id))
		return
	}
	a.write(w, r, "tenant.create", tenants.Change{ID: id, Create: true, Message: "onboard " + id,
		Edit: func([]byte) ([]byte, error) { return v.ReplaceIn(nil) }}, http.StatusCreated)
}

func (a *API) replace(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	data, ok := a.body(w, r, "application/json")
	if !ok {
		return
	}
	body, err := object(data, "a JSON object")
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	v, ok := ifMatch(w, r)
	if !ok {
		return
	}
	a.write(w, r, "tenant.replace", tenants.Change{ID: id, IfMatch: v, Message: "replace " + id,
		Edit: body.ReplaceIn}, http.StatusOK)
}

func (a *API) patch(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	data, ok := a.body(w, r, "application/merge-patch+json", "application/json")
	if !ok {
		return
	}
	p, err := object(data, "a JSON merge patch object")
	if err != nil {
		api.WriteProblem(w, http.StatusBadRequest, err.Error())
		return
	}
	fields := p.Fields()
	if len(fields) == 0 {
		api.WriteProblem(w, http.StatusBadRequest, "empty patch")
		return
	}
	v, ok := ifMatch(w, r)
	if !ok {
		return
	}
	a.write(w, r, "tenant.patch", tenants.Change{ID: id, IfMatch: v, Message: "patch " + id + ": " + quoteList(fields, maxListed),
		Edit: p.MergeInto}, http.StatusOK)
}

func (a *API) offboard(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v, ok := ifMatch(w, r)
	if !ok {
		return
	}
	a.write(w, r, "tenant.offboard", tenants.Change{ID: id, IfMatch: v, Message: "offboard " + id + ": state absent",
		Edit: func(cur []byte) ([]byte, error) {
			return yamledit.MergePatch(cur, []byte(`{"spec":{"state":"absent"}}`))
		}}, http.StatusOK)
}

// CredentialRequest is POST /v1/tenants/{id}/credentials: a credential
// sealed by the dashboard (sealed), or its plaintext data (a JSON object)
// that is sealed here to the fleet's recipients and never stored.
type CredentialRequest struct {
	Name   string          `json:"name"`
	Type   string          `json:"type"`
	Sealed string          `json:"sealed,omitempty"`
	Data   json.RawMessage `json:"data,omitempty"`
}

func (a *API) credential(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	data, ok := a.body(w, r, "application/json")
	if !ok {
		return
	}
	defer clear(data) // may hold plaintext
	var req CredentialRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		// A JSON error may quote the input: name the problem only.
		msg := "body must be a JSON object {name, type, sealed | data}"
		if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			msg = "unknown field " + f
		}
		api.WriteProblem(w, http.StatusBadRequest, msg)
		return
	}
	defer clear(req.Data)
	switch {
	case (req.Sealed == "") == (len(req.Data) == 0):
		api.WriteProblem(w, http.StatusBadRequest, "give exactly one of sealed and data")
		return
	case req.Sealed != "":
		if len(a.cfg.Identities) > 0 {
			plain, err := sealing.Decrypt(req.Sealed, a.cfg.Identities...)
			clear(plain)
			if err != nil {
				api.WriteProblem(w, http.StatusBadRequest, "sealed: does not open with the fleet's identity (seal it with genesis seal to the recipients in genesis.yaml)")
				return
			}
		} else if _, err := io.ReadAll(armor.NewReader(strings.NewReader(req.Sealed))); err != nil {
			api.WriteProblem(w, http.StatusBadRequest, "sealed: not an armored age file")
			return
		}
	default:
		if !json.Valid(req.Data) || bytes.TrimSpace(req.Data)[0] != '{' {
			api.WriteProblem(w, http.StatusBadRequest, "data: must be a JSON object of n8n credential data")
			return
		}
		fleet := a.cfg.Writer.Head().Fleet
		if fleet == nil {
			api.WriteProblem(w, http.StatusServiceUnavailable, "genesis.yaml is not readable: no recipients to seal to")
			return
		}
		sealed, err := seal(req.Data, fleet.Spec.Recipients)
		if err != nil {
			a.log.Error("seal credential", "workspace", id, "credential", req.Name, "err", err)
			api.WriteProblem(w, http.StatusInternalServerError, "sealing failed")
			return
		}
		req.Sealed = sealed
	}
	v, ok := ifMatch(w, r)
	if !ok {
		return
	}
	a.write(w, r, "tenant.credential", tenants.Change{ID: id, IfMatch: v, Message: fmt.Sprintf("set credential %q (%q) of %s", req.Name, req.Type, id),
		Edit: func(cur []byte) ([]byte, error) {
			// Ordered keys: name, type, sealed.
			ordered := fmt.Sprintf(`{"name":%s,"type":%s,"sealed":%s}`, jsonString(req.Name), jsonString(req.Type), jsonString(req.Sealed))
			return yamledit.UpsertItem(cur, []string{"spec", "credentials"}, "name", []byte(ordered))
		}}, http.StatusOK)
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// seal encrypts plain to every recipient as an armored age file, as
// genesis seal does.
func seal(plain []byte, recipients []string) (string, error) {
	var rs []age.Recipient
	for _, r := range recipients {
		rcp, err := age.ParseX25519Recipient(r)
		if err != nil {
			return "", fmt.Errorf("recipient %q: %w", r, err)
		}
		rs = append(rs, rcp)
	}
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	enc, err := age.Encrypt(aw, rs...)
	if err != nil {
		return "", err
	}
	if _, err := enc.Write(plain); err != nil {
		return "", err
	}
	if err := enc.Close(); err != nil {
		return "", err
	}
	if err := aw.Close(); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// write commits one change as the caller and answers.
func (a *API) write(w http.ResponseWriter, r *http.Request, action string, ch tenants.Change, okCode int) {
	caller, ok := auth.FromContext(r.Context())
	if !ok {
		api.WriteProblem(w, http.StatusUnauthorized, "no authenticated caller")
		return
	}
	if !validID(ch.ID) {
		api.WriteProblem(w, http.StatusNotFound, fmt.Sprintf("tenant %q not found", ch.ID))
		return
	}
	ch.Author = tenants.Identity{Name: caller.Name, Email: caller.Email}
	corr, ok := correlationID(r)
	if !ok {
		api.WriteProblem(w, http.StatusBadRequest, CorrelationHeader+": must be 1-64 characters of A-Z, a-z, 0-9 and . _ : -")
		return
	}
	w.Header().Set(CorrelationHeader, corr)
	ch.Message = tenants.WithCorrelation(ch.Message+"\n\nRequested through the Genesis API by "+caller.Name+".", corr)
	res, err := a.cfg.Writer.Write(r.Context(), ch)
	var ve *tenants.ValidationError
	var ee *tenants.EditError
	switch {
	case err == nil:
	case errors.As(err, &ve):
		api.Problem{Detail: "the change makes the state repository invalid", Errors: ve.Errors}.Write(w, http.StatusBadRequest)
		return
	case errors.As(err, &ee):
		api.WriteProblem(w, http.StatusBadRequest, ee.Error())
		return
	case errors.Is(err, tenants.ErrNotFound):
		api.WriteProblem(w, http.StatusNotFound, fmt.Sprintf("tenant %q not found", ch.ID))
		return
	case errors.Is(err, tenants.ErrPrecondition):
		a.conflict(w, r, http.StatusPreconditionFailed, ch.ID, err)
		return
	case errors.Is(err, tenants.ErrExists), errors.Is(err, tenants.ErrConflict):
		a.conflict(w, r, http.StatusConflict, ch.ID, err)
		return
	case errors.Is(err, tenants.ErrBusy):
		w.Header().Set("Retry-After", "1")
		api.WriteProblem(w, http.StatusServiceUnavailable, err.Error())
		return
	default:
		a.log.Error("write tenant", "workspace", ch.ID, "action", action, "err", err)
		api.WriteProblem(w, http.StatusServiceUnavailable, "state repository unavailable: "+err.Error())
		return
	}
	detail := map[string]any{"method": r.Method, "path": r.URL.Path, "branch": res.Branch, "file": res.File, "proposed": res.Proposed, "unchanged": res.Unchanged, "message": strings.SplitN(ch.Message, "\n", 2)[0]}
	if err := a.cfg.Store.Audit(context.WithoutCancel(r.Context()), caller.Name, action, ch.ID, detail, res.Commit); err != nil {
		// The commit is made and is itself the record; say so loudly.
		a.log.Error("audit tenant write", "workspace", ch.ID, "commit", res.Commit, "err", err)
	}
	a.log.Info("tenant write", "caller", caller.Name, "action", action, "workspace", ch.ID, "commit", res.Commit, "branch", res.Branch, "unchanged", res.Unchanged, "correlation_id", corr)
	if !res.Proposed && !res.Unchanged {
		a.cfg.Pushed()
	}
	out := api.WriteResult{Commit: res.Commit, Branch: res.Branch, File: res.File, Proposed: res.Proposed, Unchanged: res.Unchanged}
	if res.Proposed {
		okCode = http.StatusAccepted
	} else {
		out.ETag = res.Blob
		w.Header().Set("ETag", quote(res.Blob))
	}
	api.WriteJSON(w, okCode, out)
}

// CorrelationHeader carries a write's correlation id: the caller may send
// one (1-64 of A-Z a-z 0-9 . _ : -; any other value is refused with 400,
// as it would be written into the commit), else the API makes one; it is
// answered back, written into the commit as its Genesis-Correlation-Id
// trailer, and logged by the reconciler with the plan, actions, manifests
// and heartbeats that follow from the commit.
const CorrelationHeader = "X-Correlation-Id"

// correlationID is the caller's correlation id, or a new one; false when
// the caller sent one that is not valid.
func correlationID(r *http.Request) (string, bool) {
	if ids, sent := r.Header[http.CanonicalHeaderKey(CorrelationHeader)]; sent {
		return ids[0], len(ids) == 1 && tenants.ValidCorrelation(ids[0])
	}
	var b [6]byte
	rand.Read(b[:])
	return "api-" + hex.EncodeToString(b[:]), true
}

func (a *API) conflict(w http.ResponseWriter, r *http.Request, code int, id string, err error) {
	p := api.Problem{Detail: err.Error()}
	if cur, ok := a.current(r.Context(), id); ok {
		p.Current = cur
		w.Header().Set("ETag", quote(cur.ETag))
	}
	p.Write(w, code)
}

// maxListed is how many fields a patch's commit message names.
const maxListed = 20

// quoteList is fields for a commit message, each quoted (strconv.Quote), so
// no byte of a name can start a line of the message: the first n, then
// how many more.
func quoteList(fields []string, n int) string {
	q := make([]string, 0, min(len(fields), n)+1)
	for i, f := range fields {
		if i == n {
			q = append(q, fmt.Sprintf("and %d more", len(fields)-n))
			break
		}
		q = append(q, strconv.Quote(f))
	}
	return strings.Join(q, ", ")
}

func validID(id string) bool {
	if len(id) < 3 || len(id) > 40 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func quote(etag string) string { return `"` + etag + `"` }
