package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// composeN8N runs a simulated droplet's n8n the way a real droplet does:
// through docker compose (the docker CLI emulator, fakes/dockersim, as
// DIR/bin/docker) from DIR/compose.yaml, so the agent switches its version
// with --n8n-runtime compose. Its state lives in its database (the
// droplet's Postgres database, else a file in DIR/n8n-data) and survives
// restarts, version switches and reboots.
type composeN8N struct {
	disk, exe string
	file      string
	env       []string // the agent's and the CLI's environment
	url       string
}

// defaultN8NVersion is what a droplet runs before its first manifest (the
// compose file's default, as in deploy/droplet/compose.yaml).
const defaultN8NVersion = "1.123.81"

// newComposeN8N writes the compose file and the docker link; db is the
// droplet's database URL ("" for none).
func newComposeN8N(disk, db string) (*composeN8N, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	port, err := freePortOn("127.0.0.1")
	if err != nil {
		return nil, err
	}
	data := filepath.Join(disk, "n8n-data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	env := fmt.Sprintf("      N8N_PORT: %d\n      N8N_LISTEN_ADDRESS: 127.0.0.1\n      N8N_USER_FOLDER: %s\n", port, data)
	if db != "" {
		u, err := url.Parse(db)
		if err != nil {
			return nil, err
		}
		pw, _ := u.User.Password()
		env += fmt.Sprintf("      DB_TYPE: postgresdb\n      DB_POSTGRESDB_HOST: %q\n      DB_POSTGRESDB_PORT: %q\n      DB_POSTGRESDB_DATABASE: %q\n      DB_POSTGRESDB_USER: %q\n      DB_POSTGRESDB_PASSWORD: %q\n",
			u.Hostname(), u.Port(), strings.TrimPrefix(u.Path, "/"), u.User.Username(), pw)
	}
	c := &composeN8N{disk: disk, exe: exe, file: filepath.Join(disk, "compose.yaml"), url: "http://127.0.0.1:" + strconv.Itoa(port)}
	body := "name: genesis\nservices:\n  n8n:\n    image: docker.n8n.io/n8nio/n8n:${N8N_VERSION:-" + defaultN8NVersion + "}\n    environment:\n" + env
	if err := os.WriteFile(c.file, []byte(body), 0o600); err != nil {
		return nil, err
	}
	bin := filepath.Join(disk, "bin")
	if err := os.MkdirAll(bin, 0o700); err != nil {
		return nil, err
	}
	link := filepath.Join(bin, "docker")
	os.Remove(link)
	if err := os.Symlink(exe, link); err != nil {
		return nil, err
	}
	c.env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"DOCKERSIM_STATE="+filepath.Join(disk, "docker"), "DOCKERSIM_N8N_BIN="+exe)
	return c, nil
}

// compose runs docker compose verb n8n with the version the agent last
// committed (its state dir's n8n-version), else the default.
func (c *composeN8N) compose(ctx context.Context, verb ...string) error {
	version := defaultN8NVersion
	if b, err := os.ReadFile(filepath.Join(c.disk, "genesis-agent", "n8n-version")); err == nil {
		version = strings.TrimSpace(string(b))
	}
	args := append([]string{"compose", "-p", "genesis", "-f", c.file}, verb...)
	cmd := exec.CommandContext(ctx, filepath.Join(c.disk, "bin", "docker"), args...)
	cmd.Env = append(c.env, "N8N_VERSION="+version)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("docker compose %s: %w: %s", strings.Join(verb, " "), err, out)
	}
	return nil
}

// agentArgs are the agent's n8n flags. The simulated stack has n8n only
// (its state in a file or the droplet's database, no postgres service):
// no postgres probe.
func (c *composeN8N) agentArgs() []string {
	return []string{"--n8n-runtime", "compose", "--compose-file", c.file, "--n8n-url", c.url, "--postgres-probe", "none"}
}

// stop stops the container (it is kept, like on a droplet).
func (c *composeN8N) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return c.compose(ctx, "stop", "n8n")
}
