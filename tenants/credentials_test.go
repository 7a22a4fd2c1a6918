package tenants

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"genesis.dev/fleet/internal/gitserve"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
)

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"https://TOKEN@github.com/org/state.git", "https://github.com/org/state.git"},
		{"https://user:TOKEN@github.com/org/state.git", "https://github.com/org/state.git"},
		{"https://user:p%40ss%2Fx@github.com:8443/org/state.git", "https://github.com:8443/org/state.git"},
		{"https://user:pa/ss@host/org/state.git", "https://host/org/state.git"}, // unescaped "/": does not parse
		{"https://tok@en@host/state.git", "https://host/state.git"},             // unescaped "@": does not parse
		{"ssh://git:TOKEN@host:22/state.git", "ssh://host:22/state.git"},
		{"git@github.com:org/state.git", "github.com:org/state.git"},
		{"user:TOKEN@github.com:org/state.git", "github.com:org/state.git"},
		{"https://github.com/org/state.git", "https://github.com/org/state.git"},
		{"file:///srv/state.git", "file:///srv/state.git"},
		{"/srv/state", "/srv/state"},
		{"dir/with@at:colon", "dir/with@at:colon"},
		{"", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := RedactURL(tt.in); got != tt.want {
				t.Errorf("RedactURL(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{"https://TOKEN@github.com/org/state.git", "https://u:p@h/x", "git@h:o/r", "u:p@h:x", "https://a@b@c/d", "/srv/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := RedactURL(s)
		if i := strings.Index(s, "://"); i >= 0 {
			if u, err := url.Parse(got); err == nil && u.User != nil {
				t.Errorf("RedactURL(%q) = %q keeps user information %q", s, got, u.User)
			}
			if u, err := url.Parse(s); err != nil || u.User == nil {
				// Not a URL with user information: the fallback cut
				// everything up to the last "@".
				if err != nil && strings.Contains(got[strings.Index(got, "://")+3:], "@") {
					t.Errorf("RedactURL(%q) = %q keeps an \"@\"", s, got)
				}
			}
		}
		r, err := newRemote(s, nil)
		if err != nil {
			return
		}
		if u, err := url.Parse(r.url); err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.User != nil {
			t.Errorf("newRemote(%q) stores %q, with user information", s, r.url)
		}
		scrubbed := r.scrub("fetch " + s + ": failed")
		for _, v := range r.secrets {
			if strings.Contains(scrubbed, v) {
				t.Errorf("scrub(%q) = %q keeps %q", s, scrubbed, v)
			}
		}
	})
}

func TestNewRemote(t *testing.T) {
	tests := []struct {
		name, repo string
		auth       *githttp.BasicAuth // given apart from the URL
		wantURL    string
		wantAuth   *githttp.BasicAuth
		wantErr    string
	}{
		{name: "token as user name", repo: "https://TOKEN@github.com/org/state.git", wantURL: "https://github.com/org/state.git", wantAuth: &githttp.BasicAuth{Username: "TOKEN"}},
		{name: "user and token", repo: "https://x-access-token:TOKEN@github.com/org/state.git", wantURL: "https://github.com/org/state.git", wantAuth: &githttp.BasicAuth{Username: "x-access-token", Password: "TOKEN"}},
		{name: "escaped password", repo: "https://u:p%40ss@h/s.git", wantURL: "https://h/s.git", wantAuth: &githttp.BasicAuth{Username: "u", Password: "p@ss"}},
		{name: "token apart", repo: "https://github.com/org/state.git", auth: &githttp.BasicAuth{Username: "git", Password: "TOKEN"}, wantURL: "https://github.com/org/state.git", wantAuth: &githttp.BasicAuth{Username: "git", Password: "TOKEN"}},
		{name: "token twice", repo: "https://TOKEN@github.com/org/state.git", auth: &githttp.BasicAuth{Username: "git", Password: "TOKEN"}, wantErr: "repository https://github.com/org/state.git: credentials both in the URL and given apart (GENESIS_GIT_TOKEN); give one"},
		{name: "ssh user kept", repo: "ssh://git@host/state.git", wantURL: "ssh://git@host/state.git"},
		{name: "ssh password dropped", repo: "ssh://git:TOKEN@host/state.git", wantURL: "ssh://git@host/state.git"},
		{name: "scp-like", repo: "git@github.com:org/state.git", wantURL: "git@github.com:org/state.git"},
		{name: "scp-like password", repo: "git:TOKEN@github.com:org/state.git", wantErr: "repository github.com:org/state.git: a password in an scp-like address is not supported; use an ssh key or an https URL"},
		{name: "file", repo: "file:///srv/state.git", wantURL: "file:///srv/state.git"},
		{name: "bad URL", repo: "https://u:TOKEN@host:port/state.git", wantErr: "repository https://host:port/state.git: not a valid URL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := newRemote(tt.repo, basicOrNil(tt.auth))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.url != tt.wantURL {
				t.Errorf("url = %q, want %q", r.url, tt.wantURL)
			}
			got, _ := r.auth.(*githttp.BasicAuth)
			if (got == nil) != (tt.wantAuth == nil) || got != nil && *got != *tt.wantAuth {
				t.Errorf("auth = %v, want %v", got, tt.wantAuth)
			}
			if s := r.scrub("fetch " + tt.repo); strings.Contains(s, "TOKEN") {
				t.Errorf("scrub left the token: %s", s)
			}
		})
	}
}

func basicOrNil(a *githttp.BasicAuth) transport.AuthMethod {
	if a == nil {
		return nil
	}
	return a
}

// TestPlantedTokenNeverLeaks serves the state repository over HTTP behind
// basic auth and gives the Source and the Writer its URL with a planted
// token in it. They sync and push (so the credential is really sent), then
// fail (the server refuses, a branch is missing, the port is closed) so the
// error paths run too; an older version's clones with the token in their
// config are waiting in the cache. Afterwards the token is in no log line,
// no error and no file under the cache directory, and the clones are 0700.
func TestPlantedTokenNeverLeaks(t *testing.T) {
	const token = "ghp_PLANTED0TOKEN0d3adb33f"
	tests := []struct {
		name     string
		userinfo string
		login    gitserve.Login
	}{
		{"token as user name", token, gitserve.Login{User: token}},
		{"user and token", "x-access-token:" + token, gitserve.Login{User: "x-access-token", Password: token}},
		{"escaped token", "alice:" + url.PathEscape(token+"/+@:"), gitserve.Login{User: "alice", Password: token + "/+@:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			work := newExampleRepo(t)
			bare := filepath.Join(root, "state.git")
			testkit.Git(t, work.Dir, "clone", "-q", "--bare", work.Dir, bare)
			srv := gitserve.Start(t, root, tt.login)
			host := strings.TrimPrefix(srv.URL, "http://")
			repo := "http://" + tt.userinfo + "@" + host + "/state.git"
			cache := t.TempDir()
			var logs syncio.Buffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			ctx := context.Background()
			var errs []string
			failed := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s succeeded; want a failure", what)
				}
				log.Error("test saw an error", "what", what, "err", err)
				errs = append(errs, err.Error())
			}

			// Clones an older version left, with the token in their origin.
			sum := sha256.Sum256([]byte(repo))
			legacy := filepath.Join(cache, hex.EncodeToString(sum[:8])+".git")
			writerDir := filepath.Join(cache, "writer.git")
			for _, d := range []string{legacy, writerDir} {
				testkit.Git(t, cache, "init", "-q", "--bare", d)
				testkit.Git(t, d, "remote", "add", "origin", repo)
			}

			src, err := Open(Config{Repo: repo, CacheDir: cache, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			snap, err := src.Sync(ctx)
			if err != nil {
				t.Fatalf("sync with the token as basic auth: %v", err)
			}
			if len(snap.Tenants) == 0 {
				t.Fatal("synced no tenants")
			}
			srv.Refuse(1, "")
			_, err = src.Sync(ctx)
			failed("sync refused by the server", err)
			if !strings.Contains(err.Error(), "fetch http://"+host+"/state.git") {
				t.Errorf("refused sync: %v; want it to name the repository", err)
			}
			other, err := Open(Config{Repo: repo, Branch: "missing", CacheDir: cache, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			_, err = other.Sync(ctx)
			failed("sync of a missing branch", err)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closed := "http://" + tt.userinfo + "@" + ln.Addr().String() + "/state.git"
			ln.Close()
			down, err := Open(Config{Repo: closed, CacheDir: cache, Logger: log})
			if err != nil {
				t.Fatal(err)
			}
			_, err = down.Sync(ctx)
			failed("sync from a closed port", err)

			w, err := NewWriter(WriterConfig{Remote: repo, Dir: writerDir, Logger: log, Committer: Identity{"Genesis API", "api@genesis.invalid"}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Fetch(ctx); err != nil {
				t.Fatalf("writer fetch: %v", err)
			}
			res, err := w.Write(ctx, Change{ID: "ws-acme", IfMatch: blobOf(t, w, "ws-acme"), Edit: patch(`{"spec":{"state":"hibernated"}}`), Author: alice, Message: "hibernate ws-acme"})
			if err != nil {
				t.Fatalf("write: %v", err)
			}
			if got := testkit.Git(t, bare, "rev-parse", "main"); got != res.Commit {
				t.Errorf("remote main = %s, want the pushed %s", got, res.Commit)
			}
			srv.Refuse(1, "git-upload-pack")
			_, err = w.Write(ctx, Change{ID: "ws-acme", IfMatch: res.Blob, Edit: patch(`{"spec":{"state":"running"}}`), Author: alice, Message: "wake ws-acme"})
			failed("write refused by the server", err)
			var redacted *RedactedError
			if !errors.As(err, &redacted) {
				t.Errorf("write error %T is not a *RedactedError", err)
			}
			srv.Refuse(1, "git-receive-pack")
			_, err = w.Write(ctx, Change{ID: "ws-acme", IfMatch: res.Blob, Edit: patch(`{"spec":{"state":"running"}}`), Author: alice, Message: "wake ws-acme"})
			failed("push refused by the server", err)
			if !strings.HasPrefix(err.Error(), "push to http://"+host+"/state.git: ") {
				t.Errorf("refused push: %v; want it to name the repository", err)
			}
			if got := testkit.Git(t, bare, "rev-parse", "main"); got != res.Commit {
				t.Errorf("remote main = %s after a refused push, want %s", got, res.Commit)
			}

			leaks := func(where, text string) {
				t.Helper()
				for _, f := range []string{token, url.PathEscape(token), url.QueryEscape(token)} {
					if strings.Contains(text, f) {
						t.Errorf("%s holds the planted token (%q):\n%s", where, f, text)
						return
					}
				}
			}
			leaks("the logs", logs.String())
			for _, e := range errs {
				leaks("an error", e)
			}
			err = filepath.WalkDir(cache, func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				leaks(p, string(b))
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(legacy); err == nil {
				t.Errorf("the old clone %s is still there; want it adopted", legacy)
			}
			for _, d := range []string{src.GitDir(), writerDir} {
				for p, want := range map[string]fs.FileMode{d: 0o700, filepath.Join(d, "config"): 0o600} {
					if fi, err := os.Stat(p); err != nil {
						t.Error(err)
					} else if got := fi.Mode().Perm(); got != want {
						t.Errorf("mode of %s = %v, want %v", p, got, want)
					}
				}
			}
			if t.Failed() {
				t.Logf("logs:\n%s", logs.String())
			}
		})
	}
}

// TestClonePathScrubsOldClones: a clone an older version named by the hash
// of the full URL (token included) is moved to the clean URL's name, or,
// when a clone is already there, has its origin rewritten in place.
func TestClonePathScrubsOldClones(t *testing.T) {
	const repo = "https://ghp_PLANTED0TOKEN0fade@git.example.com/org/state.git"
	tests := []struct {
		name         string
		existing     bool // a clone under the clean name exists too
		wantOldThere bool
	}{
		{name: "old clone only", existing: false, wantOldThere: false},
		{name: "both", existing: true, wantOldThere: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := t.TempDir()
			sum := sha256.Sum256([]byte(repo))
			old := filepath.Join(cache, "writer-"+hex.EncodeToString(sum[:8])+".git")
			testkit.Git(t, cache, "init", "-q", "--bare", old)
			testkit.Git(t, old, "remote", "add", "origin", repo)
			clean := "https://git.example.com/org/state.git"
			if tt.existing {
				sum := sha256.Sum256([]byte(clean))
				testkit.Git(t, cache, "init", "-q", "--bare", filepath.Join(cache, "writer-"+hex.EncodeToString(sum[:8])+".git"))
			}
			dir, err := ClonePath(cache, "writer-", repo)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "config")); err != nil {
				t.Errorf("no clone at %s: %v", dir, err)
			}
			_, err = os.Stat(old)
			if got := err == nil; got != tt.wantOldThere {
				t.Errorf("old clone still there = %v, want %v", got, tt.wantOldThere)
			}
			scrubbed := dir
			if tt.wantOldThere {
				scrubbed = old
			}
			if got := testkit.Git(t, scrubbed, "config", "remote.origin.url"); got != clean {
				t.Errorf("origin of the old clone = %q, want %q", got, clean)
			}
		})
	}
}
