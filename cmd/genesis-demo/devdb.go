package main

import (
	"context"

	"genesis.dev/fleet/internal/pgserver"

	"genesis.dev/fleet/internal/cliexit"
)

const devDBUsage = `Usage: genesis-demo devdb [--dir DIR]

Starts a throwaway Postgres cluster from the system's binaries (initdb and
pg_ctl from PATH or /usr/lib/postgresql/*/bin), listening on 127.0.0.1 on a
free port, prints DATABASE_URL=... and runs until interrupted, then stops it.
With --dir the data directory is kept in DIR; otherwise it is a temporary
directory removed on exit. For development and the demo only.`

func runDevDB(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("devdb", devDBUsage)
	dir := fs.String("dir", "", "keep the cluster's data in this directory (default: a temporary one)")
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cliexit.Usage("devdb takes no arguments, got %q", pos)
	}
	return pgserver.RunDev(ctx, e.Stdout, *dir)
}
