package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/tenants"
)

//go:embed templates/*.html static/*
var assets embed.FS

// contentSecurityPolicy allows nothing from outside the binary.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

// Config wires the console.
type Config struct {
	Store *store.Store
	// API is the reconciler's own API handler (fleetapi.Handler): every
	// action is a request to it, served in-process with the session's
	// token, so scopes, validation and audit are the API's own.
	API http.Handler
	// Auth checks the tokens people log in with; nil (only with
	// --insecure-no-auth) makes everyone an admin, and every page says so.
	Auth *auth.Authenticator
	// Key seals session cookies (DeriveKey; at least 32 bytes). Replicas
	// must share it for a session to open on each of them.
	Key []byte
	// Desired is the state repository's snapshot (a tenant's declaration,
	// the fleet's accounts and prices). The overview's tier filter and
	// domain search read what the leader recorded in Postgres instead
	// (store.SetTenantFacts), so every replica filters alike.
	Desired func() (tenants.Snapshot, bool)
	// RecoveryPoints is every tenant's recovery point (nil: backups off).
	RecoveryPoints func() map[string]backup.Point
	// Gatherer is read for the accounts' headroom and rate budget: while
	// this replica leads (Leading), Run publishes them to Postgres every
	// FiguresEvery, and every replica's accounts page shows what was
	// published last, with its age.
	Gatherer prometheus.Gatherer
	// Leading reports whether this replica holds the leader lease (only
	// the leader calls DigitalOcean); nil: never.
	Leading func() bool
	// Replica names this replica in what it publishes.
	Replica string
	// FiguresEvery is how often the leader publishes its account figures
	// (DefaultFiguresEvery when 0).
	FiguresEvery time.Duration
	// SessionTTL is a session's life (DefaultSessionTTL when 0).
	SessionTTL time.Duration
	// MaxSubscribers bounds the live-update streams (DefaultMaxSubscribers).
	MaxSubscribers int
	// Heartbeat is the event streams' idle comment interval (HeartbeatEvery).
	Heartbeat  time.Duration
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Console serves /console/.
type Console struct {
	cfg   Config
	log   *slog.Logger
	keys  *keys
	hub   *Hub
	pages map[string]*template.Template
	mux   *http.ServeMux
	api   *http.Client

	countsMu  sync.Mutex
	countsAt  time.Time
	countsVal []store.StateCount
}

// New builds the console.
func New(cfg Config) (*Console, error) {
	if cfg.Store == nil || cfg.API == nil {
		return nil, errors.New("console: Store and API are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultSessionTTL
	}
	if cfg.MaxSubscribers <= 0 {
		cfg.MaxSubscribers = DefaultMaxSubscribers
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = HeartbeatEvery
	}
	if cfg.FiguresEvery <= 0 {
		cfg.FiguresEvery = DefaultFiguresEvery
	}
	if cfg.Leading == nil {
		cfg.Leading = func() bool { return false }
	}
	if cfg.Desired == nil {
		cfg.Desired = func() (tenants.Snapshot, bool) { return tenants.Snapshot{}, false }
	}
	k, err := newKeys(cfg.Key)
	if err != nil {
		return nil, err
	}
	c := &Console{cfg: cfg, log: cfg.Logger.With("component", "console"), keys: k}
	c.hub = newHub(cfg.Store, cfg.MaxSubscribers, cfg.Heartbeat, c.log, cfg.Registerer)
	c.api = &http.Client{Transport: inProcess{h: cfg.API}, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// parsePages parses each page template with the layout.
func parsePages() (map[string]*template.Template, error) {
	layout, err := template.New("layout.html").Funcs(funcs).ParseFS(assets, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.Must(layout.Clone()).ParseFS(assets, n)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", n, err)
		}
		out[base] = t
	}
	return out, nil
}

// Run runs the live-update hub, and the publishing of the leader's
// account figures, until ctx ends.
func (c *Console) Run(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.publishFigures(ctx)
	}()
	defer func() { <-done }()
	return c.hub.Run(ctx)
}

// Handler serves every /console/ path.
func (c *Console) Handler() http.Handler { return c.mux }

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	files := http.StripPrefix("/console/static/", http.FileServerFS(static))
	m.Handle("GET /console/static/", headers(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		files.ServeHTTP(w, r)
	})))
	m.Handle("GET /console/login", headers(http.HandlerFunc(c.loginPage)))
	m.Handle("POST /console/login", headers(http.HandlerFunc(c.login)))
	m.Handle("POST /console/logout", headers(c.authed(c.logout, true)))
	m.Handle("POST /console/theme", headers(http.HandlerFunc(c.theme)))
	m.Handle("GET /console/{$}", headers(c.authed(c.overview, false)))
	m.Handle("GET /console", http.RedirectHandler("/console/", http.StatusMovedPermanently))
	m.Handle("GET /console/tenants/{id}", headers(c.authed(c.tenant, false)))
	m.Handle("POST /console/tenants/{id}/confirm", headers(c.authed(c.confirm, true)))
	m.Handle("POST /console/tenants/{id}/act", headers(c.authed(c.act, true)))
	m.Handle("GET /console/rollouts", headers(c.authed(c.rollouts, false)))
	m.Handle("POST /console/rollouts/{id}/confirm", headers(c.authed(c.rolloutConfirm, true)))
	m.Handle("POST /console/rollouts/{id}/act", headers(c.authed(c.rolloutAct, true)))
	m.Handle("GET /console/accounts", headers(c.authed(c.accounts, false)))
	m.Handle("GET /console/events", c.authed(func(w http.ResponseWriter, r *http.Request, _ *viewer) {
		c.hub.ServeHTTP(w, r)
	}, false))
	m.Handle("/console/", headers(c.authed(func(w http.ResponseWriter, r *http.Request, v *viewer) {
		c.fail(w, r, v, http.StatusNotFound, "no such page: "+r.URL.Path)
	}, false)))
	c.mux = m
}

// headers sets the security headers of every console answer.
func headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("X-Frame-Options", "DENY")
		if !strings.HasPrefix(r.URL.Path, "/console/static/") {
			hd.Set("Cache-Control", "no-store")
		}
		h.ServeHTTP(w, r)
	})
}

// viewer is the caller of a console page.
type viewer struct {
	ID       auth.Identity
	token    string
	csrf     string
	Insecure bool
	Theme    string
	Flash    *flash
}

// Name is the viewer's token name.
func (v *viewer) Name() string { return v.ID.Name }

// scopes lists the viewer's scopes for data-scopes (admin implies
// dashboard, as auth.Identity.Has has it).
func (v *viewer) Scopes() string {
	var out []string
	for _, s := range []auth.Scope{auth.Admin, auth.Dashboard} {
		if v.ID.Has(s) {
			out = append(out, string(s))
		}
	}
	return strings.Join(out, " ")
}

// client is the API as this viewer calls it.
func (c *Console) client(v *viewer) *client.Client {
	return client.New("http://console.invalid", v.token, c.api)
}

// authed serves h to a logged-in viewer with the dashboard scope; post
// routes also need a same-origin request carrying the session's CSRF
// token. Anyone else is sent to the login page (an event stream gets 401).
func (c *Console) authed(h func(http.ResponseWriter, *http.Request, *viewer), post bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, ok := c.session(r)
		if !ok {
			setCookie(w, r, sessionCookie, "", -1, true)
			if r.Method != http.MethodGet || r.URL.Path == "/console/events" {
				http.Error(w, "log in at /console/login", http.StatusUnauthorized)
				return
			}
			http.Redirect(w, r, "/console/login", http.StatusSeeOther)
			return
		}
		if post {
			if !sameOrigin(r) {
				c.fail(w, r, v, http.StatusForbidden, "cross-origin request refused (Origin/Referer is not this console)")
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
			if err := r.ParseForm(); err != nil {
				c.fail(w, r, v, http.StatusBadRequest, "form: "+err.Error())
				return
			}
			if !c.keys.checkCSRF(v.csrf, r.PostForm.Get("csrf")) {
				c.fail(w, r, v, http.StatusForbidden, "csrf: missing or wrong token (reload the page and try again)")
				return
			}
		}
		if ck, err := r.Cookie(flashCookie); err == nil && r.Method == http.MethodGet {
			var f flash
			if c.keys.open(flashCookie, ck.Value, &f) == nil && (f.Kind == "ok" || f.Kind == "error") {
				v.Flash = &f
			}
			setCookie(w, r, flashCookie, "", -1, true)
		}
		h(w, r, v)
	})
}

// session opens the request's session and authenticates its token again.
func (c *Console) session(r *http.Request) (*viewer, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil {
		return nil, false
	}
	var s session
	if err := c.keys.open(sessionCookie, ck.Value, &s); err != nil {
		return nil, false
	}
	if c.cfg.Now().Unix() >= s.Expires {
		return nil, false
	}
	v := &viewer{token: s.Token, Theme: themeOf(r)}
	v.csrf = s.ID
	if c.cfg.Auth == nil {
		v.Insecure = true
		v.ID = auth.Identity{Name: "insecure", Scopes: []auth.Scope{auth.Admin}}
		return v, true
	}
	id, err := c.authenticate(s.Token)
	if err != nil || !id.Has(auth.Dashboard) {
		return nil, false
	}
	v.ID = id
	return v, true
}

// authenticate checks a token as the API would.
func (c *Console) authenticate(token string) (auth.Identity, error) {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	return c.cfg.Auth.Authenticate(req)
}

// themeOf is the genesis_theme cookie: dark, light or "" (the system's).
func themeOf(r *http.Request) string {
	if c, err := r.Cookie(themeCookie); err == nil && (c.Value == "dark" || c.Value == "light") {
		return c.Value
	}
	return ""
}

// page is what every template gets.
type page struct {
	Title string
	V     *viewer
	CSRF  string
	Data  any
}

// render writes a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name, title string, v *viewer, data any) {
	t, ok := c.pages[name]
	if !ok {
		http.Error(w, "no template "+name, http.StatusInternalServerError)
		return
	}
	p := page{Title: title, V: v, Data: data}
	if v != nil {
		p.CSRF = c.keys.csrf(v.csrf)
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "layout", p); err != nil {
		c.log.Error("render failed", "page", name, "err", err)
		http.Error(w, "render: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// fail renders an error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, v *viewer, status int, msg string) {
	if v == nil {
		http.Error(w, msg, status)
		return
	}
	v.Flash = &flash{Kind: "error", Message: fmt.Sprintf("%d %s: %s", status, http.StatusText(status), msg)}
	c.render(w, r, status, "error", http.StatusText(status), v, msg)
}

// setFlash remembers the result of an action for the next page.
func (c *Console) setFlash(w http.ResponseWriter, r *http.Request, kind, msg string) {
	if len(msg) > 1000 {
		msg = msg[:1000] + "…"
	}
	val, err := c.keys.seal(flashCookie, flash{Kind: kind, Message: msg})
	if err == nil {
		setCookie(w, r, flashCookie, val, time.Minute, true)
	}
}

// inProcess serves API requests with the API's own handler, in this
// process: no socket, the same middleware as a remote caller gets.
type inProcess struct{ h http.Handler }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	req = req.Clone(req.Context())
	req.RemoteAddr = "127.0.0.1:0"
	req.RequestURI = req.URL.RequestURI()
	if req.Body == nil {
		req.Body = http.NoBody
	}
	t.h.ServeHTTP(rec, req)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}
