package testkit

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"filippo.io/age/armor"
	"gopkg.in/yaml.v3"

	"genesis.dev/fleet/schema"
)

// GitEnv is the environment for the git CLI in tests: the machine's
// configuration is ignored, the identity is fixed and no background
// "gc --auto" races a test or a benchmark.
func GitEnv() []string {
	return append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1",
		"GIT_AUTHOR_NAME=test", "GIT_AUTHOR_EMAIL=test@example.com",
		"GIT_COMMITTER_NAME=test", "GIT_COMMITTER_EMAIL=test@example.com",
		"GIT_CONFIG_COUNT=1", "GIT_CONFIG_KEY_0=gc.auto", "GIT_CONFIG_VALUE_0=0",
	)
}

// Git runs the git CLI in dir with GitEnv and returns its trimmed output;
// a failure fails tb.
func Git(tb testing.TB, dir string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = GitEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// StateRepo is a git state repository for a test: a work tree on branch
// main and, once Push was called, a bare remote it pushes to.
type StateRepo struct {
	tb testing.TB
	// Dir is the work tree.
	Dir string
	// Bare is the bare remote's directory ("" before the first Push).
	Bare string
}

// OpenStateRepo is a StateRepo on the existing work tree dir (a clone the
// test made, say).
func OpenStateRepo(tb testing.TB, dir string) *StateRepo {
	return &StateRepo{tb: tb, Dir: dir}
}

// NewStateRepo makes an empty repository on branch main in a temporary
// directory.
func NewStateRepo(tb testing.TB) *StateRepo {
	tb.Helper()
	r := &StateRepo{tb: tb, Dir: tb.TempDir()}
	r.Git("init", "-q", "-b", "main")
	return r
}

// Git runs the git CLI in the work tree.
func (r *StateRepo) Git(args ...string) string {
	r.tb.Helper()
	return Git(r.tb, r.Dir, args...)
}

// Write writes content to path (slash-separated, relative to the work
// tree), making its directories.
func (r *StateRepo) Write(path, content string) {
	r.tb.Helper()
	p := filepath.Join(r.Dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		r.tb.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		r.tb.Fatal(err)
	}
}

// Read returns the content of path in the work tree.
func (r *StateRepo) Read(path string) string {
	r.tb.Helper()
	b, err := os.ReadFile(filepath.Join(r.Dir, filepath.FromSlash(path)))
	if err != nil {
		r.tb.Fatal(err)
	}
	return string(b)
}

// Remove deletes path from the work tree.
func (r *StateRepo) Remove(path string) {
	r.tb.Helper()
	if err := os.Remove(filepath.Join(r.Dir, filepath.FromSlash(path))); err != nil {
		r.tb.Fatal(err)
	}
}

// WriteFleet writes f as genesis.yaml.
func (r *StateRepo) WriteFleet(f *schema.Fleet) {
	r.tb.Helper()
	r.Write(schema.FleetFile, FleetYAML(f))
}

// WriteTenant writes t as tenants/<id>.yaml.
func (r *StateRepo) WriteTenant(t *schema.Tenant) {
	r.tb.Helper()
	r.Write(schema.TenantsDir+"/"+t.Metadata.ID+".yaml", TenantYAML(t))
}

// CopyExample copies paths (files or directories, relative to the module's
// state-example directory, e.g. "genesis.yaml", "tenants", "templates") to
// the same paths in the work tree.
func (r *StateRepo) CopyExample(paths ...string) {
	r.tb.Helper()
	for _, p := range paths {
		CopyTree(r.tb, ExamplePath(r.tb, p), filepath.Join(r.Dir, filepath.FromSlash(p)))
	}
}

// Commit commits everything in the work tree (an empty commit if nothing
// changed) and returns the commit hash.
func (r *StateRepo) Commit(msg string) string {
	r.tb.Helper()
	r.Git("add", "-A")
	r.Git("commit", "-q", "--allow-empty", "-m", msg)
	return r.Head()
}

// Head returns the work tree's HEAD commit.
func (r *StateRepo) Head() string {
	r.tb.Helper()
	return r.Git("rev-parse", "HEAD")
}

// Push pushes main to the bare remote, making the remote (a temporary
// directory named state.git) on the first call, and returns the remote's
// directory.
func (r *StateRepo) Push() string {
	r.tb.Helper()
	if r.Bare == "" {
		r.Bare = filepath.Join(r.tb.TempDir(), "state.git")
		Git(r.tb, r.Dir, "init", "-q", "--bare", "-b", "main", r.Bare)
		r.Git("remote", "add", "origin", r.Bare)
	}
	r.Git("push", "-q", "origin", "main")
	return r.Bare
}

// URL is the bare remote's file:// URL (Push must have been called).
func (r *StateRepo) URL() string {
	if r.Bare == "" {
		r.tb.Fatal("testkit: StateRepo.URL before Push")
	}
	return "file://" + r.Bare
}

// ModuleRoot returns the directory of the module's go.mod, found upward
// from the test's working directory.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("testkit: no go.mod above the working directory")
		}
		dir = parent
	}
}

// ExamplePath returns the path of rel (slash-separated) inside the module's
// state-example directory.
func ExamplePath(tb testing.TB, rel string) string {
	tb.Helper()
	return filepath.Join(ModuleRoot(tb), "state-example", filepath.FromSlash(rel))
}

// DemoRecipient is the fleet recipient of state-example, whose identity is
// committed in state-example/demo-keys/age.key.
const DemoRecipient = "age1y5k5mjkyevzwfqc8jv3n2dd3uc57pac0zl93sh67j4zqddycegyqdccyng"

// DemoIdentities returns the identities in state-example/demo-keys/age.key.
func DemoIdentities(tb testing.TB) []age.Identity {
	tb.Helper()
	f, err := os.Open(ExamplePath(tb, "demo-keys/age.key"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(f)
	if err != nil {
		tb.Fatal(err)
	}
	return ids
}

// ExampleFleet decodes state-example's genesis.yaml.
func ExampleFleet(tb testing.TB) *schema.Fleet {
	tb.Helper()
	data, err := os.ReadFile(ExamplePath(tb, schema.FleetFile))
	if err != nil {
		tb.Fatal(err)
	}
	f, errs := schema.DecodeFleet(schema.FleetFile, data)
	if len(errs) > 0 {
		tb.Fatalf("testkit: state-example fleet: %v", errs)
	}
	return f
}

// Fleet returns a valid fleet for tests: one account acct-a (nyc3, 20
// droplets, token in TOKEN_A), the usual defaults, recipients, a safety
// of two destroys and half the fleet hibernated per run, and the sizes
// s-1vcpu-1gb ($6) and s-1vcpu-2gb ($12). Tests change the fields they need.
func Fleet() *schema.Fleet {
	return &schema.Fleet{
		APIVersion: schema.APIVersion,
		Kind:       "Fleet",
		Spec: schema.FleetSpec{
			Accounts:   []schema.Account{{Name: "acct-a", Regions: []string{"nyc3"}, MaxDroplets: 20, TokenEnv: "TOKEN_A"}},
			Defaults:   schema.Defaults{Size: "s-1vcpu-1gb", Image: "ubuntu-22-04-x64", N8NVersion: "1.123.81"},
			Recipients: []string{"age1y3uu66akrdeq9vd97m5yq34elu876zwsplztfgkv4c4z5ktgg92s8q0mw3"},
			Safety:     schema.Safety{MaxDestroyPerRun: 2, MaxHibernatePercent: 50},
			Sizes:      map[string]schema.Size{"s-1vcpu-1gb": {MonthlyUSD: 6}, "s-1vcpu-2gb": {MonthlyUSD: 12}},
		},
	}
}

// Tenant returns a minimal valid tenant: id, named id, tier pro, running
// in region. Tests change the fields they need.
func Tenant(id, region string) *schema.Tenant {
	return &schema.Tenant{
		APIVersion: schema.APIVersion,
		Kind:       "Tenant",
		Metadata:   schema.TenantMeta{ID: id, Name: id, Tier: schema.TierPro},
		Spec:       schema.TenantSpec{State: schema.StateRunning, Droplet: schema.DropletSpec{Region: region}},
	}
}

// FleetYAML returns f as genesis.yaml, leaving out empty fields.
func FleetYAML(f *schema.Fleet) string { return marshal(f) }

// TenantYAML returns t as its tenant file, leaving out empty fields.
func TenantYAML(t *schema.Tenant) string { return marshal(t) }

// marshal encodes v with the schema's YAML tags and drops the fields left
// empty (null, "", 0, [], {} and zero durations), as a person writing the file
// would: the schema fills defaults for absent fields only when they are
// absent or zero, and an explicit empty list is not always the same as an
// absent one. The schema types always encode, so an error is a bug here.
func marshal(v any) string {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		panic(fmt.Sprintf("testkit: encode %T: %v", v, err))
	}
	prune(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		panic(fmt.Sprintf("testkit: encode %T: %v", v, err))
	}
	return buf.String()
}

// prune removes the empty values of the mappings below n and reports
// whether n itself is empty.
func prune(n *yaml.Node) bool {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			prune(c)
		}
		return false
	case yaml.MappingNode:
		kept := n.Content[:0]
		for i := 0; i+1 < len(n.Content); i += 2 {
			if !prune(n.Content[i+1]) {
				kept = append(kept, n.Content[i], n.Content[i+1])
			}
		}
		n.Content = kept
		return len(kept) == 0
	case yaml.SequenceNode:
		for _, c := range n.Content {
			prune(c)
		}
		return len(n.Content) == 0
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return true
		case "!!str":
			return n.Value == "" || n.Value == "0s"
		case "!!int", "!!float":
			return n.Value == "0"
		}
		return false
	}
	return false
}

// Seal encrypts plaintext to recipient as an armored age file, as
// `genesis seal` does for a credential in a tenant file.
func Seal(tb testing.TB, recipient age.Recipient, plaintext string) string {
	tb.Helper()
	var buf bytes.Buffer
	aw := armor.NewWriter(&buf)
	w, err := age.Encrypt(aw, recipient)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := io.WriteString(w, plaintext); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.String()
}

// CopyTree copies the file or directory from to to, making directories.
func CopyTree(tb testing.TB, from, to string) {
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

// Glob returns the files matching pattern, and fails tb when the pattern
// is malformed or matches nothing: a fixture loop over no fixtures would
// pass without testing anything.
func Glob(tb testing.TB, pattern string) []string {
	tb.Helper()
	paths, err := filepath.Glob(pattern)
	if err != nil {
		tb.Fatalf("glob %s: %v", pattern, err)
	}
	if len(paths) == 0 {
		tb.Fatalf("no files match %s: the fixtures are missing", pattern)
	}
	return paths
}
