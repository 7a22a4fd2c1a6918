package probe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"genesis.dev/fleet/schema"
)

// PostgresQuery is what the Postgres probe sends, and PostgresAnswer the
// row it wants back.
const (
	PostgresQuery  = "SELECT 1;\n"
	PostgresAnswer = "1"
)

// DefaultPostgres is the command the Postgres probe runs on a droplet: psql
// in the compose stack's postgres service, as n8n's user on its database.
func DefaultPostgres(docker, project, file string) []string {
	return []string{docker, "compose", "-p", project, "-f", file, "exec", "-T", "postgres", "psql", "-U", "n8n", "-d", "n8n", "-tA"}
}

// Postgres checks that n8n's database answers a query.
type Postgres struct {
	// Argv is a command that reads SQL on stdin and prints the rows
	// unaligned, without headers (psql -tA ...). It may hold a
	// connection string: it never goes into a detail.
	Argv []string
}

// Probe runs the query; OK when the command prints exactly the expected
// row before ctx ends.
func (p Postgres) Probe(ctx context.Context) schema.ComponentHealth {
	if len(p.Argv) == 0 {
		return schema.ComponentHealth{OK: false, Detail: "postgres probe: no command"}
	}
	start := time.Now()
	stdout, stderr, err := run(ctx, p.Argv, []byte(PostgresQuery))
	switch {
	case ctx.Err() != nil:
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("postgres did not answer SELECT 1 within %s: %v", time.Since(start).Round(time.Millisecond), ctx.Err())}
	case err != nil:
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("postgres query failed: %v%s", err, tail(stderr))}
	}
	if got := strings.TrimSpace(string(stdout)); got != PostgresAnswer {
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("postgres answered %q to SELECT 1, want %q%s", clip(got, 100), PostgresAnswer, tail(stderr))}
	}
	return schema.ComponentHealth{OK: true}
}

// maxOutput bounds what is kept of a probe command's output.
const maxOutput = 1 << 20

// run runs argv with stdin until it exits or ctx ends (then it is killed,
// and its pipes are given up a second later).
func run(ctx context.Context, argv []string, stdin []byte) (stdout, stderr []byte, err error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = time.Second
	var out, errb capped
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(stdin), &out, &errb
	err = cmd.Run()
	if out.over {
		err = errors.Join(err, fmt.Errorf("more than %d bytes of output", maxOutput))
	}
	return out.buf.Bytes(), errb.buf.Bytes(), err
}

// capped keeps the first maxOutput bytes written to it.
type capped struct {
	buf  bytes.Buffer
	over bool
}

func (c *capped) Write(p []byte) (int, error) {
	if room := maxOutput - c.buf.Len(); len(p) > room {
		c.buf.Write(p[:room])
		c.over = true
		return len(p), nil
	}
	return c.buf.Write(p)
}

// tail is the end of a command's stderr as "; stderr: ..." (one line, at
// most 300 bytes), or "".
func tail(stderr []byte) string {
	s := strings.Join(strings.Fields(string(stderr)), " ")
	if s == "" {
		return ""
	}
	if len(s) > 300 {
		s = "…" + s[len(s)-300:]
	}
	return "; stderr: " + s
}

// clip shortens s to n bytes.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
