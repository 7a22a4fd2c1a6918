// Package auth decides who may call the reconciler's HTTP API.
//
// Callers present a bearer token. The reconciler never stores tokens, only
// their SHA-256 hashes, each with a name (the caller's identity: it becomes
// the git author of the caller's changes and the actor of its audit_log
// entries) and scopes. A request's token is hashed and compared with every
// configured hash in constant time; an unknown or missing token is 401, a
// known token without the route's scope 403. Each token has its own token
// bucket: past it, 429 with Retry-After.
//
// Scopes: dashboard (tenant reads and writes, the fleet view), admin
// (everything dashboard may, plus overrides and retries; and metrics),
// metrics (GET /metrics when it requires a token), agent (the agent
// protocol's routes, which check the droplet's own credential instead: a
// configured token with only this scope opens nothing else). Which scope a
// route needs is one line of the reconciler's route table.
package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"genesis.dev/fleet/api"
)

// Scope is a permission a token holds.
type Scope string

// The scopes. Public marks routes anyone may call.
const (
	Public    Scope = ""
	Dashboard Scope = "dashboard"
	Admin     Scope = "admin"
	Agent     Scope = "agent"
	Metrics   Scope = "metrics"
)

func (s Scope) known() bool { return s == Dashboard || s == Admin || s == Agent || s == Metrics }

// Token is one line of the tokens file: a caller's name, the hex SHA-256 of
// its token, and its scopes.
type Token struct {
	Name   string  `json:"name"`
	Email  string  `json:"email,omitempty"`
	SHA256 string  `json:"sha256"`
	Scopes []Scope `json:"scopes"`
}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$`)

// tokenEmail is a plain address: it becomes the git author of the caller's
// commits, so no space, angle bracket or control character may reach a
// commit header.
var tokenEmail = regexp.MustCompile(`^[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,190}$`)

// ParseTokens reads a tokens file: one JSON object per line
// ({"name","sha256","scopes"} and an optional "email"); blank lines and
// lines starting with # are ignored. Unknown fields, bad hashes, unknown
// scopes and repeated names or hashes are errors naming the line and field.
func ParseTokens(data []byte) ([]Token, error) {
	var out []Token
	names, hashes := map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fail := func(format string, args ...any) error {
			return fmt.Errorf("tokens line %d: %s", n, fmt.Sprintf(format, args...))
		}
		var t Token
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&t); err != nil {
			return nil, fail("%s", strings.TrimPrefix(err.Error(), "json: "))
		}
		if dec.More() {
			return nil, fail("one JSON object per line")
		}
		switch {
		case !tokenName.MatchString(t.Name):
			return nil, fail("name: %q must be 1-64 characters of letters, digits and ._@-", t.Name)
		case names[t.Name]:
			return nil, fail("name: %q is used twice", t.Name)
		case t.Email != "" && !tokenEmail.MatchString(t.Email):
			return nil, fail("email: %q is not a plain address (letters, digits and ._%%+- before the @)", t.Email)
		}
		h, err := hex.DecodeString(t.SHA256)
		switch {
		case err != nil || len(h) != sha256.Size:
			return nil, fail("sha256: want 64 hex digits (genesis token new prints it)")
		case hashes[strings.ToLower(t.SHA256)]:
			return nil, fail("sha256: the same token is configured twice")
		}
		if len(t.Scopes) == 0 {
			return nil, fail("scopes: at least one of dashboard, admin, agent, metrics")
		}
		for i, s := range t.Scopes {
			if !s.known() {
				return nil, fail("scopes[%d]: unknown scope %q (dashboard, admin, agent, metrics)", i, s)
			}
		}
		t.SHA256 = strings.ToLower(t.SHA256)
		names[t.Name], hashes[t.SHA256] = true, true
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	return out, nil
}

// Hash is the hex SHA-256 of a token, as the tokens file holds it.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// NewToken returns a fresh random token.
func NewToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "gen_" + base64.RawURLEncoding.EncodeToString(b), nil
}

// Identity is an authenticated caller.
type Identity struct {
	Name, Email string
	Scopes      []Scope
}

// Has reports whether the caller may use a route needing s. Admin may do
// everything dashboard and metrics may; agent is never implied.
func (id Identity) Has(s Scope) bool {
	for _, have := range id.Scopes {
		if have == s || (have == Admin && (s == Dashboard || s == Metrics)) {
			return true
		}
	}
	return s == Public
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the caller Require authenticated.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// Config configures an Authenticator.
type Config struct {
	Tokens []Token
	// Rate is each token's sustained requests per second and Burst its
	// bucket size; defaults 20 and 40.
	Rate  float64
	Burst int
	// Now is the clock of the rate limiter; time.Now when nil.
	Now    func() time.Time
	Logger *slog.Logger
}

// Authenticator checks bearer tokens, scopes and rates.
type Authenticator struct {
	cfg    Config
	log    *slog.Logger
	hashes [][]byte

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// New returns an Authenticator for cfg.Tokens.
func New(cfg Config) *Authenticator {
	if cfg.Rate <= 0 {
		cfg.Rate = 20
	}
	if cfg.Burst <= 0 {
		cfg.Burst = 40
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	a := &Authenticator{cfg: cfg, log: cfg.Logger.With("component", "auth"), buckets: map[string]*bucket{}}
	for _, t := range cfg.Tokens {
		h, _ := hex.DecodeString(t.SHA256)
		a.hashes = append(a.hashes, h)
	}
	return a
}

// Errors of Authenticate.
var (
	ErrNoToken      = errors.New("missing bearer token (Authorization: Bearer <token>)")
	ErrUnknownToken = errors.New("unknown bearer token")
)

// Authenticate finds the caller of r.
func (a *Authenticator) Authenticate(r *http.Request) (Identity, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || strings.TrimSpace(tok) == "" {
		return Identity{}, ErrNoToken
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	found := -1
	for i, want := range a.hashes {
		// Compare with every hash: the time taken says nothing about which.
		if subtle.ConstantTimeCompare(sum[:], want) == 1 {
			found = i
		}
	}
	if found < 0 {
		return Identity{}, ErrUnknownToken
	}
	t := a.cfg.Tokens[found]
	email := t.Email
	if email == "" {
		email = t.Name + "@api.genesis.invalid"
	}
	return Identity{Name: t.Name, Email: email, Scopes: t.Scopes}, nil
}

// Allow spends one request of name's bucket; when it is empty it returns
// how long until the next request is allowed.
func (a *Authenticator) Allow(name string) (bool, time.Duration) {
	now := a.cfg.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.buckets[name]
	if !ok {
		b = &bucket{tokens: float64(a.cfg.Burst), last: now}
		a.buckets[name] = b
	}
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(float64(a.cfg.Burst), b.tokens+el*a.cfg.Rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / a.cfg.Rate * float64(time.Second))
}

// Require serves h only to callers holding scope, within their rate.
func (a *Authenticator) Require(scope Scope, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := a.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="genesis"`)
			api.WriteProblem(w, http.StatusUnauthorized, err.Error())
			return
		}
		if !id.Has(scope) {
			a.log.Warn("request refused: scope", "caller", id.Name, "need", string(scope), "method", r.Method, "path", r.URL.Path)
			api.WriteProblem(w, http.StatusForbidden, fmt.Sprintf("token %q lacks the %s scope", id.Name, scope))
			return
		}
		if ok, wait := a.Allow(id.Name); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			api.WriteProblem(w, http.StatusTooManyRequests, "rate limit exceeded for token "+strconv.Quote(id.Name))
			return
		}
		h.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
	})
}
