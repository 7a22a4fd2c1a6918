// Package cliexit is the one way the binaries start and end. Main gives a
// binary's run function the command line, the process's Env and a context
// cancelled by SIGINT or SIGTERM, and turns the error it returns into an
// exit status: 0 for success or --help, 2 for a mistake in the command line
// (Usage), an Error's own Code, else 1; the message goes to stderr prefixed
// with the binary's name, unless it was printed already (an Error with an
// empty Msg). A binary made of subcommands is a Commands table, which
// dispatches on the first argument and answers help and unknown commands
// the same way in every binary; Flags and Parse give every subcommand the
// same flag handling.
package cliexit

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Error carries a process exit status. Msg is printed by Code; empty means
// the command printed what it had to say already.
type Error struct {
	Code int
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Usage is a mistake in the command line: exit status 2.
func Usage(format string, args ...any) error {
	return &Error{Code: 2, Msg: fmt.Sprintf(format, args...)}
}

// IsUsage reports whether err is (or wraps) a command-line mistake.
func IsUsage(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == 2
}

// Code returns the exit status for err and prints its message, prefixed
// with name, to stderr.
func Code(name string, err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var e *Error
	if errors.As(err, &e) {
		if e.Msg != "" {
			fmt.Fprintln(stderr, name+":", e.Msg)
		}
		return e.Code
	}
	fmt.Fprintln(stderr, name+":", err)
	return 1
}
