package procgroup

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"genesis.dev/fleet/internal/testkit"
)

// TestStop: a group that heeds SIGTERM stops without a kill; one that
// ignores it is killed after the grace period, children included.
func TestStop(t *testing.T) {
	for _, tc := range []struct {
		script string
		killed bool
	}{
		{"sleep 100 & wait", false},
		{`trap "" TERM; sleep 100 & echo $! > "$PIDFILE"; wait`, true},
	} {
		t.Run(tc.script, func(t *testing.T) {
			pidfile := t.TempDir() + "/child"
			cmd := exec.Command("sh", "-c", tc.script)
			cmd.Env = append(os.Environ(), "PIDFILE="+pidfile)
			if err := Start(cmd); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { cmd.Wait(); close(exited) }()
			if tc.killed {
				testkit.WaitFor(t, "the child's pid", func() bool { _, err := os.Stat(pidfile); return err == nil })
			} else {
				time.Sleep(50 * time.Millisecond)
			}
			if got := Stop(cmd, exited, 300*time.Millisecond); got != tc.killed {
				t.Errorf("killed = %v, want %v", got, tc.killed)
			}
			if b, err := os.ReadFile(pidfile); err == nil {
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				testkit.WaitFor(t, "the child to be gone", func() bool { return syscall.Kill(pid, 0) != nil })
			}
		})
	}
}
