package tenants

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// newRepo makes an empty repository on branch main.
func newRepo(tb testing.TB) *testkit.StateRepo { return testkit.NewStateRepo(tb) }

// newExampleRepo makes a repository holding state-example's state files in
// one commit.
func newExampleRepo(tb testing.TB) *testkit.StateRepo {
	tb.Helper()
	r := testkit.NewStateRepo(tb)
	r.CopyExample("genesis.yaml", "tenants", "templates")
	r.Commit("example state")
	return r
}

// tenant is a minimal valid tenant of these tests: "Tenant <id>", starter.
func tenant(id, region string, domains ...string) *schema.Tenant {
	t := testkit.Tenant(id, region)
	t.Metadata.Name, t.Metadata.Tier, t.Spec.Domains = "Tenant "+id, schema.TierStarter, domains
	return t
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
		y := testkit.TenantYAML(tenant(id, regions[i%len(regions)], fmt.Sprintf("t%06d.example.com", i)))
		if err := os.WriteFile(filepath.Join(dir, "tenants", id+".yaml"), []byte(y), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// newGenRepo makes a repository with state-example's fleet and templates and
// n generated tenants, in one commit.
func newGenRepo(tb testing.TB, n int) *testkit.StateRepo {
	tb.Helper()
	r := newRepo(tb)
	r.CopyExample("genesis.yaml", "templates")
	genTenants(tb, r.Dir, n)
	r.Commit(fmt.Sprintf("%d tenants", n))
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
