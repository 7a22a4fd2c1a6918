package cliexit

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// Flags makes a subcommand's flag set: its errors go to stderr and are
// usage errors, and its usage is usage (trimmed) followed by the flags.
func Flags(stderr io.Writer, name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "%s\n\nFlags:\n", strings.TrimSpace(usage))
		fs.PrintDefaults()
	}
	return fs
}

// Parse parses flags that may stand before, between or after positional
// arguments, and returns the positional ones (all after a "--" are). --help
// prints the usage to stdout and returns ErrHelp; a bad flag, already
// printed, returns an Error with Code 2.
func Parse(stdout io.Writer, fs *flag.FlagSet, args []string) ([]string, error) {
	for _, a := range args {
		if a == "--" {
			break
		}
		if isHelp(a) {
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, ErrHelp
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, &Error{Code: 2}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// ErrHelp ends a command successfully after --help.
var ErrHelp = &Error{Code: 0}
