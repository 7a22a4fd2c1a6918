package cliexit

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Env is what a command gets from the process: its environment and its
// standard streams (a test passes its own).
type Env struct {
	Getenv func(string) string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// Flags makes a command's flag set as the package-level Flags does, its
// errors going to e.Stderr.
func (e Env) Flags(name, usage string) *flag.FlagSet { return Flags(e.Stderr, name, usage) }

// Parse parses a command's flags as the package-level Parse does, --help
// printing to e.Stdout.
func (e Env) Parse(fs *flag.FlagSet, args []string) ([]string, error) {
	return Parse(e.Stdout, fs, args)
}

// Main runs a binary and exits: run gets the command line after the
// binary's name, the process's Env and a context cancelled by SIGINT or
// SIGTERM; the exit status is Code's for the error run returns.
func Main(name string, run func(ctx context.Context, args []string, e Env) error) {
	os.Exit(Status(name, run, os.Args[1:]))
}

// Status is Main without the exit: it runs run on args and returns the exit
// status (a test binary standing in for the command calls it).
func Status(name string, run func(ctx context.Context, args []string, e Env) error, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, args, Env{Getenv: os.Getenv, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr})
	stop()
	return Code(name, err, os.Stderr)
}

// Runner adapts a run function that reads no stdin, in the signature the
// binaries' run functions have, to Main.
func Runner(run func(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error) func(context.Context, []string, Env) error {
	return func(ctx context.Context, args []string, e Env) error {
		return run(ctx, args, e.Getenv, e.Stdout, e.Stderr)
	}
}

// Command is one subcommand of a binary.
type Command struct {
	Name    string
	Summary string // one line, or lines the usage indents under the first
	Run     func(ctx context.Context, e Env, args []string) error
}

// Commands is a binary made of subcommands. Run dispatches on the first
// argument: a command's name runs it with the rest; -h, --help or help
// prints the usage to stdout (status 0); nothing prints it to stderr
// (status 2), unless Default names the command that runs then (and when the
// first argument is a flag); anything else is a usage error.
type Commands struct {
	Name    string    // the binary's name
	Usage   string    // the usage text; %s in it stands for the command list
	Default string    // the command run without a name, or ""
	List    []Command // in the order the usage lists them
}

// Run runs the command args name; it fits Main.
func (c Commands) Run(ctx context.Context, args []string, e Env) error {
	if len(args) == 0 || (c.Default != "" && strings.HasPrefix(args[0], "-") && !isHelp(args[0])) {
		if cmd, ok := c.find(c.Default); ok {
			return cmd.Run(ctx, e, args)
		}
		fmt.Fprint(e.Stderr, c.usage())
		return &Error{Code: 2}
	}
	if isHelp(args[0]) || args[0] == "help" {
		fmt.Fprint(e.Stdout, c.usage())
		return nil
	}
	if cmd, ok := c.find(args[0]); ok {
		return cmd.Run(ctx, e, args[1:])
	}
	return Usage("unknown command %q (run '%s --help')", args[0], c.Name)
}

func (c Commands) find(name string) (Command, bool) {
	for _, cmd := range c.List {
		if name != "" && cmd.Name == name {
			return cmd, true
		}
	}
	return Command{}, false
}

// usage is the usage text with the command list: a line a command, name
// and summary in two columns.
func (c Commands) usage() string {
	var list strings.Builder
	for _, cmd := range c.List {
		summary := strings.ReplaceAll(cmd.Summary, "\n", "\n"+strings.Repeat(" ", 13))
		fmt.Fprintf(&list, "  %-10s %s\n", cmd.Name, summary)
	}
	return fmt.Sprintf(c.Usage, list.String())
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "--h" }
