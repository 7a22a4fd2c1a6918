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

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"genesis.dev/fleet/internal/cliexit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(cliexit.Code("genesis-demo", err, os.Stderr))
}

// env is what every command gets from the process.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// command is one subcommand of genesis-demo.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"run", "run the local demo on a state repository (the default command)", runDemo},
		{"droplet", "a simulated droplet's init: the simulator's boot hook in the demo", runDropletSim},
		{"devdb", "start a throwaway local Postgres for development (make db)", runDevDB},
	}
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

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	var list strings.Builder
	for _, c := range commands() {
		fmt.Fprintf(&list, "  %-10s %s\n", c.name, c.summary)
	}
	if len(args) == 0 || (strings.HasPrefix(args[0], "-") && !isHelp(args[0])) {
		return runDemo(ctx, e, args)
	}
	if isHelp(args[0]) || args[0] == "help" {
		fmt.Fprintf(stdout, mainUsage, list.String())
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	return cliexit.Usage("unknown command %q (run 'genesis-demo --help')", args[0])
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "--h" }

// newFlags makes a flag set whose --help prints usage to stdout and whose
// errors are usage errors.
func newFlags(e env, name, usage string) *flag.FlagSet { return cliexit.Flags(e.stderr, name, usage) }

// parse parses flags that may stand before, between or after positional
// arguments, and returns the positional ones. --help prints the usage to
// stdout and returns cliexit.ErrHelp.
func parse(e env, fs *flag.FlagSet, args []string) ([]string, error) {
	return cliexit.Parse(e.stdout, fs, args)
}
