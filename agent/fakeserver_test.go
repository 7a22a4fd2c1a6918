package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"genesis.dev/fleet/schema"
)

// fakeReconciler serves the agent endpoints of the reconciler's HTTP API
// exactly as the contract says, from memory: one-time tokens bound to a
// workspace and droplet name, per-droplet credentials, per-droplet
// manifests with ETag/If-None-Match and ?wait= long-polls, heartbeats with
// replayed sequence numbers ignored.
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
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/enroll", f.enroll)
	mux.HandleFunc("GET /v1/manifest", f.manifest)
	mux.HandleFunc("POST /v1/heartbeat", f.heartbeat)
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
