package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"genesis.dev/fleet/agent"
	"genesis.dev/fleet/internal/cliexit"
	"genesis.dev/fleet/internal/logflag"
)

// exitRestart is run's exit status after it switched to a new agent build:
// the service manager (systemd's Restart=always) starts the new one.
const exitRestart = 3

const upgradeWatchUsage = `Usage: genesis-agent upgrade-watch --pending FILE [flags]

Judges one pending agent upgrade. "genesis-agent run" starts it from the
old build, before it switches <agent-root>/current to the new build and
exits (in production as a transient systemd unit, genesis-agent-upgrade-watch;
under the simulator as a detached process). It holds <agent-root>/watch.lock
until it is done, and waits until the new build writes agent-healthy.json
with its version in the state directory (after the first heartbeat the
reconciler accepted), then commits: the pending file is removed and the old
slot kept as the fallback. If the deadline in the pending file passes first
(a build that crashes at start included), it records the rejection in the
state directory's rejections.json, switches current back to the old slot,
removes the pending file and runs the pending file's restart command
(systemctl restart genesis-agent.service), so the old build runs again and
reports the rejection in its heartbeats. Stopped early (SIGTERM), it leaves
the pending file to the next agent start.`

func runUpgradeWatch(ctx context.Context, e cliexit.Env, args []string) error {
	fs := newFlags(e, "upgrade-watch", upgradeWatchUsage)
	pending := fs.String("pending", "", "the pending upgrade `file` (<agent-root>/pending.json)")
	poll := fs.Duration("poll", time.Second, "how often to look for the new build's healthy marker")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	logFormat := fs.String("log-format", "text", "log `format`: text or json")
	if err := parse(e, fs, args); err != nil {
		return err
	}
	log, err := logflag.New(e.Stderr, *logFormat, *logLevel)
	if err != nil {
		return cliexit.Usage("%v", err)
	}
	if *pending == "" || *poll <= 0 {
		return cliexit.Usage("upgrade-watch: --pending is required and --poll must be positive")
	}
	return agent.Watch(ctx, agent.WatchConfig{Slots: agent.Slots{Root: filepath.Dir(*pending)}, Poll: *poll, Logger: log})
}

// watcherStarter starts the old build's upgrade-watch so that it outlives
// run: "systemd-run" as a transient unit, "detached" as a process in a
// session of its own logging to <agent-root>/upgrade-watch.log (the
// simulator and tests).
func watcherStarter(mode, logFormat string) func(ctx context.Context, old, pending string) error {
	args := func(old, pending string) []string {
		return []string{old, "upgrade-watch", "--pending", pending, "--log-format", logFormat}
	}
	if mode == "detached" {
		return func(_ context.Context, old, pending string) error {
			logf, err := os.OpenFile(filepath.Join(filepath.Dir(pending), agent.WatchLogFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			defer logf.Close()
			a := args(old, pending)
			cmd := exec.Command(a[0], a[1:]...)
			cmd.Env = os.Environ()
			cmd.Stdout, cmd.Stderr = logf, logf
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			if err := cmd.Start(); err != nil {
				return err
			}
			return cmd.Process.Release()
		}
	}
	return func(ctx context.Context, old, pending string) error {
		sctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		argv := append([]string{"--unit", "genesis-agent-upgrade-watch", "--collect", "--quiet", "--"}, args(old, pending)...)
		if out, err := exec.CommandContext(sctx, "systemd-run", argv...).CombinedOutput(); err != nil {
			return fmt.Errorf("systemd-run: %w: %s", err, strings.TrimSpace(string(out)))
		}
		return nil
	}
}
