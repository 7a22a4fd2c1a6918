package agent

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"genesis.dev/fleet/internal/objtest"
	"genesis.dev/fleet/schema"
)

// fakeReconciler serves the agent endpoints of the reconciler's HTTP API
// exactly as the contract says, from memory: one-time tokens bound to a
// workspace and droplet name, per-droplet credentials, per-droplet
// manifests with ETag/If-None-Match and ?wait= long-polls, heartbeats with
// replayed sequence numbers ignored; and the backup routes, presigning
// through an objtest store the way reconciler/backup.Service does.
type fakeReconciler struct {
	t   testing.TB
	srv *httptest.Server

	mu         sync.Mutex
	tokens     map[string]*fakeToken
	creds      map[string]fakeAgent // credential → agent
	enrolls    []schema.EnrollRequest
	notYet     int               // enrollments still to answer 503 "not yet"
	manifests  map[string][]byte // droplet id → envelope
	changed    chan struct{}     // closed and replaced on every publish
	heartbeats []schema.Heartbeat
	lastSeq    map[string]int64
	dateOffset time.Duration
	requests   map[string]int // "GET /v1/manifest 304" → count

	objects   *objtest.Store         // nil: backups are off (503)
	backups   map[string]*fakeBackup // by id
	restores  []fakeRestore
	fetchCode int // non-zero: GET /v1/agent/backups/{id} answers it
}

type fakeToken struct {
	workspace, dropletName string
	used                   bool
}

type fakeAgent struct {
	workspace, droplet string
	recipient          string
}

func newFakeReconciler(t testing.TB) *fakeReconciler {
	f := &fakeReconciler{
		t:         t,
		tokens:    map[string]*fakeToken{},
		creds:     map[string]fakeAgent{},
		manifests: map[string][]byte{},
		changed:   make(chan struct{}),
		lastSeq:   map[string]int64{},
		requests:  map[string]int{},
		backups:   map[string]*fakeBackup{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll", f.enroll)
	mux.HandleFunc("GET /v1/manifest", f.manifest)
	mux.HandleFunc("POST /v1/heartbeat", f.heartbeat)
	mux.HandleFunc("POST /v1/agent/backups", f.backupStart)
	mux.HandleFunc("POST /v1/agent/backups/{id}", f.backupFinish)
	mux.HandleFunc("GET /v1/agent/backups/{id}", f.backupFetch)
	mux.HandleFunc("POST /v1/agent/backups/{id}/restored", f.backupRestored)
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeReconciler) URL() string { return f.srv.URL }

// token issues a one-time token for (workspace, droplet name).
func (f *fakeReconciler) token(workspace, dropletName string) string {
	b := make([]byte, 32)
	rand.Read(b)
	tok := hex.EncodeToString(b)
	f.mu.Lock()
	f.tokens[tok] = &fakeToken{workspace: workspace, dropletName: dropletName}
	f.mu.Unlock()
	return tok
}

// publish makes env the droplet's manifest and wakes long-polls.
func (f *fakeReconciler) publish(droplet string, env []byte) {
	f.mu.Lock()
	f.manifests[droplet] = env
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeReconciler) setDateOffset(d time.Duration) {
	f.mu.Lock()
	f.dateOffset = d
	f.mu.Unlock()
}

// countPrefix is how many requests were answered whose key starts with
// prefix.
func (f *fakeReconciler) countPrefix(prefix string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for k, c := range f.requests {
		if strings.HasPrefix(k, prefix) {
			n += c
		}
	}
	return n
}

func (f *fakeReconciler) count(key string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[key]
}

// setNotYet makes the next n enrollments answer 503 "not yet", as the
// reconciler does before it recorded the droplet.
func (f *fakeReconciler) setNotYet(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notYet = n
}

func (f *fakeReconciler) enrollments() []schema.EnrollRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]schema.EnrollRequest(nil), f.enrolls...)
}

func (f *fakeReconciler) beats() []schema.Heartbeat {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]schema.Heartbeat(nil), f.heartbeats...)
}

// waitBeat waits for a stored heartbeat that satisfies ok and returns it.
func (f *fakeReconciler) waitBeat(t testing.TB, what string, ok func(schema.Heartbeat) bool) schema.Heartbeat {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, hb := range f.beats() {
			if ok(hb) {
				return hb
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no heartbeat with %s; got %d heartbeats, last %+v", what, len(f.beats()), last(f.beats()))
	return schema.Heartbeat{}
}

func last(hbs []schema.Heartbeat) schema.Heartbeat {
	if len(hbs) == 0 {
		return schema.Heartbeat{}
	}
	return hbs[len(hbs)-1]
}

func (f *fakeReconciler) date(w http.ResponseWriter, r *http.Request, code int) {
	f.mu.Lock()
	off := f.dateOffset
	f.requests[r.Method+" "+r.URL.Path+" "+strconv.Itoa(code)]++
	f.mu.Unlock()
	w.Header().Set("Date", time.Now().Add(off).UTC().Format(http.TimeFormat))
}

func (f *fakeReconciler) fail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	f.date(w, r, code)
	http.Error(w, msg, code)
}

func (f *fakeReconciler) enroll(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	var req schema.EnrollRequest
	if err != nil || schema.DecodeStrict(body, &req) != nil || req.DropletID == "" || req.AgeRecipient == "" || req.SigningKey == "" {
		f.fail(w, r, http.StatusBadRequest, "malformed enrollment")
		return
	}
	f.mu.Lock()
	if f.notYet > 0 {
		f.notYet--
		f.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		f.fail(w, r, http.StatusServiceUnavailable, "the droplet is not recorded yet: retry later")
		return
	}
	tok := f.tokens[req.Token]
	switch {
	case tok == nil || tok.used:
		f.mu.Unlock()
		f.fail(w, r, http.StatusUnauthorized, "token refused")
		return
	case tok.workspace != req.Workspace || tok.dropletName != req.DropletName:
		f.mu.Unlock()
		f.fail(w, r, http.StatusForbidden, "token is for another droplet")
		return
	}
	tok.used = true
	b := make([]byte, 32)
	rand.Read(b)
	cred := hex.EncodeToString(b)
	f.creds[cred] = fakeAgent{workspace: req.Workspace, droplet: req.DropletID, recipient: req.AgeRecipient}
	f.enrolls = append(f.enrolls, req)
	f.mu.Unlock()
	f.date(w, r, http.StatusOK)
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte(`{"workspace":"` + req.Workspace + `","droplet_id":"` + req.DropletID + `","credential":"` + cred + `"}`))
}

func (f *fakeReconciler) auth(r *http.Request) (fakeAgent, bool) {
	cred, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return fakeAgent{}, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.creds[cred]
	return a, ok
}

func (f *fakeReconciler) manifest(w http.ResponseWriter, r *http.Request) {
	a, ok := f.auth(r)
	if !ok {
		f.fail(w, r, http.StatusUnauthorized, "unknown credential")
		return
	}
	var wait time.Duration
	if s := r.URL.Query().Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 || d > time.Minute {
			f.fail(w, r, http.StatusBadRequest, "bad wait")
			return
		}
		wait = d
	}
	inm := r.Header.Get("If-None-Match")
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		f.mu.Lock()
		env, have := f.manifests[a.droplet]
		changed := f.changed
		f.mu.Unlock()
		etag := `"` + sha(env) + `"`
		if have && etag != inm {
			f.date(w, r, http.StatusOK)
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Type", "application/json")
			w.Write(env)
			return
		}
		select {
		case <-changed:
			continue
		case <-timeout.C:
		case <-r.Context().Done():
			return
		}
		if have {
			f.date(w, r, http.StatusNotModified)
			w.Header().Set("ETag", etag)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		f.fail(w, r, http.StatusNotFound, "no manifest yet")
		return
	}
}

func (f *fakeReconciler) heartbeat(w http.ResponseWriter, r *http.Request) {
	a, ok := f.auth(r)
	if !ok {
		f.fail(w, r, http.StatusUnauthorized, "unknown credential")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, schema.MaxHeartbeatSize+1))
	var hb schema.Heartbeat
	if err != nil || len(body) > schema.MaxHeartbeatSize {
		f.fail(w, r, http.StatusBadRequest, "heartbeat too large")
		return
	}
	if err := schema.DecodeStrict(body, &hb); err != nil {
		f.t.Errorf("heartbeat does not decode strictly: %v", err)
		f.fail(w, r, http.StatusBadRequest, "malformed heartbeat")
		return
	}
	if hb.Droplet != a.droplet || hb.Workspace != a.workspace {
		f.fail(w, r, http.StatusForbidden, "another droplet's heartbeat")
		return
	}
	f.mu.Lock()
	if hb.Seq > f.lastSeq[hb.Droplet] {
		f.lastSeq[hb.Droplet] = hb.Seq
		f.heartbeats = append(f.heartbeats, hb)
	} else {
		f.t.Errorf("replayed heartbeat seq %d (last %d)", hb.Seq, f.lastSeq[hb.Droplet])
	}
	f.mu.Unlock()
	f.date(w, r, http.StatusAccepted)
	w.WriteHeader(http.StatusAccepted)
}

var errApply = errors.New("n8n is not answering")

// revoke drops the credentials of droplet, as the reconciler does when the
// droplet is destroyed or replaced.
func (f *fakeReconciler) revoke(droplet string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c, a := range f.creds {
		if a.droplet == droplet {
			delete(f.creds, c)
		}
	}
}

// unuse makes a used token usable again (a reconciler that accepts a
// retried enrollment).
func (f *fakeReconciler) unuse(token string) {
	f.mu.Lock()
	f.tokens[token].used = false
	f.mu.Unlock()
}

// fakeBackup is one backup as the reconciler records it.
type fakeBackup struct {
	ID, Workspace, Droplet string
	Key                    string // the object's key in storage
	State                  string // "pending", "good" or "failed"
	Size                   int64
	SHA256                 string
	Error                  string
	Started, Finished      time.Time
}

// fakeRestore is a droplet's report of a restore (Error "": restored).
type fakeRestore struct {
	Workspace, Droplet, ID, Error string
}

// errNoObject is what the fake's objtest store wraps for a missing object.
var errNoObject = errors.New("no such object")

// useObjects turns the backup routes on, over objects.
func (f *fakeReconciler) useObjects(objects *objtest.Store) {
	f.mu.Lock()
	f.objects = objects
	f.mu.Unlock()
}

// addBackup records a backup (one taken earlier, maybe by another
// droplet).
func (f *fakeReconciler) addBackup(b fakeBackup) {
	f.mu.Lock()
	f.backups[b.ID] = &b
	f.mu.Unlock()
}

// setFetchCode makes GET /v1/agent/backups/{id} answer code (0: as the
// reconciler does).
func (f *fakeReconciler) setFetchCode(code int) {
	f.mu.Lock()
	f.fetchCode = code
	f.mu.Unlock()
}

// backupList is the recorded backups in the order they started.
func (f *fakeReconciler) backupList() []fakeBackup {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]fakeBackup, 0, len(f.backups))
	for _, b := range f.backups {
		out = append(out, *b)
	}
	slices.SortFunc(out, func(a, b fakeBackup) int { return a.Started.Compare(b.Started) })
	return out
}

func (f *fakeReconciler) restoreList() []fakeRestore {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeRestore(nil), f.restores...)
}

// waitBackups waits until the recorded backups satisfy ok and returns them.
func (f *fakeReconciler) waitBackups(t testing.TB, what string, timeout time.Duration, ok func([]fakeBackup) bool) []fakeBackup {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if bs := f.backupList(); ok(bs) {
			return bs
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s; backups %+v", what, f.backupList())
	return nil
}

// backupsIn returns those of bs in state.
func backupsIn(bs []fakeBackup, state string) []fakeBackup {
	var out []fakeBackup
	for _, b := range bs {
		if b.State == state {
			out = append(out, b)
		}
	}
	return out
}

// backupAgent authenticates a backup call and checks that backups are on
// (false: answered).
func (f *fakeReconciler) backupAgent(w http.ResponseWriter, r *http.Request) (fakeAgent, *objtest.Store, bool) {
	a, ok := f.auth(r)
	if !ok {
		f.fail(w, r, http.StatusUnauthorized, "bad credential")
		return fakeAgent{}, nil, false
	}
	f.mu.Lock()
	objects := f.objects
	f.mu.Unlock()
	if objects == nil {
		f.fail(w, r, http.StatusServiceUnavailable, "backups are not configured")
		return fakeAgent{}, nil, false
	}
	return a, objects, true
}

var fakeSHA256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// backupBody decodes a strict BackupFinish body (false: answered).
func (f *fakeReconciler) backupBody(w http.ResponseWriter, r *http.Request) (schema.BackupFinish, bool) {
	var bf schema.BackupFinish
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<10))
	if err != nil || schema.DecodeStrict(body, &bf) != nil {
		f.fail(w, r, http.StatusBadRequest, "malformed body")
		return bf, false
	}
	return bf, true
}

func (f *fakeReconciler) writeJSON(w http.ResponseWriter, r *http.Request, code int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		f.t.Errorf("encode %T: %v", v, err)
	}
	f.date(w, r, code)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(data)
}

// backupStart records a pending backup and presigns its upload; a pending
// backup of the workspace makes it busy (429), as the reconciler's store
// does.
func (f *fakeReconciler) backupStart(w http.ResponseWriter, r *http.Request) {
	a, objects, ok := f.backupAgent(w, r)
	if !ok {
		return
	}
	now := time.Now().UTC()
	rnd := make([]byte, 4)
	rand.Read(rnd)
	id := "b-" + now.Format("20060102T150405Z") + "-" + hex.EncodeToString(rnd)
	key := a.workspace + "/" + id + ".age"
	f.mu.Lock()
	for _, b := range f.backups {
		if b.Workspace == a.workspace && b.State == "pending" {
			f.mu.Unlock()
			w.Header().Set("Retry-After", "600")
			f.fail(w, r, http.StatusTooManyRequests, "a backup is in progress")
			return
		}
	}
	f.backups[id] = &fakeBackup{ID: id, Workspace: a.workspace, Droplet: a.droplet, Key: key, State: "pending", Started: time.Now()}
	f.mu.Unlock()
	url, _ := objects.PresignPut(r.Context(), key, time.Hour)
	f.writeJSON(w, r, http.StatusCreated, schema.BackupStart{ID: id, URL: url, Expires: now.Add(time.Hour)})
}

// backupFinish records how a pending backup ended: good only when storage
// holds an object of the reported size.
func (f *fakeReconciler) backupFinish(w http.ResponseWriter, r *http.Request) {
	a, objects, ok := f.backupAgent(w, r)
	if !ok {
		return
	}
	bf, ok := f.backupBody(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	b := f.backups[r.PathValue("id")]
	var key string
	if b != nil && b.Workspace == a.workspace && b.State == "pending" {
		key = b.Key
	}
	f.mu.Unlock()
	if key == "" {
		f.fail(w, r, http.StatusNotFound, "no such pending backup")
		return
	}
	finish := func(state string, size int64, sum, msg string) {
		f.mu.Lock()
		b.State, b.Size, b.SHA256, b.Error, b.Finished = state, size, sum, msg, time.Now()
		f.mu.Unlock()
	}
	if bf.Error != "" {
		finish("failed", 0, "", bf.Error)
		f.date(w, r, http.StatusNoContent)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if bf.Size <= 0 || !fakeSHA256RE.MatchString(bf.SHA256) {
		f.fail(w, r, http.StatusBadRequest, "a success needs size > 0 and a hex sha256")
		return
	}
	size, err := objects.Stat(r.Context(), key)
	switch {
	case errors.Is(err, errNoObject):
		finish("failed", 0, "", "no object "+key)
		f.fail(w, r, http.StatusConflict, "the stored object does not match the report")
		return
	case err != nil:
		f.fail(w, r, http.StatusServiceUnavailable, "check object: "+err.Error())
		return
	case size != bf.Size:
		finish("failed", 0, "", "object size differs")
		f.fail(w, r, http.StatusConflict, "the stored object does not match the report")
		return
	}
	finish("good", bf.Size, bf.SHA256, "")
	f.date(w, r, http.StatusNoContent)
	w.WriteHeader(http.StatusNoContent)
}

// backupFetch presigns a download of one of the workspace's good backups.
func (f *fakeReconciler) backupFetch(w http.ResponseWriter, r *http.Request) {
	a, objects, ok := f.backupAgent(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	code := f.fetchCode
	var bk fakeBackup
	if b := f.backups[r.PathValue("id")]; b != nil && b.Workspace == a.workspace && b.State == "good" {
		bk = *b
	}
	f.mu.Unlock()
	switch {
	case code != 0:
		f.fail(w, r, code, "injected failure")
		return
	case bk.ID == "":
		f.fail(w, r, http.StatusNotFound, "no such backup")
		return
	}
	url, _ := objects.PresignGet(r.Context(), bk.Key, time.Hour)
	f.writeJSON(w, r, http.StatusOK, schema.BackupFetch{ID: bk.ID, URL: url, SHA256: bk.SHA256, Size: bk.Size, Expires: time.Now().UTC().Add(time.Hour)})
}

// backupRestored records a droplet's restore report.
func (f *fakeReconciler) backupRestored(w http.ResponseWriter, r *http.Request) {
	a, _, ok := f.backupAgent(w, r)
	if !ok {
		return
	}
	bf, ok := f.backupBody(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	f.restores = append(f.restores, fakeRestore{Workspace: a.workspace, Droplet: a.droplet, ID: r.PathValue("id"), Error: bf.Error})
	f.mu.Unlock()
	f.date(w, r, http.StatusNoContent)
	w.WriteHeader(http.StatusNoContent)
}
