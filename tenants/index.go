package tenants

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"runtime"
	"slices"
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
	// diffTenants, when set, compares the tenants folder with known (the
	// files the index holds, sorted by path) without listing it: what
	// index.diff would return for tenants(). prev is the folder's raw
	// tree from the sync known came from, or nil; raw is the folder's to
	// keep for the next. ok false means "use tenants".
	diffTenants func(prev []byte, known []*tenantFile) (changed []file, removed []string, raw []byte, ok bool)
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
	path       string
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
	tenantsRaw []byte                 // the tenants folder's raw tree at tenantsKey, when known
	files      map[string]*tenantFile // by path
	order      []*tenantFile          // the values of files, sorted by path
	valid      map[string]validVersion

	prev Snapshot
	// prevTenantErrs is the tenants' part of prev.Errors.
	prevTenantErrs schema.Errors

	// What prev was built from, kept so that the next Snapshot rebuilds only
	// the tenants a commit touches (see patch).
	fileErrs map[string]schema.Errors // by path: each invalid file's errors
	errPaths []string                 // keys of fileErrs, sorted
	invalid  int                      // tenants of prev with StatusInvalid
	// uses counts, per template name, the workflows of the versions to act
	// on in prev.Tenants that name it.
	uses map[string]int
	// pairs holds the ids with two files (x.yaml and x.yml): their states
	// depend on each other through valid, so every patch redoes them.
	pairs map[string]bool
	// odd counts files whose path is not TenantsDir/<name> (possible only
	// in a malformed tree); while there are any, every Snapshot is rebuilt.
	odd int
	// patches counts the Snapshots patch built (tests).
	patches int

	// unique holds the cross-tenant rules' state, updated with the files
	// whose candidate changed.
	unique *uniqueIndex
	// full recomputes every tenant on every sync, as before incremental
	// snapshots: it lists the whole tenants folder and diffs it against the
	// index, and rebuilds every tenant's state and the changed list (the
	// benchmark's same-run baseline and the tests' oracle).
	full bool
	// wholeSet runs schema.CheckUnique over every tenant on every sync
	// instead of the unique index, and implies full (the benchmark's
	// baseline from before issue 23 and the tests' oracle).
	wholeSet bool
	// noShare decodes an edited file without sharing the unchanged parts
	// of its previous version (schema.Tenant.ShareFrom): the benchmark's
	// same-run baseline.
	noShare bool
}

func newIndex() *index {
	return &index{
		templates:      map[string]templateFile{},
		validTemplates: map[string]*schema.Template{},
		files:          map[string]*tenantFile{},
		valid:          map[string]validVersion{},
		fileErrs:       map[string]schema.Errors{},
		uses:           map[string]int{},
		pairs:          map[string]bool{},
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
	var raw []byte
	listed := ix.loaded && !l.tenantsKey.IsZero() && l.tenantsKey == ix.tenantsKey
	// A Snapshot that will likely be patched starts from a copy of the
	// previous tenant map, which at 100,000 tenants takes as long as
	// reading the tenants tree: it is made meanwhile, on another goroutine.
	var prevTenants func() map[string]TenantState
	if !listed && ix.loaded && !contextChanged && !ix.recomputeAll() && ix.odd == 0 {
		prevTenants = cloneAsync(ix.prev.Tenants)
		defer prevTenants() // joined on every path
	}
	if !listed {
		ok := false
		if l.diffTenants != nil && !ix.recomputeAll() {
			changed, removed, raw, ok = l.diffTenants(ix.tenantsRaw, ix.order)
		}
		if !ok {
			raw = nil
			files, err := l.tenants()
			if err != nil {
				return Snapshot{}, fmt.Errorf("list %s: %w", schema.TenantsDir, err)
			}
			changed, removed = ix.diff(files)
		}
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
		ix.tenantsKey, ix.tenantsRaw = l.tenantsKey, raw
	}
	wasOdd := ix.odd > 0
	ix.apply(decoded, removed)
	if contextChanged {
		// The fleet or a template moved: re-run the context rules on every
		// tenant, reusing its decode. Files decoded just now were checked
		// against sctx already.
		fresh := make(map[*tenantFile]bool, len(decoded))
		for _, f := range decoded {
			fresh[f] = true
		}
		for _, f := range ix.order {
			if f.tenant != nil && !fresh[f] {
				ix.checks.Add(1)
				f.checkErrs = f.tenant.Check(f.path, sctx)
			}
		}
	}
	ix.ctxFleet, ix.ctxTemplates, ix.ctxBad = effFleet, sctx.Templates, sctx.BadTemplates
	wasLoaded := ix.loaded
	ix.loaded = true
	ix.syncs.Add(1)

	tenantsSame := wasLoaded && len(changed) == 0 && len(removed) == 0 && !contextChanged
	// A patch needs a previous Snapshot of the same fleet and templates,
	// and every file, before and after, at a path idPaths finds.
	patch := wasLoaded && !contextChanged && !ix.recomputeAll() && !wasOdd && ix.odd == 0
	if patch && prevTenants == nil {
		prevTenants = func() map[string]TenantState { return maps.Clone(ix.prev.Tenants) }
	}
	snap := ix.snapshot(fleet, effFleet, sctx, tenantsSame, patch, prevTenants, decoded, removed)
	ix.prev = snap
	return snap, nil
}

func (ix *index) recomputeAll() bool { return ix.full || ix.wholeSet }

// apply puts the decoded files in place of the ones they replace and drops
// the removed paths; both lists are in path order.
func (ix *index) apply(decoded []*tenantFile, removed []string) {
	var added []*tenantFile
	for _, p := range removed {
		delete(ix.files, p)
		ix.pairChanged(p)
		if !simplePath(p) {
			ix.odd--
		}
	}
	for _, f := range decoded {
		if _, ok := ix.files[f.path]; !ok {
			added = append(added, f)
			if !simplePath(f.path) {
				ix.odd++
			}
		}
		ix.files[f.path] = f
		ix.pairChanged(f.path)
	}
	if len(added) == 0 && len(removed) == 0 {
		for _, f := range decoded {
			i := sort.Search(len(ix.order), func(i int) bool { return ix.order[i].path >= f.path })
			ix.order[i] = f
		}
		return
	}
	// Merge, keeping the last of any path listed twice (a malformed
	// listing), as the files map does.
	less := func(i, j int) bool { return decoded[i].path < decoded[j].path }
	if !sort.SliceIsSorted(decoded, less) {
		sort.SliceStable(decoded, less)
	}
	order := make([]*tenantFile, 0, len(ix.files))
	i, j, k := 0, 0, 0
	for i < len(ix.order) || j < len(decoded) {
		if j < len(decoded) && (i == len(ix.order) || decoded[j].path <= ix.order[i].path) {
			if j+1 < len(decoded) && decoded[j+1].path == decoded[j].path {
				j++
				continue
			}
			if i < len(ix.order) && ix.order[i].path == decoded[j].path {
				i++
			}
			order = append(order, decoded[j])
			j++
			continue
		}
		p := ix.order[i].path
		for k < len(removed) && removed[k] < p {
			k++
		}
		if k < len(removed) && removed[k] == p {
			i++
			continue
		}
		order = append(order, ix.order[i])
		i++
	}
	ix.order = order
}

// simplePath reports whether p is TenantsDir/<name>: the files of one id
// are then found by name (idPaths).
func simplePath(p string) bool {
	name, ok := strings.CutPrefix(p, schema.TenantsDir+"/")
	return ok && name != "" && !strings.Contains(name, "/")
}

// idPaths are the paths a tenant id's file can have, in path order.
func idPaths(id string) [2]string {
	return [2]string{schema.TenantsDir + "/" + id + ".yaml", schema.TenantsDir + "/" + id + ".yml"}
}

// pairChanged updates pairs for the id of a file added or removed.
func (ix *index) pairChanged(p string) {
	id := schema.IDFromPath(p)
	var buf [128]byte
	both := true
	for _, ext := range [...]string{".yaml", ".yml"} {
		q := append(append(append(append(buf[:0], schema.TenantsDir...), '/'), id...), ext...)
		if _, ok := ix.files[string(q)]; !ok { // idPaths(id), without a string made
			both = false
			break
		}
	}
	if both {
		ix.pairs[id] = true
	} else if len(ix.pairs) > 0 {
		delete(ix.pairs, id)
	}
}

// diff compares the listed tenant files with the index: which are new or
// have a new blob, and which paths are gone.
func (ix *index) diff(files []file) (changed []file, removed []string) {
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	i, j := 0, 0
	for i < len(files) || j < len(ix.order) {
		switch {
		case j == len(ix.order) || (i < len(files) && files[i].path < ix.order[j].path):
			changed = append(changed, files[i])
			i++
		case i == len(files) || ix.order[j].path < files[i].path:
			removed = append(removed, ix.order[j].path)
			j++
		default:
			if ix.order[j].blob != files[i].blob {
				changed = append(changed, files[i])
			}
			i++
			j++
		}
	}
	return changed, removed
}

// decodeTenants reads the changed files in order (the repository is read by
// one goroutine only) and decodes and checks them on every CPU. Each decode
// shares what its file's previous version holds unchanged; the workers only
// read ix.files, which is modified after they are done.
func (ix *index) decodeTenants(ctx context.Context, changed []file, read readFunc, sctx schema.Context) ([]*tenantFile, error) {
	out := make([]*tenantFile, len(changed))
	// load reads file i; a nil result with a nil error means out[i] is
	// already set to the file's error.
	load := func(i int) ([]byte, error) {
		f := changed[i]
		data, err := read(f)
		var fe *fileError
		if errors.As(err, &fe) {
			out[i] = &tenantFile{path: f.path, blob: f.blob, blobHex: f.blob.String(), decodeErrs: schema.Errors{{File: f.path, Message: fe.msg}}}
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
		tf := &tenantFile{path: f.path, blob: f.blob, blobHex: f.blob.String()}
		tf.tenant, tf.decodeErrs = schema.DecodeTenant(f.path, data)
		if prev, ok := ix.files[f.path]; ok && !ix.noShare {
			// The previous Snapshot holds prev's decode until its readers
			// move on: what the edit left alone is kept once, not twice.
			tf.tenant.ShareFrom(prev.tenant)
		}
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
// still exact and are shared, not rebuilt. Otherwise, with patch, only the
// tenants the commit touched are redone (see patch); without, every one is.
func (ix *index) snapshot(fleet fleetFile, effFleet *schema.Fleet, sctx schema.Context, tenantsSame, patch bool, prevTenants func() map[string]TenantState, decoded []*tenantFile, removed []string) Snapshot {
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
	var tenantErrs schema.Errors
	var touched map[string]bool // ids redone by patch
	if patch {
		ix.patches++
		snap.Tenants, touched = ix.patch(prevTenants(), decoded, removed)
		for _, p := range ix.errPaths {
			tenantErrs = append(tenantErrs, ix.fileErrs[p]...)
		}
	} else {
		snap.Tenants, tenantErrs = ix.rebuild(removed)
	}

	// Templates: every valid one, plus the last valid version of a broken
	// or deleted one that a tenant still acts on.
	snap.Templates = make(map[string]*schema.Template, len(sctx.Templates))
	for name, t := range sctx.Templates {
		snap.Templates[name] = t
	}
	if len(ix.validTemplates) > len(sctx.Templates) {
		for name, t := range ix.validTemplates {
			if _, ok := snap.Templates[name]; !ok && t != nil && ix.uses[name] > 0 {
				snap.Templates[name] = t
			}
		}
	}

	if patch {
		snap.Changed = changedAmong(ix.prev, snap, touched)
	} else {
		snap.Changed = changedIDs(ix.prev, snap)
	}
	ix.prevTenantErrs = tenantErrs
	errs = append(errs, tenantErrs...)
	errs.Sort()
	snap.Errors = errs
	return snap
}

// rebuild judges every file and returns the tenant states and, in path
// order, the errors of every invalid file. It resets what patch keeps.
func (ix *index) rebuild(removed []string) (map[string]TenantState, schema.Errors) {
	conflicts := ix.checkUnique(removed)
	tenants := make(map[string]TenantState, len(ix.order))
	var tenantErrs schema.Errors
	clear(ix.fileErrs)
	ix.errPaths = ix.errPaths[:0]
	for _, f := range ix.order {
		st := ix.judge(f, conflicts)
		if st.Status == StatusInvalid {
			tenantErrs = append(tenantErrs, st.Errors...)
			ix.fileErrs[f.path] = st.Errors
			ix.errPaths = append(ix.errPaths, f.path)
		}
		place(tenants, st)
	}
	if len(removed) > 0 {
		for id := range ix.valid {
			if _, ok := tenants[id]; !ok {
				delete(ix.valid, id)
			}
		}
	}
	ix.invalid = 0
	clear(ix.uses)
	for _, st := range tenants {
		ix.count(st, 1)
	}
	return tenants, tenantErrs
}

// patch is rebuild for a commit that changed some tenant files (decoded,
// removed) and nothing they are checked against: given tenants, a copy of
// the previous tenant map, it redoes only the ids whose state can have
// moved, which gives what rebuild gives (the tests hold it to that). A
// file's state depends on the file, its cross-tenant errors and, when it
// is invalid, the last valid version of its id; so the ids redone are
// those of the changed and removed files, those of the files whose
// cross-tenant errors the unique index re-checked, and every id with two
// files, whose last valid version can move between its files from one sync
// to the next. It returns the new map and the ids it redid.
func (ix *index) patch(tenants map[string]TenantState, decoded []*tenantFile, removed []string) (map[string]TenantState, map[string]bool) {
	ids := make(map[string]bool, len(decoded)+len(removed)+len(ix.pairs))
	for _, f := range decoded {
		ids[schema.IDFromPath(f.path)] = true
	}
	for _, p := range removed {
		ids[schema.IDFromPath(p)] = true
	}
	for id := range ix.pairs {
		ids[id] = true
	}

	// The cross-tenant rules, given every file whose candidate can have
	// moved: those of the ids above (a superset is harmless).
	changes := map[string]*schema.Tenant{}
	for id := range ids {
		for _, p := range idPaths(id) {
			if f, ok := ix.files[p]; ok {
				if t := ix.candidate(f); t != ix.unique.cand[p] {
					changes[p] = t
				}
			}
		}
	}
	for _, p := range removed {
		if _, ok := ix.unique.cand[p]; ok {
			changes[p] = nil
		}
	}
	for _, p := range ix.unique.update(changes) {
		ids[schema.IDFromPath(p)] = true
	}
	conflicts := ix.unique.conflicts

	if tenants == nil {
		tenants = map[string]TenantState{}
	}
	for id := range ids {
		if old, ok := tenants[id]; ok {
			ix.count(old, -1)
			delete(tenants, id)
		}
		for _, p := range idPaths(id) {
			if _, ok := ix.fileErrs[p]; ok {
				delete(ix.fileErrs, p)
				i := sort.SearchStrings(ix.errPaths, p)
				ix.errPaths = slices.Delete(ix.errPaths, i, i+1)
			}
			f, ok := ix.files[p]
			if !ok {
				continue
			}
			st := ix.judge(f, conflicts)
			if st.Status == StatusInvalid {
				ix.fileErrs[p] = st.Errors
				i := sort.SearchStrings(ix.errPaths, p)
				ix.errPaths = slices.Insert(ix.errPaths, i, p)
			}
			place(tenants, st)
		}
		if st, ok := tenants[id]; ok {
			ix.count(st, 1)
		} else {
			delete(ix.valid, id) // its files are gone
		}
	}
	return tenants, ids
}

// cloneAsync copies m on a goroutine of its own; the function returned
// waits for the copy and returns it (the same one at every call).
func cloneAsync(m map[string]TenantState) func() map[string]TenantState {
	done := make(chan struct{})
	var c map[string]TenantState
	go func() {
		defer close(done)
		c = maps.Clone(m)
	}()
	return func() map[string]TenantState {
		<-done
		return c
	}
}

// judge returns the state of one file and, when the file is valid, records
// it as its id's last valid version.
func (ix *index) judge(f *tenantFile, conflicts map[string]schema.Errors) TenantState {
	id := schema.IDFromPath(f.path)
	st := TenantState{ID: id, File: f.path, Blob: f.blobHex}
	fileErrs := f.errs()
	if fileErrs == nil {
		fileErrs = conflicts[f.path]
	}
	if len(fileErrs) == 0 {
		ix.valid[id] = validVersion{tenant: f.tenant, blobHex: f.blobHex}
		st.Status, st.Tenant, st.ValidBlob = StatusValid, f.tenant, st.Blob
	} else {
		st.Status, st.Errors = StatusInvalid, fileErrs
		if v, ok := ix.valid[id]; ok {
			st.Tenant, st.ValidBlob = v.tenant, v.blobHex
		}
	}
	return st
}

// place puts a file's state in tenants, the files of an id in path order.
// Two files for one id (x.yaml and x.yml): a valid one wins, else the first.
func place(tenants map[string]TenantState, st TenantState) {
	if prev, dup := tenants[st.ID]; dup && (prev.Status == StatusValid || st.Status == StatusInvalid) {
		return
	}
	tenants[st.ID] = st
}

// count adds (by +1) or takes away (by -1) a tenant state's part of the
// invalid count and the template uses.
func (ix *index) count(st TenantState, by int) {
	if st.Status == StatusInvalid {
		ix.invalid += by
	}
	if st.Tenant == nil {
		return
	}
	for _, w := range st.Tenant.Spec.Workflows {
		if ix.uses[w.Template] += by; ix.uses[w.Template] == 0 {
			delete(ix.uses, w.Template)
		}
	}
}

// candidate is the version of a file the cross-tenant rules see: the file
// itself when it has no errors of its own, else its id's last valid
// version (nil when none).
func (ix *index) candidate(f *tenantFile) *schema.Tenant {
	if f.errs() == nil {
		return f.tenant
	}
	if v, ok := ix.valid[schema.IDFromPath(f.path)]; ok {
		return v.tenant
	}
	return nil
}

// checkUnique applies the cross-tenant rules and returns the errors by
// file. The rules see, for each file, the version that will be acted on: a
// broken tenant keeps its id and domains through its last valid version, so
// no newcomer can take them meanwhile. Only the files whose candidate moved
// since the last sync (a pointer comparison per file) are handed to the
// unique index, which re-checks just the groups they touch.
func (ix *index) checkUnique(removed []string) map[string]schema.Errors {
	if ix.wholeSet {
		cands := make([]schema.TenantFile, 0, len(ix.order))
		for _, f := range ix.order {
			if t := ix.candidate(f); t != nil {
				cands = append(cands, schema.TenantFile{File: f.path, Tenant: t})
			}
		}
		return schema.CheckUnique(cands)
	}
	changes := map[string]*schema.Tenant{}
	for _, f := range ix.order {
		if t := ix.candidate(f); t != ix.unique.cand[f.path] {
			changes[f.path] = t
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
		if !ok || stateChanged(old, st) || usesTemplate(st.Tenant, tplChanged) {
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

// changedAmong is changedIDs when only the ids in touched can differ
// between the two snapshots' tenant states: it looks at those, and at every
// tenant only when a template they use changed.
func changedAmong(prev, next Snapshot, touched map[string]bool) []string {
	if templatesMoved(prev.Templates, next.Templates) {
		return changedIDs(prev, next)
	}
	var ids []string
	for id := range touched {
		old, had := prev.Tenants[id]
		st, has := next.Tenants[id]
		if had != has || (has && stateChanged(old, st)) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func templatesMoved(prev, next map[string]*schema.Template) bool {
	return !samePointers(prev, next)
}

// stateChanged reports whether a tenant's state differs between snapshots.
func stateChanged(old, st TenantState) bool {
	return old.Blob != st.Blob || old.Status != st.Status || old.Tenant != st.Tenant || !sameErrors(old.Errors, st.Errors)
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
