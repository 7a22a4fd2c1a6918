package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"genesis.dev/fleet/reconciler/auth"

	"genesis.dev/fleet/internal/cliexit"
)

const tokenUsage = `Usage: genesis token new --name NAME --scopes dashboard[,admin,metrics,agent] [--email E]

Makes a fresh API token for the reconciler. It prints the token once on the
first line (give it to the caller; it is never stored) and, on the second,
the line to add to the reconciler's --tokens file: its SHA-256 hash, name and
scopes as JSON. The name becomes the git author of the caller's changes and
the actor in audit_log.

Scopes: dashboard (tenant reads and writes), admin (dashboard plus overrides
and retries, and metrics), metrics (GET /metrics with
--metrics-token-required), agent (agent routes only).`

func runToken(ctx context.Context, e cliexit.Env, args []string) error {
	if len(args) == 0 || args[0] != "new" {
		if len(args) > 0 && (args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
			fmt.Fprintln(e.Stdout, tokenUsage)
			return nil
		}
		return cliexit.Usage("token: want 'genesis token new --name NAME --scopes S' (see genesis token --help)")
	}
	fs := e.Flags("token new", tokenUsage)
	name := fs.String("name", "", "the caller's name (git author, audit actor)")
	scopes := fs.String("scopes", "", "comma-separated scopes: dashboard, admin, metrics, agent")
	email := fs.String("email", "", "the caller's e-mail for git commits (default NAME@api.genesis.invalid)")
	pos, err := e.Parse(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cliexit.Usage("token new takes no arguments, got %q", pos)
	}
	tok, err := auth.NewToken()
	if err != nil {
		return err
	}
	line := auth.Token{Name: *name, Email: *email, SHA256: auth.Hash(tok)}
	for _, s := range strings.Split(*scopes, ",") {
		if s = strings.TrimSpace(s); s != "" {
			line.Scopes = append(line.Scopes, auth.Scope(s))
		}
	}
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	// The tokens file's own parser judges the line, so what is printed loads.
	if _, err := auth.ParseTokens(b); err != nil {
		return cliexit.Usage("%s", strings.TrimPrefix(err.Error(), "tokens line 1: "))
	}
	fmt.Fprintf(e.Stdout, "%s\n%s\n", tok, b)
	return nil
}
