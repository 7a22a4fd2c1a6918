package tenants

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"

	"genesis.dev/fleet/schema"
)

// DefaultMaxAttempts bounds how often a Writer rebases one change onto a
// branch head that moved under it before it gives up.
const DefaultMaxAttempts = 10

// ProposalPrefix is where propose mode pushes its branches:
// refs/heads/genesis/proposals/<id>-<short commit>.
const ProposalPrefix = "genesis/proposals/"

// The kinds of a refused write. The API maps them to HTTP statuses.
var (
	// ErrNotFound: the tenant has no file (and the change is not a create).
	ErrNotFound = errors.New("tenant not found")
	// ErrExists: a create found the tenant's file already there.
	ErrExists = errors.New("tenant already exists")
	// ErrPrecondition: the caller's version (If-Match) is not the file's
	// current blob at the branch head.
	ErrPrecondition = errors.New("tenant file changed since the given version")
	// ErrConflict: while this change was being pushed, another writer changed
	// the same tenant file; the change was not applied.
	ErrConflict = errors.New("tenant file was changed by a concurrent write")
	// ErrBusy: the branch kept moving for DefaultMaxAttempts rebases.
	ErrBusy = errors.New("state repository branch kept moving; change not applied")
)

// ValidationError is a change whose result fails validation: the file's own
// errors, or the errors it causes in other tenants (a domain taken from
// them), worded exactly as genesis validate words them.
type ValidationError struct{ Errors schema.Errors }

func (e *ValidationError) Error() string { return "invalid change:\n" + e.Errors.Error() }

// EditError is an edit function's refusal (a patch that does not apply).
type EditError struct{ Err error }

func (e *EditError) Error() string { return e.Err.Error() }
func (e *EditError) Unwrap() error { return e.Err }

// Change is one edit of one tenant file.
type Change struct {
	// ID is the tenant; its file is tenants/<id>.yaml (or an existing .yml).
	ID string
	// Create requires that the file does not exist yet.
	Create bool
	// IfMatch is the blob hash the caller last saw; required unless Create.
	IfMatch string
	// Edit returns the file's new content from its current content (nil for
	// a create). It may run more than once (after a rebase), so it must be a
	// pure function of its input. Its error is returned as an *EditError.
	Edit func(cur []byte) ([]byte, error)
	// Message is the commit message.
	Message string
	// Author is who asked for the change.
	Author Identity
}

// Identity names a git author.
type Identity struct{ Name, Email string }

// WriteResult is what a successful write did.
type WriteResult struct {
	// Commit is the new commit (or the head, when Unchanged).
	Commit string
	// Branch is the branch the commit was pushed to: the configured branch,
	// or a proposal branch in propose mode.
	Branch string
	// Blob is the tenant file's new blob hash (its next ETag).
	Blob string
	// File is the tenant file's path in the state repository.
	File string
	// Proposed reports a proposal branch rather than the branch itself.
	Proposed bool
	// Unchanged reports that the edit changed nothing; nothing was committed.
	Unchanged bool
	// Attempts is how many pushes it took.
	Attempts int
}

// WriterConfig says where a Writer pushes and how.
type WriterConfig struct {
	// Remote is the state repository (a URL or a path git can push to: a
	// bare repository, since a checked-out branch refuses pushes).
	Remote string
	// Branch is the branch to write; DefaultBranch when empty.
	Branch string
	// Subdir is the state folder inside the repository ("" for the root).
	Subdir string
	// Dir is the Writer's own bare clone (created when missing).
	Dir string
	// Auth authenticates fetches and pushes (nil for none). User information
	// in an http(s) Remote becomes basic auth instead, as for Config.Auth:
	// the clone's config, logs and errors never hold it.
	Auth transport.AuthMethod
	// Propose pushes each change to its own branch under ProposalPrefix for
	// review instead of to Branch.
	Propose bool
	// Committer is the committer identity; the author when empty.
	Committer Identity
	// MaxAttempts bounds pushes per change; DefaultMaxAttempts when 0.
	MaxAttempts int
	// Now is the clock for commit times; time.Now when nil.
	Now func() time.Time
	// Logger receives the writer's logs; slog.Default() when nil.
	Logger *slog.Logger
}

// Writer turns changes of single tenant files into commits on the state
// repository's branch. It keeps its own bare clone; every write fetches, checks
// the caller's precondition against the head, applies the edit, validates the
// result as genesis validate would, commits and pushes. A push refused
// because the branch moved (another replica, an admin's merge) is retried on
// the new head: the change is re-applied when the tenant's file did not
// change in between, and refused with ErrConflict when it did. Writes in one
// process run one at a time; across processes the remote's ref update is the
// arbiter.
type Writer struct {
	cfg    WriterConfig
	remote remote // Remote without credentials, and the auth method
	log    *slog.Logger
	repo   *git.Repository

	mu sync.Mutex // serializes writes and fetches; guards ix
	ix *index

	// objMu guards the clone's storage: held exclusively while objects or
	// refs are written (fetch, commit), shared while they are read.
	objMu sync.RWMutex

	headMu sync.Mutex
	head   Snapshot // at the last fetched branch head
}

// NewWriter opens (or creates) the Writer's clone. It does no network I/O;
// call Fetch before the first read.
func NewWriter(cfg WriterConfig) (*Writer, error) {
	if cfg.Remote == "" || cfg.Dir == "" {
		return nil, errors.New("state writer: remote and dir are required")
	}
	if cfg.Branch == "" {
		cfg.Branch = DefaultBranch
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = DefaultMaxAttempts
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Subdir = strings.TrimPrefix(path.Clean("/"+cfg.Subdir), "/")
	rem, err := newRemote(cfg.Remote, cfg.Auth)
	if err != nil {
		return nil, fmt.Errorf("state writer: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Dir), 0o700); err != nil {
		return nil, fmt.Errorf("state writer: %w", err)
	}
	repo, err := openClone(cfg.Dir, rem.url)
	if err != nil {
		return nil, fmt.Errorf("state writer: open clone %s: %w", cfg.Dir, rem.redact(err))
	}
	return &Writer{cfg: cfg, remote: rem, log: cfg.Logger.With("component", "tenants", "repo", rem.shown), repo: repo, ix: newIndex()}, nil
}

// Branch is the branch the Writer writes (or proposes against).
func (w *Writer) Branch() string { return w.cfg.Branch }

// Propose reports propose mode.
func (w *Writer) Propose() bool { return w.cfg.Propose }

// Head is the desired state at the branch head as last fetched (the zero
// Snapshot before the first Fetch).
func (w *Writer) Head() Snapshot {
	w.headMu.Lock()
	defer w.headMu.Unlock()
	return w.head
}

// Fetch brings the Writer's view of the branch up to date.
func (w *Writer) Fetch(ctx context.Context) (Snapshot, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.fetch(ctx); err != nil {
		return Snapshot{}, w.remote.redact(err)
	}
	return w.Head(), nil
}

// ReadBlob returns the content of a blob of the clone (a tenant file's Blob
// from Head).
func (w *Writer) ReadBlob(blob string) ([]byte, error) {
	w.objMu.RLock()
	defer w.objMu.RUnlock()
	return readBlob(w.repo, plumbing.NewHash(blob))
}

func readBlob(repo *git.Repository, h plumbing.Hash) ([]byte, error) {
	b, err := repo.BlobObject(h)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", h, err)
	}
	if b.Size > schema.MaxFileSize {
		return nil, tooLarge()
	}
	r, err := b.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func (w *Writer) trackingRef() plumbing.ReferenceName {
	return plumbing.NewRemoteReferenceName("origin", w.cfg.Branch)
}

// fetch updates the remote-tracking ref and the head Snapshot. w.mu held.
func (w *Writer) fetch(ctx context.Context) error {
	spec := config.RefSpec(fmt.Sprintf("+refs/heads/%[1]s:refs/remotes/origin/%[1]s", w.cfg.Branch))
	w.objMu.Lock()
	err := w.repo.FetchContext(ctx, &git.FetchOptions{RemoteName: "origin", RefSpecs: []config.RefSpec{spec}, Auth: w.remote.auth, Tags: git.NoTags, Force: true})
	w.objMu.Unlock()
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("fetch %s: %w", w.remote.shown, err)
	}
	return w.loadHead(ctx)
}

// loadHead re-indexes the branch head. w.mu held.
func (w *Writer) loadHead(ctx context.Context) error {
	c, err := w.headCommit()
	if err != nil {
		return err
	}
	if cur := w.Head(); cur.Commit == c.Hash.String() {
		return nil
	}
	snap, err := w.load(ctx, c.TreeHash)
	if err != nil {
		return err
	}
	snap.Commit, snap.Time = c.Hash.String(), c.Committer.When
	w.headMu.Lock()
	w.head = snap
	w.headMu.Unlock()
	return nil
}

func (w *Writer) headCommit() (*object.Commit, error) {
	w.objMu.RLock()
	defer w.objMu.RUnlock()
	ref, err := w.repo.Reference(w.trackingRef(), true)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return nil, fmt.Errorf("branch %s not found in %s", w.cfg.Branch, w.remote.shown)
	}
	if err != nil {
		return nil, fmt.Errorf("resolve branch %s: %w", w.cfg.Branch, err)
	}
	return w.repo.CommitObject(ref.Hash())
}

// load indexes the state folder of a root tree. w.mu held.
func (w *Writer) load(ctx context.Context, root plumbing.Hash) (Snapshot, error) {
	w.objMu.RLock()
	defer w.objMu.RUnlock()
	tree, err := w.repo.TreeObject(root)
	if err != nil {
		return Snapshot{}, fmt.Errorf("read tree %s: %w", root, err)
	}
	if w.cfg.Subdir != "" {
		if tree, err = tree.Tree(w.cfg.Subdir); err != nil {
			return Snapshot{}, fmt.Errorf("read folder %s: %w", w.cfg.Subdir, err)
		}
	}
	l, err := gitListing(w.repo, tree)
	if err != nil {
		return Snapshot{}, err
	}
	return w.ix.update(ctx, l, gitReader(w.repo))
}

// tenantFile finds a tenant's file in a Snapshot, or the path a new one gets.
func tenantPath(snap Snapshot, id string) (string, TenantState, bool) {
	if ts, ok := snap.Tenants[id]; ok {
		return ts.File, ts, true
	}
	return schema.TenantsDir + "/" + id + ".yaml", TenantState{}, false
}

// Write applies one change: see Writer. Its errors are ErrNotFound,
// ErrExists, ErrPrecondition, ErrConflict, ErrBusy, *ValidationError,
// *EditError, or a failure to reach the repository (test kinds with
// errors.Is and errors.As: every error is a *RedactedError, scrubbed of the
// remote's credentials).
func (w *Writer) Write(ctx context.Context, ch Change) (WriteResult, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	res, err := w.write(ctx, ch)
	return res, w.remote.redact(err)
}

// write is Write; its errors may hold what go-git put in them. w.mu held.
func (w *Writer) write(ctx context.Context, ch Change) (WriteResult, error) {
	if err := w.fetch(ctx); err != nil {
		return WriteResult{}, err
	}
	for attempt := 1; attempt <= w.cfg.MaxAttempts; attempt++ {
		base := w.Head()
		file, cur, exists := tenantPath(base, ch.ID)
		first := attempt == 1
		switch {
		case ch.Create && exists && first:
			return WriteResult{}, ErrExists
		case ch.Create && exists:
			return WriteResult{}, ErrConflict
		case !ch.Create && !exists && first:
			return WriteResult{}, ErrNotFound
		case !ch.Create && !exists:
			return WriteResult{}, ErrConflict
		case !ch.Create && cur.Blob != ch.IfMatch && first:
			return WriteResult{}, ErrPrecondition
		case !ch.Create && cur.Blob != ch.IfMatch:
			return WriteResult{}, ErrConflict
		}
		var old []byte
		if exists {
			var err error
			if old, err = w.ReadBlob(cur.Blob); err != nil {
				return WriteResult{}, err
			}
		}
		data, err := ch.Edit(old)
		if err != nil {
			return WriteResult{}, &EditError{err}
		}
		if exists && bytes.Equal(data, old) {
			return WriteResult{Commit: base.Commit, Branch: w.cfg.Branch, Blob: cur.Blob, File: file, Unchanged: true, Attempts: attempt - 1}, nil
		}
		commit, blob, err := w.commit(ctx, base, file, data, ch)
		if err != nil {
			return WriteResult{}, err
		}
		res := WriteResult{Commit: commit.String(), Branch: w.cfg.Branch, Blob: blob.String(), File: file, Attempts: attempt}
		if w.cfg.Propose {
			res.Branch, res.Proposed = ProposalPrefix+ch.ID+"-"+commit.String()[:12], true
			if err := w.push(ctx, commit, res.Branch, plumbing.ZeroHash); err != nil {
				return WriteResult{}, err
			}
			w.log.Info("proposed tenant change", "workspace", ch.ID, "commit", res.Commit, "branch", res.Branch)
			return res, nil
		}
		pushErr := w.push(ctx, commit, w.cfg.Branch, plumbing.NewHash(base.Commit))
		if pushErr == nil {
			w.objMu.Lock()
			err := w.repo.Storer.SetReference(plumbing.NewHashReference(w.trackingRef(), commit))
			w.objMu.Unlock()
			if err == nil {
				err = w.loadHead(ctx)
			}
			if err != nil {
				w.log.Warn("refresh after push", "err", w.remote.redact(err))
			}
			w.log.Info("committed tenant change", "workspace", ch.ID, "commit", res.Commit, "attempts", attempt)
			return res, nil
		}
		// Refused, or the answer was lost: look at the branch again.
		if err := w.fetch(ctx); err != nil {
			return WriteResult{}, fmt.Errorf("push: %w; then %w", pushErr, err)
		}
		head := w.Head()
		if landed, err := w.contains(plumbing.NewHash(head.Commit), commit); err != nil {
			return WriteResult{}, err
		} else if landed {
			w.log.Info("committed tenant change", "workspace", ch.ID, "commit", res.Commit, "attempts", attempt)
			return res, nil
		}
		if head.Commit == base.Commit {
			return WriteResult{}, fmt.Errorf("push to %s: %w", w.remote.shown, pushErr)
		}
		w.log.Info("branch moved during push; rebasing", "workspace", ch.ID, "attempt", attempt, "head", head.Commit)
		select {
		case <-ctx.Done():
			return WriteResult{}, ctx.Err()
		case <-time.After(time.Duration(rand.Int64N(int64(5*time.Millisecond) << min(attempt, 6)))):
		}
	}
	return WriteResult{}, ErrBusy
}

// commit stores the new blob, tree and commit on top of base after
// validating the result. w.mu held.
func (w *Writer) commit(ctx context.Context, base Snapshot, file string, data []byte, ch Change) (commit, blob plumbing.Hash, err error) {
	baseCommit, err := w.commitObject(plumbing.NewHash(base.Commit))
	if err != nil {
		return commit, blob, err
	}
	w.objMu.Lock()
	blob, err = storeBlob(w.repo, data)
	var tree plumbing.Hash
	if err == nil {
		tree, err = setPath(w.repo, baseCommit.TreeHash, splitPath(path.Join(w.cfg.Subdir, file)), blob)
	}
	w.objMu.Unlock()
	if err != nil {
		return commit, blob, fmt.Errorf("build tree: %w", err)
	}
	cand, err := w.load(ctx, tree)
	if err != nil {
		return commit, blob, err
	}
	if errs := introduced(base, cand, ch.ID); len(errs) > 0 {
		return commit, blob, &ValidationError{errs}
	}
	now := w.cfg.Now()
	author := object.Signature{Name: ch.Author.Name, Email: ch.Author.Email, When: now}
	committer := author
	if w.cfg.Committer.Name != "" {
		committer = object.Signature{Name: w.cfg.Committer.Name, Email: w.cfg.Committer.Email, When: now}
	}
	c := &object.Commit{Author: author, Committer: committer, Message: ch.Message, TreeHash: tree, ParentHashes: []plumbing.Hash{baseCommit.Hash}}
	w.objMu.Lock()
	defer w.objMu.Unlock()
	obj := w.repo.Storer.NewEncodedObject()
	if err := c.Encode(obj); err != nil {
		return commit, blob, err
	}
	commit, err = w.repo.Storer.SetEncodedObject(obj)
	return commit, blob, err
}

func (w *Writer) commitObject(h plumbing.Hash) (*object.Commit, error) {
	w.objMu.RLock()
	defer w.objMu.RUnlock()
	return w.repo.CommitObject(h)
}

// introduced lists what the candidate breaks: the tenant's own errors, and
// the errors of every other tenant that was valid at base and is not in the
// candidate (a domain or id it now collides with).
func introduced(base, cand Snapshot, id string) schema.Errors {
	var errs schema.Errors
	ts, ok := cand.Tenants[id]
	if !ok {
		return schema.Errors{{File: schema.TenantsDir + "/" + id + ".yaml", Message: "file is not a tenant file"}}
	}
	if ts.Status != StatusValid {
		errs = append(errs, ts.Errors...)
	}
	for oid, ots := range cand.Tenants {
		if oid == id || ots.Status == StatusValid {
			continue
		}
		if b, ok := base.Tenants[oid]; ok && b.Status == StatusValid {
			errs = append(errs, ots.Errors...)
		}
	}
	errs.Sort()
	return errs
}

// push sends commit to refs/heads/<branch>, requiring the remote branch to
// be at old (when not zero) so a concurrent writer's commit is never
// overwritten. w.mu held.
func (w *Writer) push(ctx context.Context, commit plumbing.Hash, branch string, old plumbing.Hash) error {
	local := plumbing.ReferenceName("refs/genesis/outgoing")
	w.objMu.Lock()
	err := w.repo.Storer.SetReference(plumbing.NewHashReference(local, commit))
	w.objMu.Unlock()
	if err != nil {
		return err
	}
	dst := plumbing.NewBranchReferenceName(branch)
	opts := &git.PushOptions{RemoteName: "origin", Auth: w.remote.auth, RefSpecs: []config.RefSpec{config.RefSpec(local.String() + ":" + dst.String())}}
	if !old.IsZero() {
		opts.RequireRemoteRefs = []config.RefSpec{config.RefSpec(old.String() + ":" + dst.String())}
	}
	w.objMu.RLock()
	err = w.repo.PushContext(ctx, opts)
	w.objMu.RUnlock()
	if errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil
	}
	return err
}

// contains reports whether commit is head or one of its ancestors.
func (w *Writer) contains(head, commit plumbing.Hash) (bool, error) {
	if head == commit {
		return true, nil
	}
	w.objMu.RLock()
	defer w.objMu.RUnlock()
	c, err := w.repo.CommitObject(commit)
	if err != nil {
		return false, err
	}
	h, err := w.repo.CommitObject(head)
	if err != nil {
		return false, err
	}
	return c.IsAncestor(h)
}

func storeBlob(repo *git.Repository, data []byte) (plumbing.Hash, error) {
	obj := repo.Storer.NewEncodedObject()
	obj.SetType(plumbing.BlobObject)
	wr, err := obj.Writer()
	if err != nil {
		return plumbing.ZeroHash, err
	}
	if _, err := wr.Write(data); err != nil {
		return plumbing.ZeroHash, err
	}
	if err := wr.Close(); err != nil {
		return plumbing.ZeroHash, err
	}
	return repo.Storer.SetEncodedObject(obj)
}

func splitPath(p string) []string { return strings.Split(strings.Trim(p, "/"), "/") }

// setPath returns the hash of the tree root with the file at parts set to
// blob, storing every tree it rewrites. A zero root is the empty tree.
func setPath(repo *git.Repository, root plumbing.Hash, parts []string, blob plumbing.Hash) (plumbing.Hash, error) {
	t := &object.Tree{}
	if !root.IsZero() {
		var err error
		if t, err = repo.TreeObject(root); err != nil {
			return plumbing.ZeroHash, err
		}
	}
	entries := append([]object.TreeEntry(nil), t.Entries...)
	i := sort.Search(len(entries), func(i int) bool { return entries[i].Name >= parts[0] })
	found := -1
	for j := range entries {
		if entries[j].Name == parts[0] {
			found = j
			break
		}
	}
	var e object.TreeEntry
	if len(parts) == 1 {
		if found >= 0 && entries[found].Mode == filemode.Dir {
			return plumbing.ZeroHash, fmt.Errorf("%s is a folder", parts[0])
		}
		e = object.TreeEntry{Name: parts[0], Mode: filemode.Regular, Hash: blob}
	} else {
		sub := plumbing.ZeroHash
		if found >= 0 {
			if entries[found].Mode != filemode.Dir {
				return plumbing.ZeroHash, fmt.Errorf("%s is not a folder", parts[0])
			}
			sub = entries[found].Hash
		}
		h, err := setPath(repo, sub, parts[1:], blob)
		if err != nil {
			return plumbing.ZeroHash, err
		}
		e = object.TreeEntry{Name: parts[0], Mode: filemode.Dir, Hash: h}
	}
	if found >= 0 {
		entries[found] = e
	} else {
		entries = append(entries[:i], append([]object.TreeEntry{e}, entries[i:]...)...)
	}
	// Git orders entries by name, a folder's name as if it ended in "/".
	key := func(e object.TreeEntry) string {
		if e.Mode == filemode.Dir {
			return e.Name + "/"
		}
		return e.Name
	}
	sort.SliceStable(entries, func(a, b int) bool { return key(entries[a]) < key(entries[b]) })
	obj := repo.Storer.NewEncodedObject()
	if err := (&object.Tree{Entries: entries}).Encode(obj); err != nil {
		return plumbing.ZeroHash, err
	}
	return repo.Storer.SetEncodedObject(obj)
}
