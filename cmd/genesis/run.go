package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"genesis.dev/fleet/internal/cliexit"
)

// env is what every command gets from the process.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// command is one subcommand of genesis.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"validate", "check a state repository: every file, every rule, file:line:col errors", runValidate},
		{"seal", "encrypt a credential (stdin) to the fleet's age recipients", runSeal},
		{"plan", "show what merging a state repository would do: actions, cost, API calls", runPlan},
		{"keygen", "make an age identity or an ed25519 manifest-signing key", runKeygen},
		{"token", "make an API token and its line for the reconciler's --tokens file", runToken},
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

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	var list strings.Builder
	for _, c := range commands() {
		fmt.Fprintf(&list, "  %-10s %s\n", c.name, c.summary)
	}
	if len(args) == 0 {
		fmt.Fprintf(stderr, mainUsage, list.String())
		return &cliexit.Error{Code: 2}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(stdout, mainUsage, list.String())
		return nil
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, e, args[1:])
		}
	}
	return cliexit.Usage("unknown command %q (run 'genesis --help')", args[0])
}

// newFlags makes a flag set whose --help prints usage to stdout and whose
// errors are usage errors.
func newFlags(e env, name, usage string) *flag.FlagSet { return cliexit.Flags(e.stderr, name, usage) }

// parse parses flags that may stand before, between or after positional
// arguments, and returns the positional ones. --help prints the usage to
// stdout and returns cliexit.ErrHelp.
func parse(e env, fs *flag.FlagSet, args []string) ([]string, error) {
	return cliexit.Parse(e.stdout, fs, args)
}
