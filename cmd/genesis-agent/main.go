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
	"runtime/debug"

	"genesis.dev/fleet/internal/cliexit"
)

func main() { cliexit.Main("genesis-agent", program.Run) }

// program is genesis-agent: its commands and usage.
var program = cliexit.Commands{
	Name:  "genesis-agent",
	Usage: usageText,
	List: []cliexit.Command{
		{Name: "run", Summary: "enroll, then pull and apply manifests and send heartbeats", Run: runAgent},
		{Name: "keys", Summary: "make the droplet's keys in a state directory if missing; print\nthe age recipient and the ed25519 public key", Run: runKeys},
		{Name: "verify", Summary: "judge one manifest envelope (stdin) exactly as run does; record\nit in the state directory if accepted", Run: runVerify},
		{Name: "upgrade-watch", Summary: "judge a pending agent upgrade: commit it once the new build\nreported healthy, else roll back (started by run, not by hand)", Run: runUpgradeWatch},
		{Name: "version", Summary: "print the agent's version", Run: func(_ context.Context, e cliexit.Env, _ []string) error {
			fmt.Fprintln(e.Stdout, agentVersion())
			return nil
		}},
	},
}

const usageText = `Usage: genesis-agent COMMAND [flags]

Commands:
%s
Run "genesis-agent COMMAND --help" for a command's flags.
`

// newFlags makes a subcommand's flag set. The flag package's own usage
// printing is off: parse prints the usage where it belongs.
func newFlags(e cliexit.Env, name, usage string) *cmdFlags {
	fs := flag.NewFlagSet("genesis-agent "+name, flag.ContinueOnError)
	fs.SetOutput(e.Stderr)
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
func parse(e cliexit.Env, fs *cmdFlags, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.printUsage(e.Stdout)
			return flag.ErrHelp
		}
		fs.printUsage(e.Stderr)
		return &cliexit.Error{Code: 2}
	}
	if fs.NArg() > 0 {
		return cliexit.Usage("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return nil
}

// buildVersion, when set at build time (-ldflags "-X
// main.buildVersion=1.4.0"), is the agent's version; agent pins name it.
var buildVersion string

// crashAtStart, set at build time to anything (-X main.crashAtStart=yes),
// makes run exit 1 at once: the crashing build the upgrade tests roll back.
var crashAtStart string

// agentVersion is "genesis-agent/" and buildVersion, else the module
// version and VCS revision the binary was built from.
func agentVersion() string {
	if buildVersion != "" {
		return "genesis-agent/" + buildVersion
	}
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
