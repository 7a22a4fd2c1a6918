package agent

import (
	"errors"
	"fmt"
	"testing"
)

type stepErr string

func (e stepErr) Error() string     { return "failed: " + string(e) }
func (e stepErr) ApplyStep() string { return string(e) }

func TestStepLabel(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{stepErr("caddy"), "caddy"},
		{&ApplyError{Version: 3, Err: fmt.Errorf("converge: %w", stepErr("workflows"))}, "workflows"},
		{&ApplyError{Version: 3, Err: errors.New("disk full")}, "other"},
	} {
		if got := stepLabel(tc.err); got != tc.want {
			t.Errorf("stepLabel(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
