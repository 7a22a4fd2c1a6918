// Command genesis is the admin CLI of Genesis fleet control: it validates a
// state repository, seals credentials to the fleet's age recipients, makes
// keys and API tokens, and shows what a merge would do (the local demo is a
// binary of its own, genesis-demo).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"genesis.dev/fleet/internal/cliexit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(cliexit.Code("genesis", err, os.Stderr))
}
