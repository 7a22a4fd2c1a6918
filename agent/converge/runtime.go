package converge

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// versionFile in the state directory holds the n8n version last switched
// to (the compose file itself stays read-only to the agent).
const versionFile = "n8n-version"

// versionRE bounds what goes into an image tag.
var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+([.-][0-9A-Za-z.-]+)?$`)

// Compose runs n8n through the droplet's compose stack
// (deploy/droplet/compose.yaml): N8N_VERSION=<version> docker compose -p
// <project> -f <file> up -d n8n, then waits for readiness. The converger
// decides what a failure means (see the package doc, "n8n upgrades").
type Compose struct {
	// File is the compose file; default /opt/genesis/compose.yaml.
	File string
	// Project is the compose project; default "genesis".
	Project string
	// Dir is the agent's state directory (the pinned version is kept there).
	Dir string
	// Ready waits until n8n is ready or ctx ends.
	Ready func(ctx context.Context) error
	// Running asks n8n its version; Current uses it before the first
	// switch (nil: "").
	Running func(ctx context.Context) (string, error)
	// Docker is the docker CLI; default "docker" (found in PATH).
	Docker string
	// ReadyTimeout bounds the wait after a switch; default 5 minutes.
	ReadyTimeout time.Duration
	// Exec runs a command with extra environment and returns its combined
	// output; default os/exec.
	Exec func(ctx context.Context, env []string, name string, args ...string) ([]byte, error)
}

// Current is the version last switched to, or before the first switch
// the version n8n reports.
func (c *Compose) Current(ctx context.Context) (string, error) {
	data, err := os.ReadFile(filepath.Join(c.Dir, versionFile))
	if errors.Is(err, fs.ErrNotExist) {
		if c.Running == nil {
			return "", nil
		}
		return c.Running(ctx)
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(data)), nil
}

// Committed is the version last switched to (false: none yet, the
// droplet's n8n has never been switched by the agent).
func (c *Compose) Committed() (string, bool) {
	data, err := os.ReadFile(filepath.Join(c.Dir, versionFile))
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(data)), true
}

// SwitchTo runs n8n at version (docker compose up recreates the container
// when the version, its image, changed) and waits until it is ready. It
// does not record the version (Commit does) and does not go back on
// failure (the converger undoes a failed switch).
func (c *Compose) SwitchTo(ctx context.Context, version string) error {
	if !versionRE.MatchString(version) {
		return fmt.Errorf("n8n version %q: not a release version", version)
	}
	if err := c.up(ctx, version); err != nil {
		return err
	}
	if err := c.waitReady(ctx); err != nil {
		return fmt.Errorf("n8n %s not ready: %w", version, err)
	}
	return nil
}

// Commit records version as the one n8n runs (the version file).
func (c *Compose) Commit(_ context.Context, version string) error {
	if !versionRE.MatchString(version) {
		return fmt.Errorf("n8n version %q: not a release version", version)
	}
	return os.WriteFile(filepath.Join(c.Dir, versionFile), []byte(version+"\n"), 0o600)
}

// Stop stops n8n's container: docker compose -p <project> -f <file> stop
// n8n (compose sends SIGTERM and waits for n8n's graceful shutdown). On a
// droplet whose n8n the agent never started (a new one: n8n starts with
// its first manifest, after the restore that manifest may ask for) there
// is nothing to stop unless its container runs: done.
func (c *Compose) Stop(ctx context.Context) error {
	if c.neverStarted(ctx) {
		return nil
	}
	return c.compose(ctx, "stop")
}

// Start starts n8n's stopped container again (docker compose start n8n)
// and waits until it is ready. On a droplet whose n8n the agent never
// started there is nothing to start again: the first manifest's apply
// starts it at its version.
func (c *Compose) Start(ctx context.Context) error {
	if c.neverStarted(ctx) {
		return nil
	}
	if err := c.compose(ctx, "start"); err != nil {
		return err
	}
	return c.waitReady(ctx)
}

// neverStarted reports whether the agent never started n8n here (no
// committed version) and its container does not run (compose says so);
// when compose cannot tell, false (the caller's compose command says
// what is wrong).
func (c *Compose) neverStarted(ctx context.Context) bool {
	if _, ok := c.Committed(); ok {
		return false
	}
	up, err := c.ContainerUp(ctx)
	return err == nil && !up
}

// ContainerUp reports whether n8n's container runs (docker compose ps -q
// n8n prints its id): false for one that exited — crashed or killed —
// which ProbeN8N starts again.
func (c *Compose) ContainerUp(ctx context.Context) (bool, error) {
	run := c.Exec
	if run == nil {
		run = execCommand
	}
	args := []string{"compose", "-p", cmp.Or(c.Project, "genesis"), "-f", cmp.Or(c.File, "/opt/genesis/compose.yaml"), "ps", "-q", "n8n"}
	out, err := run(ctx, nil, cmp.Or(c.Docker, "docker"), args...)
	if err != nil {
		return false, fmt.Errorf("docker compose ps n8n: %w: %s", err, bytes.TrimSpace(out))
	}
	return len(bytes.TrimSpace(out)) > 0, nil
}

// Recreate runs docker compose up -d --no-deps n8n at the pinned version
// and waits until n8n is ready: compose recreates n8n's container when its
// configuration changed, such as the database password it interpolates
// from the project's .env (a secret rotation's, see DBPassword). --no-deps
// leaves Postgres alone: its service interpolates the same variable, and
// recreating it would only restart the database (the password it was
// initialized with no longer matters once the role's is set).
func (c *Compose) Recreate(ctx context.Context) error {
	if err := c.compose(ctx, "up", "-d", "--no-deps"); err != nil {
		return err
	}
	if err := c.waitReady(ctx); err != nil {
		return fmt.Errorf("n8n not ready: %w", err)
	}
	return nil
}

// compose runs docker compose <verb...> n8n with the pinned version in the
// environment (the compose file interpolates it).
func (c *Compose) compose(ctx context.Context, verb ...string) error {
	run := c.Exec
	if run == nil {
		run = execCommand
	}
	version, err := c.Current(ctx)
	if err != nil {
		return err
	}
	var env []string
	if versionRE.MatchString(version) {
		env = append(env, "N8N_VERSION="+version)
	}
	args := append(append([]string{"compose", "-p", cmp.Or(c.Project, "genesis"), "-f", cmp.Or(c.File, "/opt/genesis/compose.yaml")}, verb...), "n8n")
	out, err := run(ctx, env, cmp.Or(c.Docker, "docker"), args...)
	if err != nil {
		out = bytes.TrimSpace(out)
		if len(out) > 500 {
			out = out[len(out)-500:]
		}
		return fmt.Errorf("docker compose %s n8n: %w: %s", strings.Join(verb, " "), err, out)
	}
	return nil
}

func (c *Compose) up(ctx context.Context, version string) error {
	run := c.Exec
	if run == nil {
		run = execCommand
	}
	args := []string{"compose", "-p", cmp.Or(c.Project, "genesis"), "-f", cmp.Or(c.File, "/opt/genesis/compose.yaml"), "up", "-d", "n8n"}
	out, err := run(ctx, []string{"N8N_VERSION=" + version}, cmp.Or(c.Docker, "docker"), args...)
	if err != nil {
		out = bytes.TrimSpace(out)
		if len(out) > 500 {
			out = out[len(out)-500:]
		}
		return fmt.Errorf("docker compose up n8n %s: %w: %s", version, err, out)
	}
	return nil
}

func (c *Compose) waitReady(ctx context.Context) error {
	if c.Ready == nil {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, cmp.Or(c.ReadyTimeout, 5*time.Minute))
	defer cancel()
	return c.Ready(wctx)
}

func execCommand(ctx context.Context, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}
