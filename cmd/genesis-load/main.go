// Command genesis-load is the load tool behind `make bench`: it simulates
// many agents (real enrollment with one-time tokens, manifest long-polls
// with If-None-Match, heartbeats every 60 s compressed by --speedup)
// against a reconciler on real Postgres, and reports throughput and latency
// percentiles, each figure against a baseline measured in the same run.
//
// By default it is self-contained: it starts a throwaway Postgres, a real
// git state repository declaring one tenant per simulated droplet, and the
// reconciler's agent side in this process (tenants.Source and Watcher,
// agentapi.Service, /metrics) on 127.0.0.1. Droplets are fake: they are
// journaled in Postgres as the reconciler's create records them and get
// their tokens from agentapi's MintToken, as cloud-init user data would
// carry them; DigitalOcean is not involved (BenchmarkProvision1000 in
// reconciler/cloud measures provisioning). With --reconciler URL it targets
// a running reconciler instead (loopback only).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errUsage):
		fmt.Fprintln(os.Stderr, "genesis-load:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "genesis-load:", err)
		os.Exit(1)
	}
}
