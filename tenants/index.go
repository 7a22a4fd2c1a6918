package tenants

import (
	"context"
	"errors"
	"fmt"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"

	"github.com/go-git/go-git/v5/plumbing"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/schema"
)

// file is one file of the state repository at some commit (or on disk) and
// the git blob hash of its content.
type file struct {
	path string
	blob plumbing.Hash
	link bool // a symbolic link in git, never followed
}

// listing is the part of a state repository the index reads: genesis.yaml,
// templates/workflows/*.json and tenants/*.yaml (or .yml), each with its blob
// hash.
type listing struct {
	fleet     *file // nil when genesis.yaml is missing
	templates []file
	// tenantsKey identifies the content of the tenants folder (its git tree
	// hash). When it equals the key of the last sync, the folder is not
	// listed at all; the zero hash means "unknown, list it".
	tenantsKey plumbing.Hash
	tenants    func() ([]file, error)
}

// readFunc returns the content of a listed file. A *fileError makes only
// that file invalid; any other error fails the whole sync.
type readFunc func(f file) ([]byte, error)

// fileError is a problem with one file (too large, not a regular file) that
// fails that file only.
type fileError struct{ msg string }

func (e *fileError) Error() string { return e.msg }

// tooLarge is the error of a file over schema.MaxFileSize, worded as
// schema.LoadDir words it.
func tooLarge() error {
	return &fileError{fmt.Sprintf("file is larger than the %d-byte limit", schema.MaxFileSize)}
}

// isTenantFile reports whether name, a file directly in tenants/, is a tenant.
func isTenantFile(name string) bool {
	return strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
}

type fleetFile struct {
	present bool
	blob    plumbing.Hash
	fleet   *schema.Fleet // nil when invalid
	errs    schema.Errors
}

type templateFile struct {
	blob plumbing.Hash
	name string
	tpl  *schema.Template // nil when invalid
	errs schema.Errors
}

// tenantFile is what one blob of one tenant path decoded to. The decode is
// kept for as long as the blob stays; the check is redone when the fleet or
// the templates change.
type tenantFile struct {
	blob       plumbing.Hash
	blobHex    string
	tenant     *schema.Tenant // nil when decoding failed
	decodeErrs schema.Errors
	checkErrs  schema.Errors
}

func (f *tenantFile) errs() schema.Errors {
	if f.decodeErrs != nil {
		return f.decodeErrs
	}
	return f.checkErrs
}

type validVersion struct {
	tenant  *schema.Tenant
	blobHex string
}

// index is the incremental parse state behind a Source or a DirSource. It is
// not safe for concurrent use; its owner serializes calls to update. Only
// the counters may be read concurrently.
type index struct {
	parses, tenantParses, checks, syncs atomic.Int64

	fleet          fleetFile
	validFleet     *schema.Fleet
	templates      map[string]templateFile     // by path
	validTemplates map[string]*schema.Template // last valid, by name

	// The context the tenants were last checked against.
	ctxFleet     *schema.Fleet
	ctxTemplates map[string]*schema.Template
	ctxBad       map[string]bool

	loaded     bool
	tenantsKey plumbing.Hash
	files      map[string]*tenantFile // by path
	paths      []string               // keys of files, sorted
	valid      map[string]validVersion

	prev Snapshot
	// prevTenantErrs is the tenants' part of prev.Errors.
	prevTenantErrs schema.Errors

	// unique holds the cross-tenant rules' state, updated with the files
	// whose candidate changed.
	unique *uniqueIndex
	// wholeSet runs schema.CheckUnique over every tenant on every sync
	// instead (the benchmark's same-run baseline and the tests' oracle).
	wholeSet bool
}

func newIndex() *index {
	return &index{
		templates:      map[string]templateFile{},
		validTemplates: map[string]*schema.Template{},
		files:          map[string]*tenantFile{},
		valid:          map[string]validVersion{},
		unique:         newUniqueIndex(),
	}
}

func (ix *index) stats() Stats {
	return Stats{
		Syncs:        ix.syncs.Load(),
		Parses:       ix.parses.Load(),
		TenantParses: ix.tenantParses.Load(),
		Checks:       ix.checks.Load(),
	}
}

// update brings the index to l and returns the Snapshot it describes (Commit
// and Time left for the caller). Everything that can fail (reading and
// decoding) happens before the index is modified, so a failed update leaves
// the index, and the previous Snapshot, as they were.
func (ix *index) update(ctx context.Context, l listing, read readFunc) (Snapshot, error) {
	// genesis.yaml
	fleet := ix.fleet
	switch {
	case l.fleet == nil:
		fleet = fleetFile{errs: schema.Errors{{File: schema.FleetFile, Message: "file is missing"}}}
	case !fleet.present || fleet.blob != l.fleet.blob:
		fleet = fleetFile{present: true, blob: l.fleet.blob}
		data, err := read(*l.fleet)
		var fe *fileError
		switch {
		case errors.As(err, &fe):
			fleet.errs = schema.Errors{{File: schema.FleetFile, Message: fe.msg}}
		case err != nil:
			return Snapshot{}, fmt.Errorf("read %s: %w", schema.FleetFile, err)
		default:
			ix.parses.Add(1)
			fleet.fleet, fleet.errs = schema.DecodeFleet(schema.FleetFile, data)
		}
	}
	effFleet := fleet.fleet
	if effFleet == nil {
		effFleet = ix.validFleet
	}

	// templates/workflows/*.json
	templates := make(map[string]templateFile, len(l.templates))
	for _, f := range l.templates {
		if old, ok := ix.templates[f.path]; ok && old.blob == f.blob {
			templates[f.path] = old
			continue
		}
		tf := templateFile{blob: f.blob, name: strings.TrimSuffix(path.Base(f.path), ".json")}
		data, err := read(f)
		var fe *fileError
		switch {
		case errors.As(err, &fe):
			tf.errs = schema.Errors{{File: f.path, Message: fe.msg}}
		case err != nil:
			return Snapshot{}, fmt.Errorf("read %s: %w", f.path, err)
		default:
			ix.parses.Add(1)
			tf.tpl, tf.errs = schema.ParseTemplate(f.path, tf.name, data)
		}
		templates[f.path] = tf
	}
	sctx := schema.Context{Fleet: effFleet, Templates: map[string]*schema.Template{}, BadTemplates: map[string]bool{}}
	for _, tf := range templates {
		if tf.tpl != nil {
			sctx.Templates[tf.name] = tf.tpl
		} else {
			sctx.BadTemplates[tf.name] = true
		}
	}
	contextChanged := !ix.loaded || effFleet != ix.ctxFleet || !samePointers(sctx.Templates, ix.ctxTemplates) || !sameSet(sctx.BadTemplates, ix.ctxBad)

	// tenants/*.yaml: list, diff against the index, decode what changed.
	var changed []file
	var removed []string
	listed := ix.loaded && !l.tenantsKey.IsZero() && l.tenantsKey == ix.tenantsKey
	if !listed {
		files, err := l.tenants()
		if err != nil {
			return Snapshot{}, fmt.Errorf("list %s: %w", schema.TenantsDir, err)
		}
		changed, removed = ix.diff(files)
	}
	decoded, err := ix.decodeTenants(ctx, changed, read, sctx)
	if err != nil {
		return Snapshot{}, err
	}

	// Nothing below fails: commit the new state.
	ix.fleet = fleet
	if fleet.fleet != nil {
		ix.validFleet = fleet.fleet
	}
	ix.templates = templates
	for _, tf := range templates {
		if tf.tpl != nil {
			ix.validTemplates[tf.name] = tf.tpl
		}
	}
	if !listed {
		ix.tenantsKey = l.tenantsKey
	}
	for _, p := range removed {
		delete(ix.files, p)
	}
	added := false
	for i, f := range changed {
		if _, ok := ix.files[f.path]; !ok {
			added = true
		}
		ix.files[f.path] = decoded[i]
	}
	if contextChanged {
		// The fleet or a template moved: re-run the context rules on every
		// tenant, reusing its decode. Files decoded just now were checked
		// against sctx already.
		fresh := make(map[*tenantFile]bool, len(decoded))
		for _, f := range decoded {
			fresh[f] = true
		}
		for p, f := range ix.files {
			if f.tenant != nil && !fresh[f] {
				ix.checks.Add(1)
				f.checkErrs = f.tenant.Check(p, sctx)
			}
		}
	}
	if added || len(removed) > 0 {
		ix.paths = ix.paths[:0]
		for p := range ix.files {
			ix.paths = append(ix.paths, p)
		}
		sort.Strings(ix.paths)
	}
	ix.ctxFleet, ix.ctxTemplates, ix.ctxBad = effFleet, sctx.Templates, sctx.BadTemplates
	wasLoaded := ix.loaded
	ix.loaded = true
	ix.syncs.Add(1)

	tenantsSame := wasLoaded && len(changed) == 0 && len(removed) == 0 && !contextChanged
	snap := ix.snapshot(fleet, effFleet, sctx, tenantsSame, removed)
	ix.prev = snap
	return snap, nil
}

// diff compares the listed tenant files with the index: which are new or
// have a new blob, and which paths are gone.
func (ix *index) diff(files []file) (changed []file, removed []string) {
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	i, j := 0, 0
	for i < len(files) || j < len(ix.paths) {
		switch {
		case j == len(ix.paths) || (i < len(files) && files[i].path < ix.paths[j]):
			changed = append(changed, files[i])
			i++
		case i == len(files) || ix.paths[j] < files[i].path:
			removed = append(removed, ix.paths[j])
			j++
		default:
			if ix.files[ix.paths[j]].blob != files[i].blob {
				changed = append(changed, files[i])
			}
			i++
			j++
		}
	}
	return changed, removed
}

// decodeTenants reads the changed files in order (the repository is read by
// one goroutine only) and decodes and checks them on every CPU.
func (ix *index) decodeTenants(ctx context.Context, changed []file, read readFunc, sctx schema.Context) ([]*tenantFile, error) {
	out := make([]*tenantFile, len(changed))
	// load reads file i; a nil result with a nil error means out[i] is
	// already set to the file's error.
	load := func(i int) ([]byte, error) {
		f := changed[i]
		data, err := read(f)
		var fe *fileError
		if errors.As(err, &fe) {
			out[i] = &tenantFile{blob: f.blob, blobHex: f.blob.String(), decodeErrs: schema.Errors{{File: f.path, Message: fe.msg}}}
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f.path, err)
		}
		return data, nil
	}
	decode := func(i int, data []byte) {
		f := changed[i]
		ix.parses.Add(1)
		ix.tenantParses.Add(1)
		tf := &tenantFile{blob: f.blob, blobHex: f.blob.String()}
		tf.tenant, tf.decodeErrs = schema.DecodeTenant(f.path, data)
		if tf.tenant != nil {
			ix.checks.Add(1)
			tf.checkErrs = tf.tenant.Check(f.path, sctx)
		}
		out[i] = tf
	}

	workers := runtime.GOMAXPROCS(0)
	if len(changed) < 64 || workers == 1 {
		for i := range changed {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			data, err := load(i)
			if err != nil {
				return nil, err
			}
			if data != nil {
				decode(i, data)
			}
		}
		return out, nil
	}

	type job struct {
		i    int
		data []byte
	}
	jobs := make(chan job, 4*workers)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(jobs)
		for i := range changed {
			data, err := load(i)
			if err != nil {
				return err
			}
			if data == nil {
				continue
			}
			select {
			case jobs <- job{i, data}:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range workers {
		g.Go(func() error {
			for j := range jobs {
				decode(j.i, j.data)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return out, nil
}

// snapshot builds the Snapshot of the committed index state: it applies the
// cross-tenant rules, picks the version to act on for each tenant, and
// compares with the previous Snapshot. When no tenant file and nothing they
// are checked against changed (tenantsSame), the previous tenant states are
// still exact and are shared, not rebuilt.
func (ix *index) snapshot(fleet fleetFile, effFleet *schema.Fleet, sctx schema.Context, tenantsSame bool, removed []string) Snapshot {
	snap := Snapshot{
		Fleet:        effFleet,
		FleetErrors:  fleet.errs,
		FleetChanged: effFleet != ix.prev.Fleet,
	}
	errs := append(schema.Errors(nil), fleet.errs...)
	for _, tf := range ix.templates {
		errs = append(errs, tf.errs...)
	}
	if tenantsSame {
		snap.Tenants, snap.Templates = ix.prev.Tenants, ix.prev.Templates
		errs = append(errs, ix.prevTenantErrs...)
		errs.Sort()
		snap.Errors = errs
		return snap
	}
	snap.Tenants = make(map[string]TenantState, len(ix.paths))
	var tenantErrs schema.Errors

	conflicts := ix.checkUnique(removed)

	for _, p := range ix.paths {
		f := ix.files[p]
		id := schema.IDFromPath(p)
		st := TenantState{ID: id, File: p, Blob: f.blobHex}
		fileErrs := f.errs()
		if fileErrs == nil {
			fileErrs = conflicts[p]
		}
		if len(fileErrs) == 0 {
			ix.valid[id] = validVersion{tenant: f.tenant, blobHex: f.blobHex}
			st.Status, st.Tenant, st.ValidBlob = StatusValid, f.tenant, st.Blob
		} else {
			st.Status, st.Errors = StatusInvalid, fileErrs
			tenantErrs = append(tenantErrs, fileErrs...)
			if v, ok := ix.valid[id]; ok {
				st.Tenant, st.ValidBlob = v.tenant, v.blobHex
			}
		}
		// Two files for one id (x.yaml and x.yml): a valid one wins.
		if prev, dup := snap.Tenants[id]; dup && (prev.Status == StatusValid || st.Status == StatusInvalid) {
			continue
		}
		snap.Tenants[id] = st
	}
	if len(removed) > 0 {
		for id := range ix.valid {
			if _, ok := snap.Tenants[id]; !ok {
				delete(ix.valid, id)
			}
		}
	}

	// Templates: every valid one, plus the last valid version of a broken
	// or deleted one that a tenant still acts on.
	snap.Templates = make(map[string]*schema.Template, len(sctx.Templates))
	for name, t := range sctx.Templates {
		snap.Templates[name] = t
	}
	if len(ix.validTemplates) > len(sctx.Templates) {
		for _, st := range snap.Tenants {
			if st.Tenant == nil {
				continue
			}
			for _, w := range st.Tenant.Spec.Workflows {
				if _, ok := snap.Templates[w.Template]; !ok && ix.validTemplates[w.Template] != nil {
					snap.Templates[w.Template] = ix.validTemplates[w.Template]
				}
			}
		}
	}

	snap.Changed = changedIDs(ix.prev, snap)
	ix.prevTenantErrs = tenantErrs
	errs = append(errs, tenantErrs...)
	errs.Sort()
	snap.Errors = errs
	return snap
}

// checkUnique applies the cross-tenant rules and returns the errors by
// file. The rules see, for each file, the version that will be acted on: a
// broken tenant keeps its id and domains through its last valid version, so
// no newcomer can take them meanwhile. Only the files whose candidate moved
// since the last sync (a pointer comparison per file) are handed to the
// unique index, which re-checks just the groups they touch.
func (ix *index) checkUnique(removed []string) map[string]schema.Errors {
	candidate := func(p string) *schema.Tenant {
		f := ix.files[p]
		if f.errs() == nil {
			return f.tenant
		}
		if v, ok := ix.valid[schema.IDFromPath(p)]; ok {
			return v.tenant
		}
		return nil
	}
	if ix.wholeSet {
		cands := make([]schema.TenantFile, 0, len(ix.paths))
		for _, p := range ix.paths {
			if t := candidate(p); t != nil {
				cands = append(cands, schema.TenantFile{File: p, Tenant: t})
			}
		}
		return schema.CheckUnique(cands)
	}
	changes := map[string]*schema.Tenant{}
	for _, p := range ix.paths {
		if t := candidate(p); t != ix.unique.cand[p] {
			changes[p] = t
		}
	}
	for _, p := range removed {
		if _, ok := ix.unique.cand[p]; ok {
			changes[p] = nil
		}
	}
	ix.unique.update(changes)
	return ix.unique.conflicts
}

// changedIDs lists the tenants whose state differs between two snapshots,
// including those using a template that changed.
func changedIDs(prev, next Snapshot) []string {
	var tplChanged map[string]bool
	for name, t := range next.Templates {
		if prev.Templates[name] != t {
			if tplChanged == nil {
				tplChanged = map[string]bool{}
			}
			tplChanged[name] = true
		}
	}
	for name := range prev.Templates {
		if _, ok := next.Templates[name]; !ok {
			if tplChanged == nil {
				tplChanged = map[string]bool{}
			}
			tplChanged[name] = true
		}
	}
	var ids []string
	for id, st := range next.Tenants {
		old, ok := prev.Tenants[id]
		if !ok || old.Blob != st.Blob || old.Status != st.Status || old.Tenant != st.Tenant || !sameErrors(old.Errors, st.Errors) || usesTemplate(st.Tenant, tplChanged) {
			ids = append(ids, id)
		}
	}
	for id := range prev.Tenants {
		if _, ok := next.Tenants[id]; !ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func usesTemplate(t *schema.Tenant, names map[string]bool) bool {
	if t == nil || len(names) == 0 {
		return false
	}
	for _, w := range t.Spec.Workflows {
		if names[w.Template] {
			return true
		}
	}
	return false
}

func sameErrors(a, b schema.Errors) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func samePointers[V comparable](a, b map[string]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sameSet(a, b map[string]bool) bool { return samePointers(a, b) }
