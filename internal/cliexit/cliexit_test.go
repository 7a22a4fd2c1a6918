package cliexit

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"testing"
)

func TestCode(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		code   int
		stderr string
	}{
		{"success", nil, 0, ""},
		{"help", fmt.Errorf("parse: %w", flag.ErrHelp), 0, ""},
		{"usage", Usage("--x: want %d", 3), 2, "tool: --x: want 3\n"},
		{"wrapped usage", fmt.Errorf("config: %w", Usage("bad")), 2, "tool: bad\n"},
		{"printed already", &Error{Code: 2}, 2, ""},
		{"own code", &Error{Code: 1, Msg: "plan refused"}, 1, "tool: plan refused\n"},
		{"other", errors.New("database down"), 1, "tool: database down\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			if got := Code("tool", tc.err, &b); got != tc.code || b.String() != tc.stderr {
				t.Errorf("Code = %d, stderr %q; want %d, %q", got, b.String(), tc.code, tc.stderr)
			}
		})
	}
	if !IsUsage(fmt.Errorf("x: %w", Usage("y"))) || IsUsage(errors.New("y")) || IsUsage(&Error{Code: 1}) {
		t.Error("IsUsage")
	}
}

func TestCommands(t *testing.T) {
	ran := func(ctx context.Context, e Env, args []string) error {
		fmt.Fprintf(e.Stdout, "ran %q", args)
		return nil
	}
	list := []Command{{Name: "go", Summary: "run it\nand more", Run: ran}}
	const usage = "Usage: tool\n\nCommands:\n  go         run it\n             and more\n"
	for _, tc := range []struct {
		name           string
		dflt           string
		args           []string
		code           int
		stdout, stderr string
	}{
		{"command", "", []string{"go", "x"}, 0, `ran ["x"]`, ""},
		{"no command", "", nil, 2, "", usage},
		{"help", "", []string{"--help"}, 0, usage, ""},
		{"help word", "", []string{"help"}, 0, usage, ""},
		{"unknown", "", []string{"stop"}, 2, "", "tool: unknown command \"stop\" (run 'tool --help')\n"},
		{"default without args", "go", nil, 0, `ran []`, ""},
		{"default with flags", "go", []string{"-v", "y"}, 0, `ran ["-v" "y"]`, ""},
		{"help with a default", "go", []string{"-h"}, 0, usage, ""},
		{"unknown with a default", "go", []string{"stop"}, 2, "", "tool: unknown command \"stop\" (run 'tool --help')\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Commands{Name: "tool", Usage: "Usage: tool\n\nCommands:\n%s", Default: tc.dflt, List: list}
			var stdout, stderr bytes.Buffer
			err := c.Run(context.Background(), tc.args, Env{Stdout: &stdout, Stderr: &stderr})
			if got := Code("tool", err, &stderr); got != tc.code || stdout.String() != tc.stdout || stderr.String() != tc.stderr {
				t.Errorf("Run(%q) = %d, stdout %q, stderr %q; want %d, %q, %q", tc.args, got, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}
}
