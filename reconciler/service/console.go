package service

import (
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/console"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/tenants"
)

// newConsole builds the fleet console and returns the replica's handler
// with it mounted at /console/ beside api (which it calls in-process for
// every action, without the limit on unauthenticated requests: the
// browser's own requests to the console pass that limit, so a refused
// login counts against the browser's address).
//
// The session key: --console-key's file; else derived from the tokens
// file, which every replica shares, so a session opens on any replica and
// editing the tokens file ends them all; with neither (--insecure-no-auth)
// a random key per process.
//
// leading is the loop's Reconciler.Leading: while it holds, the console
// publishes this replica's DigitalOcean rate budget for the others'
// accounts pages.
func newConsole(c Config, st *store.Store, api http.Handler, authn *auth.Authenticator, desired func() (tenants.Snapshot, bool),
	leading func() bool, points func() map[string]backup.Point, reg *prometheus.Registry, log *slog.Logger) (*console.Console, http.Handler, error) {
	var material []byte
	switch {
	case c.ConsoleKey != "":
		b, err := os.ReadFile(c.ConsoleKey)
		if err != nil {
			return nil, nil, fmt.Errorf("read --console-key: %w", err)
		}
		if len(b) < 32 {
			return nil, nil, fmt.Errorf("--console-key %s: want at least 32 bytes of secret, have %d", c.ConsoleKey, len(b))
		}
		material = b
	case c.TokensFile != "":
		b, err := os.ReadFile(c.TokensFile)
		if err != nil {
			return nil, nil, fmt.Errorf("read --tokens: %w", err)
		}
		material = b
	default:
		material = make([]byte, 32)
		rand.Read(material)
	}
	con, err := console.New(console.Config{Store: st, API: api, Auth: authn, Key: console.DeriveKey(material), Desired: desired,
		RecoveryPoints: points, Gatherer: reg, Leading: leading, Replica: c.ReplicaID, Logger: log, Registerer: reg})
	if err != nil {
		return nil, nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/console/", con.Handler())
	mux.Handle("/console", con.Handler())
	mux.Handle("/", api)
	log.Info("fleet console at /console/", "component", "console")
	return con, mux, nil
}
