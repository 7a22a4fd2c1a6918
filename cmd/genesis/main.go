// Command genesis is the admin CLI of Genesis fleet control: it validates a
// state repository, seals credentials to the fleet's age recipients, makes
// keys and API tokens, and shows what a merge would do (the local demo is a
// binary of its own, genesis-demo).
package main

import "genesis.dev/fleet/internal/cliexit"

func main() { cliexit.Main("genesis", program.Run) }

// program is genesis: its commands and usage.
var program = cliexit.Commands{
	Name:  "genesis",
	Usage: mainUsage,
	List:  commands(),
}

func commands() []cliexit.Command {
	return []cliexit.Command{
		{Name: "validate", Summary: "check a state repository: every file, every rule, file:line:col errors", Run: runValidate},
		{Name: "seal", Summary: "encrypt a credential (stdin) to the fleet's age recipients", Run: runSeal},
		{Name: "plan", Summary: "show what merging a state repository would do: actions, cost, API calls", Run: runPlan},
		{Name: "keygen", Summary: "make an age identity or an ed25519 manifest-signing key", Run: runKeygen},
		{Name: "rollout", Summary: "list, show, pause, resume or abort rollouts of fleet-wide changes (needs a reconciler)", Run: runRollout},
		{Name: "action", Summary: "reboot, power-cycle, rebuild, snapshot, back up or rotate the secrets of a tenant's droplet as an operator (needs a reconciler)", Run: runAction},
		{Name: "token", Summary: "make an API token and its line for the reconciler's --tokens file", Run: runToken},
		{Name: "availability", Summary: "show measured availability per tier and the worst tenants (needs a reconciler)", Run: runAvailability},
	}
}

const mainUsage = `genesis is the admin CLI of Genesis fleet control.

Usage:
  genesis <command> [flags] [args]

Commands:
%s
Run 'genesis <command> --help' for a command's flags.

Exit status: 0 success, 1 failure (for validate: invalid files), 2 usage error.
`
