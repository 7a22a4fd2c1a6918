package testkit

import (
	"os/exec"
	"syscall"
	"time"
)

// StartGroup starts cmd as the leader of a new process group, so that
// StopGroup also reaches the children it spawns.
func StartGroup(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return cmd.Start()
}

// StopGroup ends the process group that cmd leads (see StartGroup):
// SIGTERM, then SIGKILL when exited has not delivered within grace, and
// after the leader is gone a last SIGKILL for whatever the group left
// behind. exited is the channel the caller's cmd.Wait goroutine sends on or
// closes. StopGroup reports whether the leader had to be killed.
func StopGroup[T any](cmd *exec.Cmd, exited <-chan T, grace time.Duration) (killed bool) {
	pgid := cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		killed = true
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-exited
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return killed
}
