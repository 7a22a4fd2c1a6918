package tenants

import (
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// deep compares everything, the schema types' unexported fields (source
// positions, a template's raw bytes) included.
var deep = cmp.Exporter(func(reflect.Type) bool { return true })

// randomState makes random one-commit changes to a state repository:
// tenants added, edited, renamed (with and without their id), deleted,
// broken and mended, given a twin x.yml beside x.yaml, claiming domains
// from a small shared pool (so they conflict), plus now and then a template
// or genesis.yaml edited, broken, deleted or restored, and files that are
// not tenants (a note, a subfolder, a symbolic link).
type randomState struct {
	tb   testing.TB
	r    *testkit.StateRepo
	rng  *rand.Rand
	base []*schema.Tenant // the example tenants, decoded: their workflows and credentials
	next int
}

var sharedDomains = []string{"a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com", "f.example.com"}

func newRandomState(tb testing.TB, seed uint64) *randomState {
	tb.Helper()
	r := newRepo(tb)
	r.CopyExample("genesis.yaml", "templates")
	rs := &randomState{tb: tb, r: r, rng: rand.New(rand.NewPCG(seed, 23))}
	for _, id := range exampleIDs {
		p := testkit.ExamplePath(tb, "tenants/"+id+".yaml")
		data, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		t, errs := schema.DecodeTenant("tenants/"+id+".yaml", data)
		if errs != nil {
			tb.Fatalf("%s: %v", p, errs)
		}
		rs.base = append(rs.base, t)
	}
	for range 30 {
		rs.add()
	}
	r.Commit("random tenants")
	return rs
}

// content is a valid tenant file for id, built on a random example tenant.
func (rs *randomState) content(id string) string {
	t := *rs.base[rs.rng.IntN(len(rs.base))]
	t.Metadata.ID, t.Metadata.Name = id, fmt.Sprintf("Tenant %s v%d", id, rs.rng.IntN(1000))
	t.Spec.Domains = nil
	seen := map[string]bool{}
	for range rs.rng.IntN(3) {
		if d := sharedDomains[rs.rng.IntN(len(sharedDomains))]; !seen[d] {
			seen[d] = true
			t.Spec.Domains = append(t.Spec.Domains, d)
		}
	}
	if rs.rng.IntN(2) == 0 {
		t.Spec.Domains = append(t.Spec.Domains, id+".own.example.com")
	}
	return testkit.TenantYAML(&t)
}

// tenantFiles lists the tenant files that are regular files (not links).
func (rs *randomState) tenantFiles() []string {
	entries, err := os.ReadDir(filepath.Join(rs.r.Dir, "tenants"))
	if err != nil {
		rs.tb.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && isTenantFile(e.Name()) {
			out = append(out, "tenants/"+e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// heal makes every file valid on its own again: links and twins go, every
// tenant file gets valid content for its name's id, the template and the
// fleet are restored. Domains may still conflict.
func (rs *randomState) heal() string {
	entries, err := os.ReadDir(filepath.Join(rs.r.Dir, "tenants"))
	if err != nil {
		rs.tb.Fatal(err)
	}
	for _, e := range entries {
		if !e.IsDir() && !e.Type().IsRegular() {
			rs.remove("tenants/" + e.Name())
		}
	}
	for _, p := range rs.tenantFiles() {
		if strings.HasSuffix(p, ".yml") {
			rs.remove(p)
			continue
		}
		rs.r.Write(p, rs.content(schema.IDFromPath(p)))
	}
	testkit.CopyTree(rs.tb, testkit.ExamplePath(rs.tb, "genesis.yaml"), filepath.Join(rs.r.Dir, "genesis.yaml"))
	tpl := "templates/workflows/click-tracker.json"
	testkit.CopyTree(rs.tb, testkit.ExamplePath(rs.tb, tpl), filepath.Join(rs.r.Dir, tpl))
	return "heal"
}

func (rs *randomState) pick() (string, bool) {
	files := rs.tenantFiles()
	if len(files) == 0 {
		return "", false
	}
	return files[rs.rng.IntN(len(files))], true
}

func (rs *randomState) add() string {
	rs.next++
	id := fmt.Sprintf("ws-r%03d", rs.next)
	rs.r.Write("tenants/"+id+".yaml", rs.content(id))
	return "add " + id
}

func (rs *randomState) remove(p string) {
	if err := os.Remove(filepath.Join(rs.r.Dir, filepath.FromSlash(p))); err != nil {
		rs.tb.Fatal(err)
	}
}

// step makes one random change and returns what it did.
func (rs *randomState) step() string {
	r := rs.r
	switch n := rs.rng.IntN(100); {
	case n < 15:
		return rs.add()
	case n < 40:
		if p, ok := rs.pick(); ok {
			r.Write(p, rs.content(schema.IDFromPath(p)))
			return "edit " + p
		}
	case n < 48:
		if p, ok := rs.pick(); ok {
			data := r.Read(p)
			rs.remove(p)
			if rs.rng.IntN(3) == 0 { // moved as it is: its id no longer matches
				rs.next++
				r.Write(fmt.Sprintf("tenants/ws-r%03d.yaml", rs.next), data)
				return "move " + p
			}
			return "rename " + p + " as " + rs.add()
		}
	case n < 58:
		if p, ok := rs.pick(); ok {
			rs.remove(p)
			return "delete " + p
		}
	case n < 68:
		if p, ok := rs.pick(); ok {
			if rs.rng.IntN(2) == 0 {
				r.Write(p, "apiVersion: [\n")
			} else {
				r.Write(p, strings.Replace(r.Read(p), "spec:\n", "spec:\n  bogus: 1\n", 1))
			}
			return "break " + p
		}
	case n < 76:
		// A twin: x.yml beside x.yaml (or the other way), or a twin removed.
		if p, ok := rs.pick(); ok {
			id := schema.IDFromPath(p)
			twin := "tenants/" + id + ".yml"
			if strings.HasSuffix(p, ".yml") {
				twin = "tenants/" + id + ".yaml"
			}
			if _, err := os.Stat(filepath.Join(r.Dir, twin)); err == nil {
				rs.remove(twin)
				return "untwin " + twin
			}
			r.Write(twin, rs.content(id))
			return "twin " + twin
		}
	case n < 80:
		// Not tenants: a note, a tenant-looking file in a subfolder, a link.
		switch rs.rng.IntN(3) {
		case 0:
			r.Write(fmt.Sprintf("tenants/notes-%d.txt", rs.rng.IntN(3)), fmt.Sprintf("note %d\n", rs.rng.IntN(1000)))
		case 1:
			r.Write("tenants/sub/ws-sub.yaml", rs.content("ws-sub"))
		default:
			rs.next++
			link := filepath.Join(r.Dir, "tenants", fmt.Sprintf("ws-r%03d.yaml", rs.next))
			if err := os.Symlink("../genesis.yaml", link); err != nil {
				rs.tb.Fatal(err)
			}
		}
		return "not a tenant"
	case n < 88:
		tpl := "templates/workflows/click-tracker.json"
		example := testkit.ExamplePath(rs.tb, tpl)
		switch rs.rng.IntN(4) {
		case 0:
			r.Write(tpl, "{")
			return "break template"
		case 1:
			if _, err := os.Stat(filepath.Join(r.Dir, tpl)); err == nil {
				rs.remove(tpl)
			}
			return "delete template"
		case 2:
			data, err := os.ReadFile(example)
			if err != nil {
				rs.tb.Fatal(err)
			}
			r.Write(tpl, strings.Replace(string(data), `"name"`, fmt.Sprintf(`"name" %s`, strings.Repeat(" ", rs.rng.IntN(5))), 1))
			return "edit template"
		default:
			testkit.CopyTree(rs.tb, example, filepath.Join(r.Dir, tpl))
			return "restore template"
		}
	case n < 91:
		switch rs.rng.IntN(3) {
		case 0:
			r.Write("genesis.yaml", "spec: [\n")
			return "break fleet"
		case 1:
			data, err := os.ReadFile(testkit.ExamplePath(rs.tb, "genesis.yaml"))
			if err != nil {
				rs.tb.Fatal(err)
			}
			r.Write("genesis.yaml", strings.Replace(string(data), "maxDestroyPerRun: 5", fmt.Sprintf("maxDestroyPerRun: %d", 5+rs.rng.IntN(5)), 1))
			return "edit fleet"
		default:
			testkit.CopyTree(rs.tb, testkit.ExamplePath(rs.tb, "genesis.yaml"), filepath.Join(r.Dir, "genesis.yaml"))
			return "restore fleet"
		}
	case n < 95:
		return rs.heal()
	default:
		// Several tenants in one commit.
		var did []string
		for range 2 + rs.rng.IntN(4) {
			did = append(did, rs.step())
		}
		return strings.Join(did, ", ")
	}
	return rs.add()
}

// selfValid reports whether every tenant file the index holds passes the
// rules that need only the file, the fleet and the templates: then nothing
// in a Snapshot's verdicts depends on the history before the commit.
func selfValid(ix *index) bool {
	for _, f := range ix.order {
		if f.errs() != nil {
			return false
		}
	}
	return true
}

// TestIncrementalMatchesFull walks a state repository through random
// commits (see randomState) and syncs three Sources at each: the Source as
// it runs (tree compared entry by entry, snapshot patched), one that
// recomputes every tenant on every sync (full), and one that runs the
// whole-set uniqueness check too; those two decode every edited file
// afresh, without sharing its previous version's memory (ShareFrom). Their Snapshots must be equal in every
// field: tenant states with their last valid versions, errors, the changed
// list, templates. Where no file is invalid on its own (so the verdicts do
// not depend on earlier commits), each Snapshot must also judge every file
// as a cold load of the same commit does. A Snapshot, once returned, must
// not change while later commits are synced.
func TestIncrementalMatchesFull(t *testing.T) {
	steps := 80
	if testing.Short() {
		steps = 25
	}
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rs := newRandomState(t, seed)
			inc := openLocal(t, rs.r.Dir)
			full := openLocal(t, rs.r.Dir)
			full.ix.full, full.ix.noShare = true, true
			whole := openLocal(t, rs.r.Dir)
			whole.ix.wholeSet, whole.ix.noShare = true, true

			var kept Snapshot // the previous Snapshot as returned
			var keptTenants map[string]TenantState
			var keptErrors schema.Errors
			var keptChanged []string
			patched, coldChecked := 0, 0
			for step := 0; step <= steps; step++ {
				did := "first load"
				if step > 0 {
					did = rs.step()
					rs.r.Commit(did)
				}
				patches := inc.ix.patches
				got := mustSync(t, inc)
				want := mustSync(t, full)
				if diff := cmp.Diff(got, want, deep); diff != "" {
					t.Fatalf("step %d (%s): incremental vs full (-got +want):\n%s", step, did, diff)
				}
				if diff := cmp.Diff(got, mustSync(t, whole), deep); diff != "" {
					t.Fatalf("step %d (%s): incremental vs whole set (-got +want):\n%s", step, did, diff)
				}
				patched += inc.ix.patches - patches
				if step > 0 {
					if diff := cmp.Diff(kept.Tenants, keptTenants, deep); diff != "" {
						t.Fatalf("step %d (%s): the previous Snapshot's tenants changed (-now +then):\n%s", step, did, diff)
					}
					if diff := cmp.Diff(kept.Errors, keptErrors); diff != "" {
						t.Fatalf("step %d (%s): the previous Snapshot's errors changed (-now +then):\n%s", step, did, diff)
					}
					if diff := cmp.Diff(kept.Changed, keptChanged); diff != "" {
						t.Fatalf("step %d (%s): the previous Snapshot's changed list changed (-now +then):\n%s", step, did, diff)
					}
				}
				kept, keptTenants = got, maps.Clone(got.Tenants)
				keptErrors, keptChanged = append(schema.Errors(nil), got.Errors...), append([]string(nil), got.Changed...)

				if len(got.FleetErrors) == 0 && selfValid(full.ix) {
					coldChecked++
					cold := mustSync(t, openLocal(t, rs.r.Dir))
					agreesWithCold(t, fmt.Sprintf("step %d (%s)", step, did), got, cold)
				}
			}
			t.Logf("%d commits: %d snapshots patched, %d compared with a cold load", steps, patched, coldChecked)
			if patched < steps/4 || coldChecked < 5 {
				t.Errorf("the walk exercised too little: %d patched, %d cold comparisons", patched, coldChecked)
			}
		})
	}
}

// agreesWithCold checks that got judges every file as cold, a first load
// of the same commit, does: the same tenants, files, blobs, statuses and
// errors, the same version for each valid tenant, the same fleet and
// valid templates. (An invalid tenant's version to act on is its history,
// which a cold load does not have.)
func agreesWithCold(t *testing.T, step string, got, cold Snapshot) {
	t.Helper()
	if diff := cmp.Diff(got.Errors, cold.Errors); diff != "" {
		t.Fatalf("%s: errors, incremental vs cold load (-got +want):\n%s", step, diff)
	}
	if diff := cmp.Diff(got.IDs(), cold.IDs()); diff != "" {
		t.Fatalf("%s: ids, incremental vs cold load (-got +want):\n%s", step, diff)
	}
	for id, c := range cold.Tenants {
		g := got.Tenants[id]
		if g.Status == StatusInvalid {
			g.Tenant, g.ValidBlob = nil, ""
		}
		if c.Status == StatusInvalid {
			c.Tenant, c.ValidBlob = nil, ""
		}
		if diff := cmp.Diff(g, c, deep); diff != "" {
			t.Fatalf("%s: tenant %s, incremental vs cold load (-got +want):\n%s", step, id, diff)
		}
	}
	if diff := cmp.Diff(got.Fleet, cold.Fleet, deep); diff != "" {
		t.Fatalf("%s: fleet, incremental vs cold load (-got +want):\n%s", step, diff)
	}
	for name, tpl := range cold.Templates {
		if diff := cmp.Diff(got.Templates[name], tpl, deep); diff != "" {
			t.Fatalf("%s: template %s, incremental vs cold load (-got +want):\n%s", step, name, diff)
		}
	}
	if got.Commit != cold.Commit || len(cold.Changed) != len(cold.Tenants) {
		t.Fatalf("%s: commit %s vs %s, cold changed %d of %d", step, got.Commit, cold.Commit, len(cold.Changed), len(cold.Tenants))
	}
}

// TestIncrementalOddTrees syncs trees git itself would not write, made with
// git hash-object --literally: tenant entries out of order, one name twice,
// a name with a slash. The entry-by-entry comparison gives up on them and
// the folder is listed as go-git lists it, so the Source judges them as the
// full recompute does, and goes back to patching once the tree is sound.
func TestIncrementalOddTrees(t *testing.T) {
	r := newRepo(t)
	r.CopyExample("genesis.yaml", "templates")
	for _, id := range []string{"ws-a", "ws-b", "ws-c"} {
		r.WriteTenant(tenant(id, "nyc1", id+".example.com"))
	}
	r.Commit("three tenants")
	inc := openLocal(t, r.Dir)
	full := openLocal(t, r.Dir)
	full.ix.full = true
	compare := func(step string) Snapshot {
		t.Helper()
		got, want := mustSync(t, inc), mustSync(t, full)
		if diff := cmp.Diff(got, want, deep); diff != "" {
			t.Fatalf("%s: incremental vs full (-got +want):\n%s", step, diff)
		}
		return got
	}
	compare("first load")

	blob := func(id, domain string) string {
		f := filepath.Join(t.TempDir(), id+".yaml")
		if err := os.WriteFile(f, []byte(testkit.TenantYAML(tenant(id, "nyc1", domain))), 0o644); err != nil {
			t.Fatal(err)
		}
		return r.Git("hash-object", "-w", f)
	}
	// commitTenants commits the head's tree with its tenants folder replaced
	// by the given entries, written as they are.
	commitTenants := func(msg string, entries [][2]string) {
		t.Helper()
		var raw []byte
		for _, e := range entries {
			h := plumbing.NewHash(e[1])
			raw = append(append(raw, "100644 "+e[0]+"\x00"...), h[:]...)
		}
		f := filepath.Join(t.TempDir(), "tree")
		if err := os.WriteFile(f, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		tenantsTree := r.Git("hash-object", "-w", "-t", "tree", "--literally", f)
		var root strings.Builder
		for _, line := range strings.Split(r.Git("ls-tree", "HEAD"), "\n") {
			if strings.HasSuffix(line, "\ttenants") {
				line = "040000 tree " + tenantsTree + "\ttenants"
			}
			root.WriteString(line + "\n")
		}
		rootTree := strings.TrimSpace(gitIn(t, r.Dir, root.String(), "mktree"))
		commit := r.Git("commit-tree", rootTree, "-p", "HEAD", "-m", msg)
		r.Git("update-ref", "refs/heads/main", commit)
	}
	a, b, c := blob("ws-a", "a.example.com"), blob("ws-b", "b.example.com"), blob("ws-c", "a.example.com")
	d := blob("ws-d", "d.example.com")
	steps := []struct {
		name    string
		entries [][2]string
	}{
		{"out of order", [][2]string{{"ws-c.yaml", c}, {"ws-a.yaml", a}, {"ws-b.yaml", b}}},
		{"one name twice", [][2]string{{"ws-a.yaml", a}, {"ws-b.yaml", b}, {"ws-b.yaml", d}, {"ws-c.yaml", c}}},
		{"a slash in a name", [][2]string{{"ws-a.yaml", a}, {"sub/ws-d.yaml", d}, {"ws-c.yaml", c}}},
		{"sound again", [][2]string{{"ws-a.yaml", a}, {"ws-b.yaml", b}, {"ws-c.yaml", c}, {"ws-d.yaml", d}}},
	}
	for _, st := range steps {
		commitTenants(st.name, st.entries)
		compare(st.name)
	}
	// Sound trees are patched again.
	r.Git("reset", "-q", "--hard", "HEAD")
	r.WriteTenant(tenant("ws-e", "nyc1", "e.example.com"))
	r.Commit("one more")
	before := inc.Stats()
	snap := compare("patched")
	if diff := cmp.Diff(snap.Changed, []string{"ws-e"}); diff != "" {
		t.Errorf("changed (-got +want):\n%s", diff)
	}
	if got := inc.Stats().Checks - before.Checks; got != 1 {
		t.Errorf("checks: got %d, want 1", got)
	}
	if inc.ix.odd != 0 {
		t.Errorf("odd paths left: %d", inc.ix.odd)
	}
}

// gitIn runs git in dir with stdin.
func gitIn(tb testing.TB, dir, stdin string, args ...string) string {
	tb.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir, cmd.Env, cmd.Stdin = dir, append(os.Environ(), testkit.GitEnv()...), strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		tb.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestDiffTreeMatchesDiff is the property behind the entry-by-entry
// comparisons: for random trees as go-git encodes them (tenant files among
// notes, folders, links, executables, submodules and the deprecated
// group-writable mode), diffTree given random index contents, and
// diffTrees given an older tree and its files, return what index.diff
// returns for the same folder listed file by file.
func TestDiffTreeMatchesDiff(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 23))
	modes := []filemode.FileMode{filemode.Regular, filemode.Regular, filemode.Regular, filemode.Executable, filemode.Symlink, filemode.Dir, filemode.Submodule, filemode.Deprecated}
	names := func() string {
		switch rng.IntN(6) {
		case 0:
			return fmt.Sprintf("ws-%02d.yml", rng.IntN(20))
		case 1:
			return fmt.Sprintf("notes-%d.txt", rng.IntN(3))
		default:
			return fmt.Sprintf("ws-%02d.yaml", rng.IntN(20))
		}
	}
	blobs := []plumbing.Hash{plumbing.ComputeHash(plumbing.BlobObject, []byte("a")), plumbing.ComputeHash(plumbing.BlobObject, []byte("b")), plumbing.ComputeHash(plumbing.BlobObject, []byte("c"))}
	// tree returns a random tree's raw content and its tenant files as
	// gitListing lists them.
	tree := func() ([]byte, []file) {
		seen := map[string]bool{}
		var entries []object.TreeEntry
		for range rng.IntN(25) {
			n := names()
			if seen[n] {
				continue
			}
			seen[n] = true
			entries = append(entries, object.TreeEntry{Name: n, Mode: modes[rng.IntN(len(modes))], Hash: blobs[rng.IntN(len(blobs))]})
		}
		sortName := func(e object.TreeEntry) string {
			if e.Mode == filemode.Dir {
				return e.Name + "/"
			}
			return e.Name
		}
		sort.Slice(entries, func(i, j int) bool { return sortName(entries[i]) < sortName(entries[j]) })
		obj := &plumbing.MemoryObject{}
		if err := (&object.Tree{Entries: entries}).Encode(obj); err != nil {
			t.Fatal(err)
		}
		rd, err := obj.Reader()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := io.ReadAll(rd)
		if err != nil {
			t.Fatal(err)
		}
		decoded, err := object.DecodeTree(nil, obj)
		if err != nil {
			t.Fatal(err)
		}
		var listed []file
		for _, e := range decoded.Entries {
			if e.Mode.IsFile() && isTenantFile(e.Name) {
				listed = append(listed, file{path: "tenants/" + e.Name, blob: e.Hash, link: e.Mode == filemode.Symlink})
			}
		}
		return raw, listed
	}
	opt := cmp.AllowUnexported(file{})
	for round := range 1000 {
		raw, listed := tree()

		// An index holding random files, and one holding an older tree's.
		ix := newIndex()
		for i := range 20 {
			for _, ext := range []string{".yaml", ".yml"} {
				if rng.IntN(3) == 0 {
					p := fmt.Sprintf("tenants/ws-%02d%s", i, ext)
					f := &tenantFile{path: p, blob: blobs[rng.IntN(len(blobs))]}
					ix.files[p] = f
					ix.order = append(ix.order, f)
				}
			}
		}
		oldRaw, oldListed := tree()
		if round%2 == 0 {
			// Every other round nothing changed.
			oldRaw, oldListed = raw, listed
		}
		prev := newIndex()
		for _, f := range oldListed {
			prev.order = append(prev.order, &tenantFile{path: f.path, blob: f.blob})
		}

		gotChanged, gotRemoved, ok := diffTree(raw, schema.TenantsDir, ix.order)
		if !ok {
			t.Fatalf("round %d: diffTree refused a tree go-git wrote", round)
		}
		wantChanged, wantRemoved := ix.diff(listed)
		if diff := cmp.Diff(gotChanged, wantChanged, opt); diff != "" {
			t.Fatalf("round %d: changed (-diffTree +diff):\n%s", round, diff)
		}
		if diff := cmp.Diff(gotRemoved, wantRemoved); diff != "" {
			t.Fatalf("round %d: removed (-diffTree +diff):\n%s", round, diff)
		}

		gotChanged, gotRemoved, ok = diffTrees(oldRaw, raw, schema.TenantsDir, prev.order)
		if !ok {
			t.Fatalf("round %d: diffTrees refused trees go-git wrote", round)
		}
		wantChanged, wantRemoved = prev.diff(listed)
		if diff := cmp.Diff(gotChanged, wantChanged, opt); diff != "" {
			t.Fatalf("round %d: changed (-diffTrees +diff):\n%s", round, diff)
		}
		if diff := cmp.Diff(gotRemoved, wantRemoved); diff != "" {
			t.Fatalf("round %d: removed (-diffTrees +diff):\n%s", round, diff)
		}
		// An index that is not the older tree's is noticed.
		if len(ix.order) != len(prev.order) {
			if _, _, ok := diffTrees(oldRaw, raw, schema.TenantsDir, ix.order); ok {
				t.Fatalf("round %d: diffTrees took an index out of step with the older tree", round)
			}
		}
	}

	// What object.Tree.Decode refuses, or a tree out of order, is refused.
	h := blobs[0]
	for _, raw := range []string{
		"100644 ws-b.yaml\x00" + string(h[:]) + "100644 ws-a.yaml\x00" + string(h[:]), // out of order
		"100644 ws-a.yaml\x00" + string(h[:]) + "100644 ws-a.yaml\x00" + string(h[:]), // twice
		"100644 ws-a.yaml\x00" + string(h[:10]),                                       // truncated id
		"100644 ws-a.yaml",                                                            // no terminator
		"100648 ws-a.yaml\x00" + string(h[:]),                                         // not octal
		"100644 \x00" + string(h[:]),                                                  // no name
		"100644",                                                                      // no mode terminator
	} {
		if _, _, ok := diffTree([]byte(raw), schema.TenantsDir, nil); ok {
			t.Errorf("diffTree accepted %q", raw)
		}
		if _, _, ok := diffTrees(nil, []byte(raw), schema.TenantsDir, nil); ok {
			t.Errorf("diffTrees accepted %q", raw)
		}
	}
}

// TestIncrementalTwinLag pins the one case where a tenant's state moves on
// a commit that touches none of its files: ws-x has two files, ws-x.yaml
// never valid and ws-x.yml valid. The cross-tenant rules see a file's own
// version, or for a file with errors of its own its id's last valid
// version as of the sync before; so ws-x.yml's version, valid from the
// commit that adds it, becomes ws-x.yaml's candidate one sync later and
// then takes the id from ws-x.yml. The full recompute does that on the
// next commit of any tenant, and a patched Snapshot must do the same.
func TestIncrementalTwinLag(t *testing.T) {
	r := newRepo(t)
	r.CopyExample("genesis.yaml", "templates")
	r.WriteTenant(tenant("ws-a", "nyc1", "a.example.com"))
	r.Write("tenants/ws-x.yaml", testkit.TenantYAML(tenant("ws-other", "nyc1", "x.example.com")))
	r.Commit("ws-x.yaml names another id")
	inc := openLocal(t, r.Dir)
	full := openLocal(t, r.Dir)
	full.ix.full = true
	steps := []struct {
		name    string
		change  func()
		changed []string
		status  Status // ws-x's
	}{
		{"first load", func() {}, []string{"ws-a", "ws-x"}, StatusInvalid},
		{"a valid twin", func() {
			r.Write("tenants/ws-x.yml", testkit.TenantYAML(tenant("ws-x", "nyc1", "x.example.com")))
		}, []string{"ws-x"}, StatusValid},
		{"another tenant edited", func() {
			r.WriteTenant(tenant("ws-a", "nyc1", "a.example.com", "a2.example.com"))
		}, []string{"ws-a", "ws-x"}, StatusInvalid},
		{"another tenant edited again", func() {
			r.WriteTenant(tenant("ws-a", "nyc1", "a.example.com"))
		}, []string{"ws-a"}, StatusInvalid},
	}
	for _, st := range steps {
		st.change()
		r.Commit(st.name)
		got, want := mustSync(t, inc), mustSync(t, full)
		if diff := cmp.Diff(got, want, deep); diff != "" {
			t.Fatalf("%s: incremental vs full (-got +want):\n%s", st.name, diff)
		}
		if diff := cmp.Diff(got.Changed, st.changed); diff != "" {
			t.Errorf("%s: changed (-got +want):\n%s", st.name, diff)
		}
		if s := got.Tenants["ws-x"].Status; s != st.status {
			t.Errorf("%s: ws-x is %s, want %s", st.name, s, st.status)
		}
	}
}

// TestIncrementalTemplateUse pins the templates of patched Snapshots: a
// broken template's last valid version stays in Templates while a tenant
// still acts on a version that uses it, and leaves with the last such
// tenant, on commits that touch only tenant files.
func TestIncrementalTemplateUse(t *testing.T) {
	const tpl = "click-tracker"
	r := newRepo(t)
	r.CopyExample("genesis.yaml", "templates", "tenants/ws-acme.yaml", "tenants/ws-globex.yaml")
	r.Commit("two tenants using " + tpl)
	inc := openLocal(t, r.Dir)
	full := openLocal(t, r.Dir)
	full.ix.full = true
	steps := []struct {
		name    string
		change  func()
		patched bool
		has     bool // Templates holds tpl
		changed []string
	}{
		{"first load", func() {}, false, true, []string{"ws-acme", "ws-globex"}},
		{"template broken", func() { r.Write("templates/workflows/"+tpl+".json", "{") }, false, true, []string{"ws-acme", "ws-globex"}},
		{"one tenant no longer uses it", func() { r.WriteTenant(tenant("ws-acme", "nyc3")) }, true, true, []string{"ws-acme"}},
		{"the last user deleted", func() { r.Remove("tenants/ws-globex.yaml") }, true, false, []string{"ws-globex"}},
	}
	for _, st := range steps {
		st.change()
		r.Commit(st.name)
		patches := inc.ix.patches
		got, want := mustSync(t, inc), mustSync(t, full)
		if diff := cmp.Diff(got, want, deep); diff != "" {
			t.Fatalf("%s: incremental vs full (-got +want):\n%s", st.name, diff)
		}
		if p := inc.ix.patches > patches; p != st.patched {
			t.Errorf("%s: patched %v, want %v", st.name, p, st.patched)
		}
		if _, has := got.Templates[tpl]; has != st.has {
			t.Errorf("%s: Templates holds %s: %v, want %v", st.name, tpl, has, st.has)
		}
		if diff := cmp.Diff(got.Changed, st.changed); diff != "" {
			t.Errorf("%s: changed (-got +want):\n%s", st.name, diff)
		}
	}
}

// TestLocalAfterRepack: a local Source keeps its repository open between
// syncs; after git gc packs the loose objects (and deletes them) and after
// a repack replaces the packs, the next sync still reads the new head and
// judges it as the full recompute does.
func TestLocalAfterRepack(t *testing.T) {
	r := newGenRepo(t, 50)
	inc := openLocal(t, r.Dir)
	full := openLocal(t, r.Dir)
	full.ix.full = true
	for i, pack := range []func(){
		func() {},
		func() { r.Git("gc", "-q", "--prune=now") },
		func() {},
		func() { r.Git("repack", "-adq") },
		func() { r.Git("gc", "-q", "--prune=now", "--aggressive") },
	} {
		p := fmt.Sprintf("tenants/ws-gen-%06d.yaml", i)
		r.Write(p, strings.Replace(r.Read(p), "name: Tenant", fmt.Sprintf("name: Edit %d", i), 1))
		head := r.Commit(fmt.Sprintf("edit %d", i))
		pack()
		got, want := mustSync(t, inc), mustSync(t, full)
		if diff := cmp.Diff(got, want, deep); diff != "" {
			t.Fatalf("commit %d: incremental vs full (-got +want):\n%s", i, diff)
		}
		if got.Commit != head || len(got.Changed) != 1 && i > 0 {
			t.Errorf("commit %d: head %s (want %s), changed %v", i, got.Commit, head, got.Changed)
		}
	}
}

// TestEditSharesUnchanged: a commit that edits every tenant file (here:
// each is given a rollout label) yields tenants that keep what the edit
// left alone (credentials, workflows, domains) in the previous Snapshot's
// memory, so the two Snapshots alive together hold the fleet once plus the
// edit; the previous Snapshot is unchanged, and the new one is what a cold
// load of the commit gives.
func TestEditSharesUnchanged(t *testing.T) {
	r := newExampleRepo(t)
	s := openLocal(t, r.Dir)
	before := mustSync(t, s)
	keep := map[string]TenantState{}
	for id, st := range before.Tenants {
		c := *st.Tenant
		keep[id] = TenantState{ID: st.ID, Tenant: &c, File: st.File, Blob: st.Blob, ValidBlob: st.ValidBlob, Status: st.Status}
	}
	withLists := 0
	for id, st := range before.Tenants {
		body := r.Read(st.File)
		if !strings.Contains(body, "metadata:\n") || strings.Contains(body, "  labels:") {
			t.Fatalf("%s: want a block metadata without labels to edit", st.File)
		}
		r.Write(st.File, strings.Replace(body, "metadata:\n", "metadata:\n  labels: {wave: w-"+id+"}\n", 1))
		if len(st.Tenant.Spec.Credentials) > 0 && len(st.Tenant.Spec.Workflows) > 0 {
			withLists++
		}
	}
	if withLists == 0 {
		t.Fatal("no example tenant has both credentials and workflows")
	}
	r.Commit("label every tenant")
	after := mustSync(t, s)
	if len(after.Changed) != len(before.Tenants) {
		t.Fatalf("changed %v, want every tenant", after.Changed)
	}
	cold := mustSync(t, openLocal(t, r.Dir))
	if diff := cmp.Diff(after.Tenants, cold.Tenants, deep); diff != "" {
		t.Fatalf("after the edit vs a cold load (-got +want):\n%s", diff)
	}
	for id, st := range after.Tenants {
		old, was := before.Tenants[id].Tenant, keep[id].Tenant
		if diff := cmp.Diff(old, was, deep); diff != "" {
			t.Errorf("%s: the previous Snapshot changed (-now +then):\n%s", id, diff)
		}
		nt := st.Tenant
		if nt == old || nt.Metadata.Labels["wave"] != "w-"+id || old.Metadata.Labels != nil {
			t.Fatalf("%s: not re-decoded with its label: %+v", id, nt.Metadata)
		}
		for what, shared := range map[string]bool{
			"credentials": len(old.Spec.Credentials) == 0 || unsafe.SliceData(nt.Spec.Credentials) == unsafe.SliceData(old.Spec.Credentials),
			"workflows":   len(old.Spec.Workflows) == 0 || unsafe.SliceData(nt.Spec.Workflows) == unsafe.SliceData(old.Spec.Workflows),
			"domains":     len(old.Spec.Domains) == 0 || unsafe.SliceData(nt.Spec.Domains) == unsafe.SliceData(old.Spec.Domains),
		} {
			if !shared {
				t.Errorf("%s: the unchanged %s are a second copy", id, what)
			}
		}
	}
}
