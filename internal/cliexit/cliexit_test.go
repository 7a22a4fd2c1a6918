package cliexit

import (
	"bytes"
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
