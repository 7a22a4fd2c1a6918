package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"filippo.io/age"

	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/stateapi"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/tenants"
)

// buildAPI makes the authenticator (nil only with --insecure-no-auth) and
// the tenant API (nil then, or in --state-dir mode). Without --tokens it
// refuses to start unless --insecure-no-auth says so (day-2 rule 1).
func buildAPI(c config, st *store.Store, ids []age.Identity, log *slog.Logger, pushed func()) (*auth.Authenticator, *stateapi.API, error) {
	if c.tokensFile == "" { // --insecure-no-auth: parseFlags refused anything else
		return nil, nil, nil
	}
	data, err := os.ReadFile(c.tokensFile)
	if err != nil {
		return nil, nil, fmt.Errorf("read --tokens: %w", err)
	}
	toks, err := auth.ParseTokens(data)
	if err != nil {
		return nil, nil, fmt.Errorf("--tokens %s: %w", c.tokensFile, err)
	}
	a := auth.New(auth.Config{Tokens: toks, Rate: c.apiRate, Burst: int(2 * c.apiRate), Logger: log})
	if c.stateRepo == "" {
		log.Warn("tenant API disabled: it needs --state-repo (a git repository to commit to)", "component", "stateapi")
		return a, nil, nil
	}
	dir := c.cacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, nil, fmt.Errorf("tenant API: no cache directory: %w", err)
		}
		dir = filepath.Join(base, "genesis", "state")
	}
	remote := c.stateRepo
	if !tenants.IsURL(remote) {
		if remote, err = filepath.Abs(remote); err != nil {
			return nil, nil, err
		}
	}
	sum := sha256.Sum256([]byte(remote))
	w, err := tenants.NewWriter(tenants.WriterConfig{Remote: remote, Branch: c.branch, Dir: filepath.Join(dir, "writer-"+hex.EncodeToString(sum[:8])+".git"),
		Propose: c.propose, Committer: tenants.Identity{Name: "Genesis API", Email: "api@genesis.invalid"}, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	api := stateapi.New(stateapi.Config{Writer: w, Store: st, Identities: ids, Pushed: pushed, Poll: c.pollInterval, Logger: log})
	return a, api, nil
}
