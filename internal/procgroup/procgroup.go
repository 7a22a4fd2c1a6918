// Package procgroup stops a child process and what it spawned. Start makes
// the command the leader of a process group of its own, so that a signal
// sent to the group reaches its children and theirs; Stop asks politely
// (SIGTERM), waits a grace period for the leader to exit, then SIGKILLs,
// and after the leader is gone SIGKILLs whatever the group left behind. A
// command started without a group of its own is stopped the same way, the
// signals going to its process alone.
//
// The simulator's boot hooks, the demo's simulated droplet and the tests'
// real n8n stop their children through it.
package procgroup

import (
	"os/exec"
	"syscall"
	"time"
)

// Start starts cmd as the leader of a new process group.
func Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	return cmd.Start()
}

// Stop ends cmd, and its process group when it leads one (see Start):
// SIGTERM, then SIGKILL when exited has not delivered within grace, and for
// a group, after the leader is gone, a last SIGKILL for whatever the group
// left behind. exited is the channel the caller's cmd.Wait goroutine sends
// on or closes. Stop reports whether the leader had to be killed.
func Stop[T any](cmd *exec.Cmd, exited <-chan T, grace time.Duration) (killed bool) {
	target := cmd.Process.Pid
	group := cmd.SysProcAttr != nil && cmd.SysProcAttr.Setpgid
	if group {
		target = -target
	}
	_ = syscall.Kill(target, syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		killed = true
		_ = syscall.Kill(target, syscall.SIGKILL)
		<-exited
	}
	if group {
		// A lone process is reaped, and its pid may be another's by now; a
		// group's id is not reused while the group has members.
		_ = syscall.Kill(target, syscall.SIGKILL)
	}
	return killed
}
