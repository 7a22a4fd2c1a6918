package tenants

import (
	"sort"

	"genesis.dev/fleet/schema"
)

// uniqueIndex applies the rules that span tenants (schema.CheckUnique: no
// two files share an id, no two claim a domain) incrementally. It keeps, with
// the index, the version of each file the rules see (its candidate) and,
// for every id and every domain, the files that list it. A sync hands it
// only the files whose candidate changed; it re-runs schema.CheckUnique on
// the files connected to them (sharing an id or a domain, transitively,
// before or after the change) and keeps every other file's result.
//
// That is exact, not an approximation: schema.CheckUnique's verdict on a
// file depends only on earlier files (in path order) that list one of its
// keys, so the whole set's result restricted to a connected group is the
// group's own result. A one-tenant commit therefore checks one small group
// (usually the tenant alone) instead of every tenant.
type uniqueIndex struct {
	cand      map[string]*schema.Tenant // by file: the version the rules see
	byID      map[string][]string       // id → files listing it, sorted
	byDomain  map[string][]string       // domain → files listing it, sorted
	conflicts map[string]schema.Errors  // by file; only files with errors
	// checked counts the files the last update re-checked (tests, benchmarks).
	checked int
}

func newUniqueIndex() *uniqueIndex {
	return &uniqueIndex{
		cand:      map[string]*schema.Tenant{},
		byID:      map[string][]string{},
		byDomain:  map[string][]string{},
		conflicts: map[string]schema.Errors{},
	}
}

// update sets each file's candidate (nil: the file has none, it is gone or
// was never valid) and re-checks the groups the changes touch. It returns
// the files it re-checked: no other file's conflicts changed.
func (u *uniqueIndex) update(changes map[string]*schema.Tenant) []string {
	u.checked = 0
	if len(changes) == 0 {
		return nil
	}
	// Keys whose holders must be re-checked: the old and new keys of every
	// changed file.
	ids := map[string]bool{}
	domains := map[string]bool{}
	mark := func(t *schema.Tenant) {
		if t == nil {
			return
		}
		ids[t.Metadata.ID] = true
		for _, d := range t.Spec.Domains {
			domains[d] = true
		}
	}
	for f, t := range changes {
		old := u.cand[f]
		if old == t {
			continue
		}
		mark(old)
		mark(t)
		if old != nil {
			removeSorted(u.byID, old.Metadata.ID, f)
			for _, d := range old.Spec.Domains {
				removeSorted(u.byDomain, d, f)
			}
			delete(u.cand, f)
		}
		delete(u.conflicts, f)
		if t != nil {
			u.cand[f] = t
			insertSorted(u.byID, t.Metadata.ID, f)
			for _, d := range t.Spec.Domains {
				insertSorted(u.byDomain, d, f)
			}
		}
	}

	// Close over the files listing those keys, and those files' own keys.
	group := map[string]bool{}
	var queue []string
	add := func(files []string) {
		for _, f := range files {
			if !group[f] {
				group[f] = true
				queue = append(queue, f)
			}
		}
	}
	for id := range ids {
		add(u.byID[id])
	}
	for d := range domains {
		add(u.byDomain[d])
	}
	for len(queue) > 0 {
		f := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		t := u.cand[f]
		if !ids[t.Metadata.ID] {
			ids[t.Metadata.ID] = true
			add(u.byID[t.Metadata.ID])
		}
		for _, d := range t.Spec.Domains {
			if !domains[d] {
				domains[d] = true
				add(u.byDomain[d])
			}
		}
	}

	files := make([]schema.TenantFile, 0, len(group))
	checked := make([]string, 0, len(group)+len(changes))
	for f := range group {
		files = append(files, schema.TenantFile{File: f, Tenant: u.cand[f]})
		checked = append(checked, f)
		delete(u.conflicts, f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].File < files[j].File })
	for f, errs := range schema.CheckUnique(files) {
		u.conflicts[f] = errs
	}
	u.checked = len(files)
	// A changed file without a candidate now is in no group; its conflicts
	// were dropped above.
	for f := range changes {
		if !group[f] {
			checked = append(checked, f)
		}
	}
	return checked
}

// insertSorted adds file to m[key], kept sorted and without repeats (a file
// listing one domain twice is one holder).
func insertSorted(m map[string][]string, key, file string) {
	list := m[key]
	i := sort.SearchStrings(list, file)
	if i < len(list) && list[i] == file {
		return
	}
	list = append(list, "")
	copy(list[i+1:], list[i:])
	list[i] = file
	m[key] = list
}

func removeSorted(m map[string][]string, key, file string) {
	list := m[key]
	i := sort.SearchStrings(list, file)
	if i == len(list) || list[i] != file {
		return
	}
	list = append(list[:i], list[i+1:]...)
	if len(list) == 0 {
		delete(m, key)
		return
	}
	m[key] = list
}
