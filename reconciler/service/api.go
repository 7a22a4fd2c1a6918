package service

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"filippo.io/age"
	"github.com/go-git/go-git/v5/plumbing/transport"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"

	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/tenants"
)

// buildAPI makes the authenticator (nil only with --insecure-no-auth) and
// the tenant API (nil then, or in --state-dir mode). Without --tokens it
// refuses to start unless --insecure-no-auth says so (day-2 rule 1).
func buildAPI(c Config, st *store.Store, ids []age.Identity, log *slog.Logger, pushed func(), points func() map[string]backup.Point) (*auth.Authenticator, *stateapi.API, error) {
	if c.TokensFile == "" { // --insecure-no-auth: parseFlags refused anything else
		return nil, nil, nil
	}
	data, err := os.ReadFile(c.TokensFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read --tokens: %w", err)
	}
	toks, err := auth.ParseTokens(data)
	if err != nil {
		return nil, nil, fmt.Errorf("--tokens %s: %w", c.TokensFile, err)
	}
	a := auth.New(auth.Config{Tokens: toks, Rate: c.APIRate, Burst: int(2 * c.APIRate), Logger: log})
	if c.StateRepo == "" {
		log.Warn("tenant API disabled: it needs --state-repo (a git repository to commit to)", "component", "stateapi")
		return a, nil, nil
	}
	dir := c.CacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, nil, fmt.Errorf("tenant API: no cache directory: %w", err)
		}
		dir = filepath.Join(base, "genesis", "state")
	}
	remote := c.StateRepo
	if !tenants.IsURL(remote) {
		if remote, err = filepath.Abs(remote); err != nil {
			return nil, nil, err
		}
	}
	clone, err := tenants.ClonePath(dir, "writer-", remote)
	if err != nil {
		return nil, nil, fmt.Errorf("tenant API: %w", err)
	}
	cred, err := gitAuth(c)
	if err != nil {
		return nil, nil, err
	}
	w, err := tenants.NewWriter(tenants.WriterConfig{Remote: remote, Branch: c.Branch, Dir: clone, Auth: cred,
		Propose: c.Propose, Committer: tenants.Identity{Name: "Genesis API", Email: "api@genesis.invalid"}, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	api := stateapi.New(stateapi.Config{Writer: w, Store: st, Identities: ids, Pushed: pushed, Poll: c.PollInterval, Logger: log, RecoveryPoints: points,
		Availability: tenantAvailability(st)})
	return a, api, nil
}

// gitAuth is the state repository's credential from the environment:
// $GENESIS_GIT_TOKEN as the basic-auth password of an http(s) URL, user
// $GENESIS_GIT_USER ("git" when empty; GitHub and GitLab take any non-empty
// name with a token). Nil when no token is set: a credential may then be in
// the URL, which package tenants turns into the same basic auth.
func gitAuth(c Config) (transport.AuthMethod, error) {
	if c.GitToken == "" {
		if c.GitUser != "" {
			return nil, cliexit.Usage("GENESIS_GIT_USER needs GENESIS_GIT_TOKEN")
		}
		return nil, nil
	}
	if u := strings.ToLower(c.StateRepo); !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		return nil, cliexit.Usage("GENESIS_GIT_TOKEN needs an http(s) --state-repo (ssh uses keys)")
	}
	user := c.GitUser
	if user == "" {
		user = "git"
	}
	return &githttp.BasicAuth{Username: user, Password: c.GitToken}, nil
}
