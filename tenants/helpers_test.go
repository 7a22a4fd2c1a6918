package tenants

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gitEnv isolates the git CLI from the machine's configuration.
func gitEnv() []string {
	return append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com",
		// No background "gc --auto" racing a test or a benchmark.
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=gc.auto", "GIT_CONFIG_VALUE_0=0",
	)
}

// runGit runs the git CLI in dir and returns its trimmed output.
func runGit(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = gitEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// stateRepo is a work tree of a git state repository for a test.
type stateRepo struct {
	tb  testing.TB
	dir string
}

// newRepo makes an empty repository on branch main.
func newRepo(tb testing.TB) *stateRepo {
	tb.Helper()
	dir := tb.TempDir()
	runGit(tb, dir, "init", "-q", "-b", "main")
	return &stateRepo{tb: tb, dir: dir}
}

// newExampleRepo makes a repository holding state-example's state files in
// one commit.
func newExampleRepo(tb testing.TB) *stateRepo {
	tb.Helper()
	r := newRepo(tb)
	copyTree(tb, "../state-example/genesis.yaml", filepath.Join(r.dir, "genesis.yaml"))
	copyTree(tb, "../state-example/tenants", filepath.Join(r.dir, "tenants"))
	copyTree(tb, "../state-example/templates", filepath.Join(r.dir, "templates"))
	r.commit("example state")
	return r
}

func copyTree(tb testing.TB, from, to string) {
	tb.Helper()
	err := filepath.Walk(from, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, data, 0o644)
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func (r *stateRepo) write(path, content string) {
	r.tb.Helper()
	p := filepath.Join(r.dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.tb.Fatal(err)
	}
}

func (r *stateRepo) read(path string) string {
	r.tb.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, filepath.FromSlash(path)))
	if err != nil {
		r.tb.Fatal(err)
	}
	return string(b)
}

func (r *stateRepo) remove(path string) {
	r.tb.Helper()
	if err := os.Remove(filepath.Join(r.dir, filepath.FromSlash(path))); err != nil {
		r.tb.Fatal(err)
	}
}

// commit commits everything in the work tree and returns the commit hash.
func (r *stateRepo) commit(msg string) string {
	r.tb.Helper()
	runGit(r.tb, r.dir, "add", "-A")
	runGit(r.tb, r.dir, "commit", "-q", "--allow-empty", "-m", msg)
	return runGit(r.tb, r.dir, "rev-parse", "HEAD")
}

// tenantYAML is a minimal valid tenant.
func tenantYAML(id, region string, domains ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: genesis.dev/v1\nkind: Tenant\nmetadata:\n  id: %s\n  name: Tenant %s\n  tier: starter\nspec:\n  state: running\n  droplet:\n    region: %s\n", id, id, region)
	if len(domains) > 0 {
		b.WriteString("  domains:\n")
		for _, d := range domains {
			fmt.Fprintf(&b, "    - %s\n", d)
		}
	}
	return b.String()
}

// genTenants writes n generated tenants into dir/tenants (ids ws-gen-000000…).
func genTenants(tb testing.TB, dir string, n int) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "tenants"), 0o755); err != nil {
		tb.Fatal(err)
	}
	regions := []string{"nyc1", "nyc3", "fra1", "ams3"}
	for i := range n {
		id := fmt.Sprintf("ws-gen-%06d", i)
		y := tenantYAML(id, regions[i%len(regions)], fmt.Sprintf("t%06d.example.com", i))
		if err := os.WriteFile(filepath.Join(dir, "tenants", id+".yaml"), []byte(y), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// newGenRepo makes a repository with state-example's fleet and templates and
// n generated tenants, in one commit.
func newGenRepo(tb testing.TB, n int) *stateRepo {
	tb.Helper()
	r := newRepo(tb)
	copyTree(tb, "../state-example/genesis.yaml", filepath.Join(r.dir, "genesis.yaml"))
	copyTree(tb, "../state-example/templates", filepath.Join(r.dir, "templates"))
	genTenants(tb, r.dir, n)
	r.commit(fmt.Sprintf("%d tenants", n))
	return r
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openLocal(tb testing.TB, dir string) *Source {
	tb.Helper()
	s, err := Open(Config{Repo: dir, Logger: quietLogger()})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func mustSync(tb testing.TB, s Syncer) Snapshot {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	snap, err := s.Sync(ctx)
	if err != nil {
		tb.Fatalf("Sync: %v", err)
	}
	return snap
}

func statuses(s Snapshot) map[string]Status {
	m := map[string]Status{}
	for id, t := range s.Tenants {
		m[id] = t.Status
	}
	return m
}
