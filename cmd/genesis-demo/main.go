// Command genesis-demo runs the local demo of Genesis fleet control on one
// machine: a whole fleet (package localfleet: Postgres, the DigitalOcean
// simulator, the reconciler in this process, simulated droplets running real
// agents, Caddy and the n8n emulator) and a story played on it. It also is
// the simulated droplet's boot hook (`genesis-demo droplet`) and starts a
// throwaway Postgres for development (`genesis-demo devdb`).
//
// It is development and demo tooling, not part of what an operator runs:
// the admin CLI (cmd/genesis) does not link it, so the CLI stays free of
// Postgres, DigitalOcean and process supervision.
package main

import "genesis.dev/fleet/internal/cliexit"

func main() { cliexit.Main("genesis-demo", program.Run) }

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
