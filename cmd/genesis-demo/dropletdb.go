package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"
)

// dropletDB is a simulated droplet's "n8n database": a database of its own
// on the local fleet's Postgres (n8n_<droplet id>), where a writer adds an
// execution row every 100 ms as n8n would. The agent backs it up with
// pg_dump and restores into it with pg_restore, as on a real droplet.
type dropletDB struct {
	url string // the droplet's database
	bin string // pg_dump and pg_restore
}

// openDropletDB creates droplet's database (if missing) on the Postgres of
// admin.
func openDropletDB(ctx context.Context, admin, bin, droplet string) (*dropletDB, error) {
	u, err := url.Parse(admin)
	if err != nil {
		return nil, fmt.Errorf("--pg-url: %w", err)
	}
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return nil, fmt.Errorf("--pg-url: %w", err)
	}
	defer conn.Close(ctx)
	name := "n8n_" + droplet
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, name).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{name}.Sanitize()); err != nil {
			return nil, fmt.Errorf("create database %s: %w", name, err)
		}
	}
	u.Path = "/" + name
	return &dropletDB{url: u.String(), bin: bin}, nil
}

// agentArgs are the agent's backup flags for this database and dataDir.
func (d *dropletDB) agentArgs(dataDir string) []string {
	return []string{
		"--backup-dump", filepath.Join(d.bin, "pg_dump") + " -Fc -d " + d.url,
		"--backup-restore", filepath.Join(d.bin, "pg_restore") + " --clean --if-exists --no-owner --single-transaction -d " + d.url,
		"--n8n-data-dir", dataDir,
	}
}

// write adds an execution every 100 ms until ctx ends; errors (a
// restore holding the table, say) are logged at debug and retried.
func (d *dropletDB) write(ctx context.Context, droplet string, log *slog.Logger) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var err error
		if conn == nil || conn.IsClosed() {
			if conn, err = pgx.Connect(ctx, d.url); err != nil {
				conn = nil
				log.Debug("n8n database", "err", err)
				continue
			}
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err = conn.Exec(wctx, `CREATE TABLE IF NOT EXISTS execution_entity (id bigserial PRIMARY KEY, droplet text NOT NULL, at timestamptz NOT NULL DEFAULT now());
			INSERT INTO execution_entity (droplet) VALUES ('`+droplet+`')`)
		cancel()
		if err != nil {
			log.Debug("n8n database write", "err", err)
			conn.Close(context.WithoutCancel(ctx))
			conn = nil
		}
	}
}
