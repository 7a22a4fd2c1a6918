package console

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Cookie names. Every cookie is Path=/console, SameSite=Strict, HttpOnly
// (but the theme, which the page's script sets), and Secure unless the
// request came over plain http to a loopback address (secureCookie).
const (
	sessionCookie = "genesis_session"
	loginCookie   = "genesis_login"
	flashCookie   = "genesis_flash"
	themeCookie   = "genesis_theme"
	cookiePath    = "/console"
)

// DefaultSessionTTL is how long a session lasts.
const DefaultSessionTTL = 12 * time.Hour

// loginTTL bounds the login form's CSRF cookie.
const loginTTL = 30 * time.Minute

// DeriveKey makes the console's 32-byte key from secret material: the
// --console-key file, or else the tokens file (every replica reads the same
// one, so a session made on one replica opens on every other, and editing
// the tokens file ends every session).
func DeriveKey(material []byte) []byte {
	m := hmac.New(sha256.New, []byte("genesis console session key v1"))
	m.Write(material)
	return m.Sum(nil)
}

// session is what the session cookie carries, sealed with AES-GCM under
// the console's key: the caller's token (the console calls the API with
// it, and authenticates it again on every request, so a removed token ends
// its sessions at once), the expiry, and a random id the CSRF token is
// derived from.
type session struct {
	Token   string `json:"t,omitempty"`
	Expires int64  `json:"e"`
	ID      string `json:"n"`
}

// keys holds the console's derived keys.
type keys struct {
	aead cipher.AEAD
	mac  []byte
}

func newKeys(key []byte) (*keys, error) {
	if len(key) < 32 {
		return nil, errors.New("console key: want at least 32 bytes")
	}
	sub := func(label string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(label))
		return m.Sum(nil)
	}
	block, err := aes.NewCipher(sub("seal"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &keys{aead: aead, mac: sub("mac")}, nil
}

// seal encrypts v for a cookie.
func (k *keys) seal(purpose string, v any) (string, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	out := k.aead.Seal(nonce, nonce, data, []byte(purpose))
	return base64.RawURLEncoding.EncodeToString(out), nil
}

// open decrypts a sealed cookie value into v.
func (k *keys) open(purpose, s string, v any) error {
	if len(s) > 4096 {
		return errors.New("cookie too long")
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(raw) < k.aead.NonceSize() {
		return errors.New("cookie malformed")
	}
	data, err := k.aead.Open(nil, raw[:k.aead.NonceSize()], raw[k.aead.NonceSize():], []byte(purpose))
	if err != nil {
		return errors.New("cookie not sealed by this fleet's console key")
	}
	return json.Unmarshal(data, v)
}

// csrf is the synchronizer token of a session (or login form) id.
func (k *keys) csrf(id string) string {
	m := hmac.New(sha256.New, k.mac)
	m.Write([]byte("csrf:" + id))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// checkCSRF compares a form's token with the id's in constant time.
func (k *keys) checkCSRF(id, got string) bool {
	return id != "" && hmac.Equal([]byte(k.csrf(id)), []byte(got))
}

// randomID is 16 random bytes, base64url.
func randomID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// secureCookie says whether cookies set in answer to r are Secure: always,
// except for a plain-http request to a loopback address (tests and local
// demos on 127.0.0.1, where a browser would drop a Secure cookie sent over
// http). Behind a TLS-terminating proxy the request is plain http to a
// public name, so the cookie stays Secure.
func secureCookie(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip == nil || !ip.IsLoopback()
}

// setCookie sets a console cookie (maxAge < 0 deletes it).
func setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration, httpOnly bool) {
	c := &http.Cookie{Name: name, Value: value, Path: cookiePath, HttpOnly: httpOnly, Secure: secureCookie(r),
		SameSite: http.SameSiteStrictMode}
	if maxAge < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(maxAge.Seconds())
		c.Expires = time.Now().Add(maxAge)
	}
	http.SetCookie(w, c)
}

// sameOrigin checks a POST's Origin (or, without one, its Referer) names
// this server: scheme and host. Neither present passes (some browsers
// and privacy tools strip both); the CSRF token is checked regardless.
func sameOrigin(r *http.Request) bool {
	src := r.Header.Get("Origin")
	if src == "" {
		src = r.Header.Get("Referer")
	}
	if src == "" {
		return true
	}
	if src == "null" {
		return false
	}
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return false
	}
	if !strings.EqualFold(u.Host, r.Host) {
		return false
	}
	switch u.Scheme {
	case "https":
		return true
	case "http":
		// A TLS listener never sees http origins; behind a proxy that
		// ends TLS, the browser's origin is https.
		return r.TLS == nil
	}
	return false
}

// flash is the last action's result, shown once on the next page.
type flash struct {
	Kind    string `json:"k"` // ok or error
	Message string `json:"m"`
}
