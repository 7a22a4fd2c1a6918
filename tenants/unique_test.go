package tenants

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/schema"
)

// decodedTenant is tenant(id, "nyc1", domains...) written and decoded as its
// file would be, so errors carry real line:column positions.
func decodedTenant(tb testing.TB, file string, domains ...string) *schema.Tenant {
	tb.Helper()
	t, errs := schema.DecodeTenant(file, []byte(testkit.TenantYAML(tenant(schema.IDFromPath(file), "nyc1", domains...))))
	if errs != nil {
		tb.Fatalf("decode %s: %v", file, errs)
	}
	return t
}

// TestUniqueIndexMatchesWholeSet is the property: after any sequence of
// changes (adds, edits, removals, files sharing an id as x.yaml and x.yml,
// domains shared by several files), the incremental result equals
// schema.CheckUnique over the whole set, error for error.
func TestUniqueIndexMatchesWholeSet(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 1))
	var files []string
	for i := range 30 {
		files = append(files, fmt.Sprintf("tenants/ws-%02d.yaml", i))
	}
	files = append(files, "tenants/ws-03.yml", "tenants/ws-17.yml") // same ids as two .yaml files
	domainPool := []string{"a.example.com", "b.example.com", "c.example.com", "d.example.com", "e.example.com", "f.example.com"}

	u := newUniqueIndex()
	all := map[string]*schema.Tenant{}
	for step := range 400 {
		changes := map[string]*schema.Tenant{}
		for range 1 + rng.IntN(3) {
			f := files[rng.IntN(len(files))]
			if rng.IntN(4) == 0 {
				changes[f] = nil // removed, or never valid
				continue
			}
			var ds []string
			for range rng.IntN(3) {
				ds = append(ds, domainPool[rng.IntN(len(domainPool))])
			}
			if rng.IntN(3) == 0 { // a domain of its own
				ds = append(ds, fmt.Sprintf("own%d.example.com", step))
			}
			ds = dedupe(ds)
			changes[f] = decodedTenant(t, f, ds...)
		}
		for f, tn := range changes {
			if tn == nil {
				delete(all, f)
			} else {
				all[f] = tn
			}
		}
		u.update(changes)

		var whole []schema.TenantFile
		for f, tn := range all {
			whole = append(whole, schema.TenantFile{File: f, Tenant: tn})
		}
		sort.Slice(whole, func(i, j int) bool { return whole[i].File < whole[j].File })
		if diff := cmp.Diff(u.conflicts, schema.CheckUnique(whole)); diff != "" {
			t.Fatalf("step %d: incremental vs whole set (-got +want):\n%s", step, diff)
		}
	}
}

func dedupe(ds []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, d := range ds {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}

// TestUniqueAcrossCommits walks a state repository through one-file commits
// and checks each Snapshot's errors, with their file:line:column, against the
// exact text and against a Source running the whole-set check on the same
// commits: a duplicate domain introduced by one file is caught, a rename
// keeps the domain with its holder, a removal frees it, and a file that
// sorts earlier behaves as it did with the whole-set check.
func TestUniqueAcrossCommits(t *testing.T) {
	r := newRepo(t)
	r.CopyExample("genesis.yaml")
	r.Write("tenants/ws-a.yaml", testkit.TenantYAML(tenant("ws-a", "nyc1", "a.example.com")))
	r.Write("tenants/ws-b.yaml", testkit.TenantYAML(tenant("ws-b", "nyc1", "b.example.com")))
	r.Write("tenants/ws-c.yaml", testkit.TenantYAML(tenant("ws-c", "nyc1", "c.example.com")))
	r.Commit("three tenants")

	inc := openLocal(t, r.Dir)
	whole := openLocal(t, r.Dir)
	whole.ix.wholeSet = true
	sync := func(step string) Snapshot {
		t.Helper()
		got, want := mustSync(t, inc), mustSync(t, whole)
		if diff := cmp.Diff(got.Errors, want.Errors); diff != "" {
			t.Fatalf("%s: errors, incremental vs whole set (-got +want):\n%s", step, diff)
		}
		if diff := cmp.Diff(statuses(got), statuses(want)); diff != "" {
			t.Fatalf("%s: statuses, incremental vs whole set (-got +want):\n%s", step, diff)
		}
		return got
	}
	errText := func(s Snapshot) []string {
		var out []string
		for _, e := range s.Errors {
			out = append(out, e.Error())
		}
		return out
	}
	steps := []struct {
		name   string
		change func()
		want   []string
		// checked bounds the files the incremental check looked at.
		checked int
	}{
		{"cold", func() {}, nil, 3},
		{"one file claims another's domain", func() {
			r.Write("tenants/ws-c.yaml", testkit.TenantYAML(tenant("ws-c", "nyc1", "c.example.com", "b.example.com")))
		}, []string{`tenants/ws-c.yaml:13:7: spec.domains[1]: domain "b.example.com" is already claimed by tenants/ws-b.yaml`}, 2},
		{"an unrelated edit leaves the error", func() {
			r.Write("tenants/ws-a.yaml", testkit.TenantYAML(tenant("ws-a", "nyc1", "a.example.com", "a2.example.com")))
		}, []string{`tenants/ws-c.yaml:13:7: spec.domains[1]: domain "b.example.com" is already claimed by tenants/ws-b.yaml`}, 1},
		{"rename: the holder moves to another file and keeps the domain", func() {
			r.Remove("tenants/ws-b.yaml")
			r.Write("tenants/ws-b2.yaml", testkit.TenantYAML(tenant("ws-b2", "nyc1", "b.example.com")))
		}, []string{`tenants/ws-c.yaml:13:7: spec.domains[1]: domain "b.example.com" is already claimed by tenants/ws-b2.yaml`}, 2},
		{"removal frees the domain", func() {
			r.Remove("tenants/ws-b2.yaml")
		}, nil, 1},
		{"a file sorting first takes a free domain", func() {
			r.Write("tenants/ws-0.yaml", testkit.TenantYAML(tenant("ws-0", "nyc1", "zero.example.com", "c.example.com")))
		}, []string{`tenants/ws-c.yaml:12:7: spec.domains[0]: domain "c.example.com" is already claimed by tenants/ws-0.yaml`}, 2},
	}
	for _, st := range steps {
		st.change()
		r.Commit(st.name)
		snap := sync(st.name)
		if diff := cmp.Diff(errText(snap), st.want); diff != "" {
			t.Errorf("%s: errors (-got +want):\n%s", st.name, diff)
		}
		if got := inc.ix.unique.checked; got > st.checked {
			t.Errorf("%s: the incremental check looked at %d files, want ≤ %d", st.name, got, st.checked)
		}
	}
}
