// Command genesis-demo runs the local demo of Genesis fleet control on one
// machine: a whole fleet (package localfleet: Postgres, the DigitalOcean
// simulator, the reconciler in this process, simulated droplets running real
// agents, Caddy and the n8n emulator) and a story played on it. It also is
// the simulated droplet's boot hook (`genesis-demo droplet`) and starts a
// throwaway Postgres for development (`genesis-demo devdb`). Run through a
// link named docker, it is the docker CLI emulator of simulated droplets
// (fakes/dockersim), whose n8n containers are `genesis-demo n8n-container`.
//
// It is development and demo tooling, not part of what an operator runs:
// the admin CLI (cmd/genesis) does not link it, so the CLI stays free of
// Postgres, DigitalOcean and process supervision.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"genesis.dev/fleet/fakes/dockersim"
	"genesis.dev/fleet/internal/cliexit"
)

func main() {
	if filepath.Base(os.Args[0]) == "docker" {
		// The docker CLI emulator: exit statuses are docker's.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := dockersim.Main(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	cliexit.Main("genesis-demo", program.Run)
}

// program is genesis-demo: its commands and usage; without a command (or
// with flags first) it runs the demo.
var program = cliexit.Commands{
	Name:    "genesis-demo",
	Usage:   mainUsage,
	Default: "run",
	List: []cliexit.Command{
		{Name: "run", Summary: "run the local demo on a state repository (the default command)", Run: runDemo},
		{Name: "droplet", Summary: "a simulated droplet's init: the simulator's boot hook in the demo", Run: runDropletSim},
		{Name: "devdb", Summary: "start a throwaway local Postgres for development (make db)", Run: runDevDB},
		{Name: "n8n-container", Summary: "the n8n container the docker emulator runs (fakes/dockersim; not run by hand)", Run: runN8NContainer},
	},
}

const mainUsage = `genesis-demo runs the local demo of Genesis fleet control.

Usage:
  genesis-demo [run] [flags]
  genesis-demo <command> [flags] [args]

Commands:
%s
Run 'genesis-demo <command> --help' for a command's flags.

Exit status: 0 success, 1 failure, 2 usage error.
`
