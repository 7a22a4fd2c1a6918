// Package supervise keeps a process running the way systemd's
// Restart=always does, where there is no systemd: the demo's simulated
// droplets and the agent's upgrade tests run genesis-agent under it. The
// path is executed anew at every start, so a symlink switched in between
// (the agent's <root>/current) takes effect at the next start; an exit of
// any kind is followed, after Delay, by a new start; Restart asks the
// running process to exit (SIGTERM) so it starts again. Each process leads
// a process group of its own, stopped with it (internal/procgroup).
package supervise

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"genesis.dev/fleet/internal/procgroup"
)

// Config is what to run and how.
type Config struct {
	Path           string
	Args           []string
	Env            []string
	Stdout, Stderr io.Writer
	// Delay is the wait before a start after an exit (RestartSec);
	// default 1s.
	Delay time.Duration
	// Grace is how long the process gets after SIGTERM when Run stops;
	// default 5s.
	Grace time.Duration
	// Attr gives each start's SysProcAttr (nil: none).
	Attr   func() *syscall.SysProcAttr
	Logger *slog.Logger
	// OnStart is called with each started process's pid.
	OnStart func(pid int)
	// RestartIf says whether an exit (cmd.Wait's error) is followed by a
	// new start; nil: always. Run returns at the first exit it refuses.
	RestartIf func(err error) bool
}

// Supervisor runs one process at a time, restarting it.
type Supervisor struct {
	cfg Config

	mu     sync.Mutex
	cmd    *exec.Cmd
	starts int
}

// New makes a Supervisor; Run starts it.
func New(cfg Config) *Supervisor {
	if cfg.Delay <= 0 {
		cfg.Delay = time.Second
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = cfg.Logger.With("component", "supervise", "path", cfg.Path)
	return &Supervisor{cfg: cfg}
}

// Run starts the process and starts it again after every exit until ctx
// ends (then it stops the running one and returns nil) or RestartIf
// refuses an exit (then it returns that exit's error). A start that fails
// (the path missing) is retried after Delay too.
func (s *Supervisor) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		cmd := exec.Command(s.cfg.Path, s.cfg.Args...)
		cmd.Env = s.cfg.Env
		cmd.Stdout, cmd.Stderr = s.cfg.Stdout, s.cfg.Stderr
		if s.cfg.Attr != nil {
			cmd.SysProcAttr = s.cfg.Attr()
		}
		if err := procgroup.Start(cmd); err != nil {
			s.cfg.Logger.Error("start failed", "err", err, "retry_in", s.cfg.Delay)
		} else {
			s.mu.Lock()
			s.cmd = cmd
			s.starts++
			s.mu.Unlock()
			if s.cfg.OnStart != nil {
				s.cfg.OnStart(cmd.Process.Pid)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			var exit error
			select {
			case exit = <-done:
			case <-ctx.Done():
				procgroup.Stop(cmd, done, s.cfg.Grace)
			}
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			if ctx.Err() == nil {
				if s.cfg.RestartIf != nil && !s.cfg.RestartIf(exit) {
					s.cfg.Logger.Warn("process exited; not restarting", "pid", cmd.Process.Pid, "err", exit)
					return exit
				}
				s.cfg.Logger.Warn("process exited; restarting", "pid", cmd.Process.Pid, "err", exit, "restart_in", s.cfg.Delay)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(s.cfg.Delay):
		}
	}
	return nil
}

// Restart asks the running process to exit (SIGTERM to its group); Run
// starts the path again after Delay.
func (s *Supervisor) Restart() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	}
}

// Starts is how many times the process was started.
func (s *Supervisor) Starts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}
