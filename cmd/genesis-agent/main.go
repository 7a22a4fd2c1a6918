// Command genesis-agent runs on every droplet: it enrolls with the
// reconciler, pulls and verifies the droplet's signed manifest, applies it,
// and sends heartbeats (package agent). Its verify subcommand is the
// conformance seam of the verifier: it judges one envelope exactly as the
// running agent does.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"genesis.dev/fleet/internal/cliexit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(cliexit.Code("genesis-agent", err, os.Stderr))
}

const usageText = `Usage: genesis-agent COMMAND [flags]

Commands:
  run      enroll, then pull and apply manifests and send heartbeats
  keys     make the droplet's keys in a state directory if missing; print
           the age recipient and the ed25519 public key
  verify   judge one manifest envelope (stdin) exactly as run does; record
           it in the state directory if accepted
  version  print the agent's version

Run "genesis-agent COMMAND --help" for a command's flags.
`

// env is what every subcommand gets.
type env struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	e := env{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return &cliexit.Error{Code: 2}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return nil
	case "run":
		return runAgent(ctx, e, args[1:])
	case "keys":
		return runKeys(e, args[1:])
	case "verify":
		return runVerify(ctx, e, args[1:])
	case "version":
		fmt.Fprintln(stdout, agentVersion())
		return nil
	}
	fmt.Fprint(stderr, usageText)
	return cliexit.Usage("unknown command %q", args[0])
}

// newFlags makes a subcommand's flag set. The flag package's own usage
// printing is off: parse prints the usage where it belongs.
func newFlags(e env, name, usage string) *cmdFlags {
	fs := flag.NewFlagSet("genesis-agent "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {}
	return &cmdFlags{FlagSet: fs, usage: usage}
}

// cmdFlags is a subcommand's flags and usage text.
type cmdFlags struct {
	*flag.FlagSet
	usage string
}

// printUsage writes the usage text and flags to w.
func (fs *cmdFlags) printUsage(w io.Writer) {
	fs.SetOutput(w)
	fmt.Fprintln(w, fs.usage)
	fmt.Fprintln(w, "\nFlags:")
	fs.PrintDefaults()
}

// parse parses a subcommand's flags; --help prints the usage to stdout, a
// mistake prints it to stderr (exit status 2).
func parse(e env, fs *cmdFlags, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.printUsage(e.stdout)
			return flag.ErrHelp
		}
		fs.printUsage(e.stderr)
		return &cliexit.Error{Code: 2}
	}
	if fs.NArg() > 0 {
		return cliexit.Usage("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return nil
}

// agentVersion is the module version and VCS revision the binary was built
// from.
func agentVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "genesis-agent/dev"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "dev"
	}
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return "genesis-agent/" + v
}
