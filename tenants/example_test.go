package tenants_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"

	"genesis.dev/fleet/tenants"
)

// The reconciler's wiring: a Source polled by a Watcher, a push webhook that
// triggers it, and the commit it acted on marked after each reconcile.
func Example() {
	logger := slog.Default()
	ctx := context.Background()
	src, err := tenants.Open(tenants.Config{
		Repo:           "https://github.com/example/genesis-state.git",
		LastReconciled: "", // as persisted by the reconciler
		Logger:         logger,
	})
	if err != nil {
		logger.Error("open state repository", "err", err)
		return
	}
	w := tenants.NewWatcher(src, tenants.WatchConfig{Logger: logger})

	secret := []byte("from GENESIS_WEBHOOK_SECRET")
	http.HandleFunc("POST /hooks/git", func(rw http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, 1<<20))
		if err != nil {
			http.Error(rw, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		if err := tenants.VerifySignature(secret, body, r.Header.Get(tenants.SignatureHeader)); err != nil {
			http.Error(rw, err.Error(), http.StatusUnauthorized)
			return
		}
		w.Trigger()
		rw.WriteHeader(http.StatusAccepted)
	})

	_ = w.Run(ctx, func(ctx context.Context, snap tenants.Snapshot, err error) {
		if errors.Is(err, tenants.ErrNotDescendant) {
			// Alert: history was rewritten. Keep reconciling src.Current().
			return
		}
		if err != nil {
			return // transient: the next poll retries
		}
		// plan from snap (only snap.Changed when !snap.FleetChanged), execute,
		// persist snap.Commit, then:
		_ = src.MarkReconciled(snap.Commit)
	})
}
