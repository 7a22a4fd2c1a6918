package tenants

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
)

// RedactURL returns repo as it may be shown in a log line, an error or a
// metric: without the user name and password of a URL
// ("https://TOKEN@host/org/state.git" and "https://user:TOKEN@host/..." both
// become "https://host/org/state.git") and without the user of an scp-like
// address ("git@host:org/state.git" becomes "host:org/state.git"). A URL
// that does not parse loses everything up to its last "@" after the scheme,
// so no user information survives; a local path is returned as it is.
func RedactURL(repo string) string {
	if i := strings.Index(repo, "://"); i >= 0 {
		if u, err := url.Parse(repo); err == nil {
			u.User = nil
			return u.String()
		}
		rest := repo[i+3:]
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = rest[at+1:]
		}
		return repo[:i+3] + rest
	}
	// scp-like: [user[:password]@]host:path. A path holding "@" keeps it
	// when a "/" comes first.
	if at := strings.LastIndex(repo, "@"); at >= 0 && strings.Contains(repo[at:], ":") && !strings.ContainsAny(repo[:at], `/\`) {
		return repo[at+1:]
	}
	return repo
}

// remote is a configured repository address split into what may be stored
// and shown, and the credential that must not be.
type remote struct {
	// url is written into the clone's config as origin: an http(s) URL
	// without user information, or an ssh URL without its password (the user
	// names the account; go-git ignores a password in an ssh URL).
	url string
	// shown is url redacted for logs and errors (RedactURL).
	shown string
	// auth carries the credential; nil for none.
	auth transport.AuthMethod
	// secrets are strings scrub removes from any text (the password, a user
	// name that is a token, and their escaped forms).
	secrets []string
}

// minSecret is the shortest credential scrub replaces in free text; shorter
// ones would mangle every message and are still removed from URLs.
const minSecret = 4

// newRemote splits repo's user information off into an auth method. For
// http(s) the user name and password become HTTP basic auth, exactly as
// go-git would have sent them from the URL: a token given as the user name
// alone ("https://TOKEN@host/...", which GitHub accepts) is sent as
// BasicAuth{Username: TOKEN, Password: ""}. auth, when not nil, is the
// credential given apart from the URL; giving both is refused.
func newRemote(repo string, auth transport.AuthMethod) (remote, error) {
	r := remote{url: repo, shown: RedactURL(repo), auth: auth}
	if ba, ok := auth.(*githttp.BasicAuth); ok {
		r.addSecrets(ba.Username, ba.Password, ba.Password == "")
	}
	if !strings.Contains(repo, "://") {
		if r.shown != repo && strings.Contains(repo[:strings.LastIndex(repo, "@")], ":") {
			return r, fmt.Errorf("repository %s: a password in an scp-like address is not supported; use an ssh key or an https URL", r.shown)
		}
		return r, nil
	}
	u, err := url.Parse(repo)
	if err != nil {
		return r, fmt.Errorf("repository %s: not a valid URL", r.shown)
	}
	if u.User == nil {
		return r, nil
	}
	user := u.User.Username()
	pass, hasPass := u.User.Password()
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
		if auth != nil {
			return r, fmt.Errorf("repository %s: credentials both in the URL and given apart (GENESIS_GIT_TOKEN); give one", r.shown)
		}
		r.addSecrets(user, pass, !hasPass || pass == "")
		u.User = nil
		r.auth = &githttp.BasicAuth{Username: user, Password: pass}
	case "ssh", "git+ssh", "ssh+git":
		if !hasPass {
			return r, nil // ssh://git@host/...: the user is an account name
		}
		r.addSecrets(pass, "", false)
		u.User = url.User(user)
	default:
		r.addSecrets(user, pass, true)
		u.User = nil
	}
	r.url = u.String()
	return r, nil
}

// addSecrets records a password, and a user name too when it is the
// credential itself (no password).
func (r *remote) addSecrets(user, pass string, userIsSecret bool) {
	add := func(s string) {
		for _, v := range []string{s, url.PathEscape(s), url.QueryEscape(s)} {
			if len(v) >= minSecret && !slices.Contains(r.secrets, v) {
				r.secrets = append(r.secrets, v)
			}
		}
	}
	if pass != "" {
		add(pass)
	}
	if userIsSecret && user != "" {
		add(user)
	}
}

// scrub removes every credential from s: user information of any URL in it,
// and the remote's secrets wherever they appear.
func (r *remote) scrub(s string) string {
	for _, v := range r.secrets {
		s = strings.ReplaceAll(s, v, "REDACTED")
	}
	return scrubURLs(s)
}

// scrubURLs drops the user information of every "scheme://user@host" in s.
func scrubURLs(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i+3])
		s = s[i+3:]
		end := strings.IndexAny(s, "/?# \t\n\"'`<>")
		if end < 0 {
			end = len(s)
		}
		if at := strings.LastIndex(s[:end], "@"); at >= 0 {
			s = s[at+1:]
		}
	}
}

// RedactedError is an error whose message had the repository's credentials
// removed. errors.Is and errors.As still see the error it wraps (for its
// kind); print only its own message.
type RedactedError struct {
	msg string
	err error
}

func (e *RedactedError) Error() string { return e.msg }

// Unwrap returns the original error, for errors.Is and errors.As.
func (e *RedactedError) Unwrap() error { return e.err }

// redact returns err with its message scrubbed (nil for nil).
func (r *remote) redact(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(*RedactedError); ok {
		return err
	}
	return &RedactedError{msg: r.scrub(err.Error()), err: err}
}

// ClonePath returns where the bare clone of repo lives under cacheDir,
// prefix+hash+".git", the hash taken over repo without its credentials so
// the folder's name does not depend on them. A clone an older version made
// under the hash of the full URL (credentials included) is moved there (its
// origin rewritten), or scrubbed in place when both exist, so no credential
// stays on disk.
func ClonePath(cacheDir, prefix, repo string) (string, error) {
	r, err := newRemote(repo, nil)
	if err != nil {
		return "", err
	}
	name := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return filepath.Join(cacheDir, prefix+hex.EncodeToString(sum[:8])+".git")
	}
	dir := name(r.url)
	if repo == r.url {
		return dir, nil
	}
	legacy := name(repo)
	if _, err := os.Stat(legacy); err != nil {
		return dir, nil
	}
	scrub := legacy
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(legacy, dir); err != nil {
			return "", fmt.Errorf("move old clone %s: %w", legacy, err)
		}
		scrub = dir
	}
	if _, err := openClone(scrub, r.url); err != nil {
		return "", fmt.Errorf("scrub old clone %s: %w", scrub, err)
	}
	return dir, nil
}
