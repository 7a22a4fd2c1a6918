package testkit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"
)

// The module-wide guard tests: the dependency boundaries of the
// architecture (STYLE.md point 13) and a package doc comment on every
// package (point 3). They read `go list -json ./...` once, so they see the
// module as it is built, not as a list kept by hand.

const module = "genesis.dev/fleet"

// goPackage is what the guards read of `go list -json`.
type goPackage struct {
	ImportPath string
	Name       string
	Doc        string
	Deps       []string // every package it links, transitively (tests aside)
}

// listModule lists every package of the module with its dependencies.
func listModule(t *testing.T) []goPackage {
	t.Helper()
	cmd := exec.Command("go", "list", "-json=ImportPath,Name,Doc,Deps", "./...")
	cmd.Dir = ModuleRoot(t)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	var pkgs []goPackage
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p goPackage
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decode go list: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// under reports whether pkg is the module's package rel or below it.
func under(pkg, rel string) bool {
	p := module + "/" + rel
	return pkg == p || strings.HasPrefix(pkg, p+"/")
}

// hasPrefix reports whether dep is one of the import paths in list or
// below one of them.
func hasPrefix(dep string, list ...string) bool {
	for _, p := range list {
		if dep == p || strings.HasPrefix(dep, p+"/") {
			return true
		}
	}
	return false
}

// testHelper reports whether pkg is test scaffolding (dosimtest, pgtest,
// caddytest, testkit, …): linked into test binaries only.
func testHelper(pkg string) bool {
	base := path.Base(pkg)
	return strings.HasSuffix(base, "test") || base == "testkit"
}

// clients are the outside systems' clients that only the control plane
// links.
var clients = []string{"github.com/jackc/pgx", "github.com/digitalocean/godo", "github.com/go-git/go-git"}

// boundary is one rule: no package that applies may link a forbidden
// dependency.
type boundary struct {
	name      string
	applies   func(pkg string) bool
	forbidden func(dep string) bool
}

var boundaries = []boundary{
	{
		name:    "the planner is pure: reconciler/plan and reconciler/rollout do no I/O",
		applies: func(p string) bool { return under(p, "reconciler/plan") || under(p, "reconciler/rollout") },
		forbidden: func(d string) bool {
			// net/netip is values only (address parsing, no sockets).
			return d != "net/netip" && hasPrefix(d, "net", "os/exec", "database", "github.com/jackc/pgx", "github.com/digitalocean/godo",
				"github.com/go-git/go-git", "golang.org/x/net")
		},
	},
	{
		// genesis plan runs in pull-request CI with the state repository
		// and, at most, a reconciler's URL: no database, no cloud.
		name:      "the admin CLI links no Postgres or DigitalOcean client",
		applies:   func(p string) bool { return p == module+"/cmd/genesis" },
		forbidden: func(d string) bool { return hasPrefix(d, clients[:2]...) },
	},
	{
		name:      "schema is the contract: it imports nothing of ours",
		applies:   func(p string) bool { return p == module+"/schema" },
		forbidden: func(d string) bool { return hasPrefix(d, module) },
	},
	{
		name:      "the droplet side links no Postgres, DigitalOcean or git client",
		applies:   func(p string) bool { return under(p, "agent") || under(p, "cmd/genesis-agent") },
		forbidden: func(d string) bool { return hasPrefix(d, clients...) },
	},
	{
		// Agents upload backups with plain HTTP to URLs the reconciler
		// presigns; the storage credentials never reach a droplet.
		name:    "the droplet side links no S3 client: it uses presigned URLs",
		applies: func(p string) bool { return under(p, "agent") || under(p, "cmd/genesis-agent") },
		forbidden: func(d string) bool {
			return hasPrefix(d, "github.com/minio/minio-go/v7", module+"/reconciler/objstore")
		},
	},
	{
		// The local fleet (the demo's and the e2e tests' world) runs the
		// simulator in process, and so does the load tool (its scale
		// scenario seeds 100,000 droplets in it for the leader to
		// observe); no product binary does.
		name: "only the simulator binary, the local fleet, the demo and the load tool (and tests) link the DigitalOcean simulator",
		applies: func(p string) bool {
			return !under(p, "fakes/dosim") && !under(p, "cmd/genesis-dosim") && !under(p, "localfleet") && !under(p, "cmd/genesis-demo") &&
				!under(p, "cmd/genesis-load") && !testHelper(p)
		},
		forbidden: func(d string) bool { return hasPrefix(d, module+"/fakes/dosim") },
	},
	{
		name: "the products do not link the local fleet (a demo and test world)",
		applies: func(p string) bool {
			return under(p, "reconciler") || under(p, "agent") || under(p, "cmd/genesis-reconciler") || under(p, "cmd/genesis-agent") || p == module+"/cmd/genesis"
		},
		forbidden: func(d string) bool { return hasPrefix(d, module+"/localfleet") },
	},
	{
		name:      "test scaffolding is linked into tests only",
		applies:   func(p string) bool { return !testHelper(p) },
		forbidden: func(d string) bool { return hasPrefix(d, module) && testHelper(d) },
	},
}

// violations lists, per boundary, the packages that link what it forbids.
func violations(pkgs []goPackage) []string {
	var out []string
	for _, b := range boundaries {
		for _, p := range pkgs {
			if !b.applies(p.ImportPath) {
				continue
			}
			for _, d := range p.Deps {
				if b.forbidden(d) {
					out = append(out, fmt.Sprintf("%s: %s links %s", b.name, p.ImportPath, d))
				}
			}
		}
	}
	return out
}

// TestDependencyBoundaries guards the architecture over the whole module.
func TestDependencyBoundaries(t *testing.T) {
	pkgs := listModule(t)
	// A sanity check that go list saw the module and its dependencies.
	var seen []string
	for _, p := range pkgs {
		if p.ImportPath == module+"/cmd/genesis-agent" {
			seen = p.Deps
		}
	}
	if len(pkgs) < 20 || !slices.Contains(seen, module+"/schema/dsse") || !slices.Contains(seen, "filippo.io/age") {
		t.Fatalf("go list looks wrong: %d packages, the agent links %d", len(pkgs), len(seen))
	}
	for _, v := range violations(pkgs) {
		t.Error(v)
	}
}

// TestBoundariesCatch: each boundary reports a package that breaks it, so
// a boundary whose rule went wrong cannot pass unnoticed.
func TestBoundariesCatch(t *testing.T) {
	tests := []struct {
		pkg, dep string
	}{
		{module + "/reconciler/plan", "net/http"},
		{module + "/reconciler/plan", "net"},
		{module + "/reconciler/plan", "os/exec"},
		{module + "/reconciler/plan", "github.com/jackc/pgx/v5"},
		{module + "/schema", module + "/internal/syncio"},
		{module + "/agent/converge", "github.com/go-git/go-git/v5"},
		{module + "/cmd/genesis-agent", "github.com/digitalocean/godo"},
		{module + "/cmd/genesis-agent", "github.com/minio/minio-go/v7"},
		{module + "/agent/backup", module + "/reconciler/objstore"},
		{module + "/cmd/genesis", module + "/fakes/dosim"},
		{module + "/cmd/genesis", "github.com/jackc/pgx/v5"},
		{module + "/cmd/genesis", "github.com/digitalocean/godo"},
		{module + "/cmd/genesis-reconciler", module + "/localfleet"},
		{module + "/reconciler", module + "/internal/pgserver/pgtest"},
	}
	for _, tc := range tests {
		t.Run(tc.pkg+"→"+tc.dep, func(t *testing.T) {
			if got := violations([]goPackage{{ImportPath: tc.pkg, Deps: []string{tc.dep}}}); len(got) == 0 {
				t.Errorf("no boundary refuses %s linking %s", tc.pkg, tc.dep)
			}
		})
	}
	allowed := []goPackage{
		{ImportPath: module + "/cmd/genesis-dosim", Deps: []string{module + "/fakes/dosim"}},
		{ImportPath: module + "/localfleet", Deps: []string{module + "/fakes/dosim"}},
		{ImportPath: module + "/cmd/genesis", Deps: []string{"github.com/go-git/go-git/v5"}},
		{ImportPath: module + "/reconciler/objstore", Deps: []string{"github.com/minio/minio-go/v7"}},
		{ImportPath: module + "/fakes/dosim/dosimtest", Deps: []string{module + "/fakes/dosim"}},
		{ImportPath: module + "/schema/sealing", Deps: []string{module + "/schema"}},
		{ImportPath: module + "/reconciler/plan", Deps: []string{module + "/schema", "network-free/example"}},
	}
	if got := violations(allowed); len(got) > 0 {
		t.Errorf("allowed links refused: %v", got)
	}
}

// TestPackageDocs: every package has a doc comment that starts as go doc
// expects, "Package <name> …" (a command: "Command <dir> …").
func TestPackageDocs(t *testing.T) {
	for _, p := range listModule(t) {
		want := "Package " + p.Name + " "
		if p.Name == "main" {
			want = "Command " + path.Base(p.ImportPath) + " "
		}
		if !strings.HasPrefix(p.Doc, want) {
			t.Errorf("%s: package doc %q does not start with %q", p.ImportPath, p.Doc, want)
		}
	}
}
