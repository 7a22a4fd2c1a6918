package dosim

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"genesis.dev/fleet/internal/procgroup"
)

// hookEvent asks the hook runner to start (env set) or stop a droplet's boot
// command.
type hookEvent struct {
	droplet int
	stop    bool
	env     []string
}

type hookProc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// hookRunner owns the boot command processes, one process group per
// droplet. Its methods are called with Sim.hookMu held.
type hookRunner struct {
	command string
	out     io.Writer
	grace   time.Duration
	log     *slog.Logger
	procs   map[int]*hookProc
}

func newHookRunner(command string, out io.Writer, grace time.Duration, log *slog.Logger) *hookRunner {
	return &hookRunner{command: command, out: out, grace: grace, log: log, procs: map[int]*hookProc{}}
}

func (h *hookRunner) apply(ev hookEvent) {
	if h.command == "" {
		return
	}
	if ev.stop {
		h.stop(ev.droplet)
		return
	}
	h.stop(ev.droplet) // never two commands for one droplet
	cmd := exec.Command("sh", "-c", h.command)
	cmd.Env = append(os.Environ(), ev.env...)
	cmd.Stdout, cmd.Stderr = h.out, h.out
	if err := procgroup.Start(cmd); err != nil {
		h.log.Error("start boot hook", "droplet", ev.droplet, "err", err)
		return
	}
	p := &hookProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		h.log.Info("boot hook exited", "droplet", ev.droplet, "pid", cmd.Process.Pid, "err", err)
		close(p.done)
	}()
	h.procs[ev.droplet] = p
	h.log.Info("boot hook started", "droplet", ev.droplet, "pid", cmd.Process.Pid)
}

// stop ends the droplet's boot command and its process group (SIGTERM,
// SIGKILL after the grace period) and waits for the command to exit.
func (h *hookRunner) stop(droplet int) {
	p, ok := h.procs[droplet]
	if !ok {
		return
	}
	delete(h.procs, droplet)
	h.stopProc(droplet, p)
}

func (h *hookRunner) stopProc(droplet int, p *hookProc) {
	procgroup.Stop(p.cmd, p.done, h.grace)
	h.log.Info("boot hook stopped", "droplet", droplet, "pid", p.cmd.Process.Pid)
}

func (h *hookRunner) stopAll() {
	procs := h.procs
	h.procs = map[int]*hookProc{}
	var wg sync.WaitGroup
	for id, p := range procs {
		wg.Go(func() {
			h.stopProc(id, p)
		})
	}
	wg.Wait()
}

// running reports the pid of a droplet's boot command, or 0.
func (h *hookRunner) running(droplet int) int {
	p, ok := h.procs[droplet]
	if !ok {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}
