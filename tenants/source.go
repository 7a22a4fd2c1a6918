package tenants

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/storer"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/storage/filesystem"

	"genesis.dev/fleet/schema"
)

// DefaultBranch is the branch read when Config.Branch is empty.
const DefaultBranch = "main"

// ErrNotDescendant is the kind of a new head that does not descend from the
// last reconciled commit: history was rewritten (a force-push to an older or
// unrelated history). It is bad input: retrying does not help; a person
// must restore the branch or accept the new history with MarkReconciled.
var ErrNotDescendant = errors.New("new head does not descend from the last reconciled commit")

// HistoryError reports a refused head. errors.Is(err, ErrNotDescendant)
// holds for it.
type HistoryError struct {
	Branch string
	// Head is the refused commit; Base the commit it should descend from.
	Head, Base string
}

func (e *HistoryError) Error() string {
	return fmt.Sprintf("branch %s: head %s does not descend from last reconciled commit %s (force-push?); refusing it", e.Branch, short(e.Head), short(e.Base))
}

// Unwrap returns ErrNotDescendant.
func (e *HistoryError) Unwrap() error { return ErrNotDescendant }

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// Config says where the state repository is and how to read it.
type Config struct {
	// Repo is a URL (https://, ssh://, file://, or user@host:path), cloned
	// into CacheDir and fetched on every Sync, or the path of a local
	// repository, read in place.
	Repo string
	// Branch is the branch to read; DefaultBranch when empty.
	Branch string
	// Subdir is the state repository's folder inside the git repository,
	// slash-separated ("" for its root). A local Repo path inside a work tree
	// implies it: Repo "mono/state" in the repository "mono" reads "state".
	Subdir string
	// CacheDir holds the bare clones of URL repositories; when empty,
	// "genesis/state" under os.UserCacheDir.
	CacheDir string
	// Auth authenticates fetches from a URL (nil for none). User information
	// in an http(s) Repo ("https://TOKEN@host/...", "https://user:TOKEN@...")
	// becomes basic auth instead (giving both is refused): it is never
	// written into the clone's config, a log line or an error.
	Auth transport.AuthMethod
	// LastReconciled is the commit the reconciler last acted on, as it
	// persisted it (hex; empty for none). Sync refuses a head that does not
	// descend from it.
	LastReconciled string
	// Logger receives the source's logs; slog.Default() when nil.
	Logger *slog.Logger
}

// Source reads the committed head of a branch of a git state repository.
// Its methods are safe for concurrent use; Syncs run one at a time.
//
// Uncommitted edits in a local repository's work tree are never read: the
// reconciler acts on commits only, so what it does can be traced to one.
// Use DirSource to read a folder as it is.
type Source struct {
	log    *slog.Logger
	remote remote // the URL without credentials, and the auth method
	branch string
	url    bool
	gitDir string // the clone (URL) or the repository (local path)
	subdir string // the state folder inside the repository's tree

	mu     sync.Mutex // serializes Sync; guards ix, cloned, local, packs and head
	ix     *index
	cloned *git.Repository // URL mode: the cache clone, kept open
	local  *git.Repository // local path: the repository as the last Sync opened it
	packs  []plumbing.Hash // local's pack files then
	// afterOpen, when set, runs once a sync has opened the local
	// repository (tests: a git gc racing the sync's reads).
	afterOpen func()
	head      plumbing.Hash // commit of the last Snapshot

	stateMu    sync.Mutex // guards current and reconciled
	current    Snapshot
	reconciled plumbing.Hash
}

// Open prepares a Source: for a URL it opens or creates the bare clone in
// the cache directory (the first fetch happens in Sync); for a local path it
// finds the repository there or in a parent folder. It reads no state and
// does no network I/O.
func Open(cfg Config) (*Source, error) {
	if cfg.Repo == "" {
		return nil, errors.New("open state repository: no repository given")
	}
	s := &Source{
		log:    cfg.Logger,
		branch: cfg.Branch,
		url:    IsURL(cfg.Repo),
		subdir: strings.TrimPrefix(path.Clean("/"+cfg.Subdir), "/"),
		ix:     newIndex(),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	var err error
	if s.remote, err = newRemote(cfg.Repo, cfg.Auth); err != nil {
		return nil, fmt.Errorf("open state repository: %w", err)
	}
	s.log = s.log.With("component", "tenants", "repo", s.remote.shown)
	if s.branch == "" {
		s.branch = DefaultBranch
	}
	if cfg.LastReconciled != "" {
		if err := s.MarkReconciled(cfg.LastReconciled); err != nil {
			return nil, err
		}
	}
	if !s.url {
		repo, err := git.PlainOpenWithOptions(cfg.Repo, &git.PlainOpenOptions{DetectDotGit: true, EnableDotGitCommonDir: true})
		if err != nil {
			return nil, fmt.Errorf("open state repository %s: %w", s.remote.shown, s.remote.redact(err))
		}
		s.gitDir = cfg.Repo
		if wt, err := repo.Worktree(); err == nil {
			// cfg.Repo may be a folder inside the work tree.
			root := wt.Filesystem.Root()
			abs, err := filepath.Abs(cfg.Repo)
			if err != nil {
				return nil, fmt.Errorf("open state repository %s: %w", s.remote.shown, s.remote.redact(err))
			}
			if real, err := filepath.EvalSymlinks(abs); err == nil {
				abs = real
			}
			if real, err := filepath.EvalSymlinks(root); err == nil {
				root = real
			}
			rel, err := filepath.Rel(root, abs)
			if err != nil || strings.HasPrefix(rel, "..") {
				return nil, fmt.Errorf("open state repository %s: not inside work tree %s", s.remote.shown, root)
			}
			s.gitDir = root
			if s.subdir = path.Join(filepath.ToSlash(rel), s.subdir); s.subdir == "." {
				s.subdir = ""
			}
		}
		return s, nil
	}
	dir := cfg.CacheDir
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("open state repository: no cache directory: %w", err)
		}
		dir = filepath.Join(base, "genesis", "state")
	}
	if s.gitDir, err = ClonePath(dir, "", cfg.Repo); err != nil {
		return nil, fmt.Errorf("open state repository cache: %w", err)
	}
	repo, err := openClone(s.gitDir, s.remote.url)
	if err != nil {
		return nil, fmt.Errorf("open state repository cache %s: %w", s.gitDir, s.remote.redact(err))
	}
	s.cloned = repo
	return s, nil
}

// IsURL reports whether repo names a remote repository rather than a local
// path: it has a scheme (https://, ssh://, file://) or is scp-like
// (git@github.com:org/state.git).
func IsURL(repo string) bool {
	if strings.Contains(repo, "://") {
		return true
	}
	i := strings.Index(repo, ":")
	return i > 0 && strings.Contains(repo[:i], "@") && !strings.ContainsAny(repo[:i], `/\`)
}

// openClone opens the bare cache clone at dir, creating it with an origin
// remote for url when it does not exist. url holds no credential (see
// newRemote); an origin that differs, such as one an older version wrote
// with the credential in it, is rewritten. The clone's folder is made 0700
// and its config 0600: it is nobody else's business which repository the
// fleet reads.
func openClone(dir, url string) (*git.Repository, error) {
	repo, err := git.PlainOpen(dir)
	if errors.Is(err, git.ErrRepositoryNotExists) {
		if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
			return nil, err
		}
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		repo, err = git.PlainInit(dir, true)
		if err != nil {
			return nil, fmt.Errorf("init: %w", err)
		}
		_, err = repo.CreateRemote(&config.RemoteConfig{Name: "origin", URLs: []string{url}})
		if err != nil {
			return nil, fmt.Errorf("add remote: %w", err)
		}
		return repo, restrict(dir)
	}
	if err != nil {
		return nil, err
	}
	cfg, err := repo.Config()
	if err != nil {
		return nil, err
	}
	if rc, ok := cfg.Remotes["origin"]; !ok || len(rc.URLs) != 1 || rc.URLs[0] != url {
		cfg.Remotes["origin"] = &config.RemoteConfig{Name: "origin", URLs: []string{url}, Fetch: []config.RefSpec{"+refs/heads/*:refs/remotes/origin/*"}}
		if err := repo.SetConfig(cfg); err != nil {
			return nil, err
		}
	}
	return repo, restrict(dir)
}

// restrict makes a clone's folder 0700 and its config 0600.
func restrict(dir string) error {
	if err := os.Chmod(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(filepath.Join(dir, "config"), 0o600)
}

// localCacheSize is the object cache of the local repository kept between
// syncs (go-git's default is 96 MiB).
const localCacheSize = 8 * cache.MiByte

// openLocal returns the local repository, so that objects and refs written
// by other git processes since the last Sync (commits, gc) are seen. go-git
// reads refs and loose objects from disk at every use but loads the packs'
// indexes once, which for a large repository is more work than the rest of
// a one-tenant sync; so the repository is kept between syncs, and opened
// afresh when its pack files changed (gc, repack, a fetch). A fresh open
// has go-git's default object cache, which a cold load reading every blob
// (delta chains in a pack) wants; the copy kept for the next syncs has a
// small one, so it does not hold on to what a cold load read. s.mu held.
func (s *Source) openLocal() (*git.Repository, error) {
	if s.local != nil {
		if packs, err := objectPacks(s.local); err == nil && slices.Equal(packs, s.packs) {
			return s.local, nil
		}
		s.local, s.packs = nil, nil
	}
	repo, err := git.PlainOpenWithOptions(s.gitDir, &git.PlainOpenOptions{EnableDotGitCommonDir: true})
	if err != nil {
		return nil, fmt.Errorf("open state repository %s: %w", s.gitDir, err)
	}
	if st, ok := repo.Storer.(*filesystem.Storage); ok {
		if packs, err := objectPacks(repo); err == nil {
			if kept, err := git.Open(filesystem.NewStorage(st.Filesystem(), cache.NewObjectLRU(localCacheSize)), nil); err == nil {
				s.local, s.packs = kept, packs
			}
		}
	}
	return repo, nil
}

// objectPacks lists a repository's pack files, sorted.
func objectPacks(repo *git.Repository) ([]plumbing.Hash, error) {
	ps, ok := repo.Storer.(storer.PackedObjectStorer)
	if !ok {
		return nil, errors.New("not a pack storage")
	}
	packs, err := ps.ObjectPacks()
	if err != nil {
		return nil, err
	}
	slices.SortFunc(packs, func(a, b plumbing.Hash) int { return bytes.Compare(a[:], b[:]) })
	return packs, nil
}

// Subdir is the state folder inside the repository ("" for its root).
func (s *Source) Subdir() string { return s.subdir }

// GitDir is where the repository's objects are read from: the cache clone of
// a URL, or the local repository.
func (s *Source) GitDir() string { return s.gitDir }

// Branch is the branch the Source reads.
func (s *Source) Branch() string { return s.branch }

// Stats counts the parsing work done so far.
func (s *Source) Stats() Stats { return s.ix.stats() }

// Current is the last Snapshot Sync returned (the zero Snapshot before the
// first success).
func (s *Source) Current() Snapshot {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	return s.current
}

// MarkReconciled records that the reconciler has acted on commit (hex), so
// later heads must descend from it. The reconciler persists the same value
// and passes it back as Config.LastReconciled after a restart. Marking a
// refused head accepts its history.
func (s *Source) MarkReconciled(commit string) error {
	h := plumbing.NewHash(commit)
	if !plumbing.IsHash(commit) || h.IsZero() {
		return fmt.Errorf("mark reconciled: %q is not a commit hash", commit)
	}
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	s.reconciled = h
	return nil
}

// Sync fetches (for a URL), resolves the branch head and returns the desired
// state at that commit, re-parsing only the files that changed since the
// previous Sync. When the head has not moved it returns the current
// Snapshot with no changes. Problems in the files are reported inside the
// Snapshot; Sync fails only when the state cannot be read at all or the head
// is refused (ErrNotDescendant). After a failure, Current is unchanged.
func (s *Source) Sync(ctx context.Context) (Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap, err := s.sync(ctx)
	// A git gc in a local repository (the auto gc after a large commit,
	// say) may pack and prune the loose objects this Sync was reading
	// while go-git held the earlier list of packs: open it again and read
	// once more. Nothing of the failed attempt was kept (update commits
	// only what it read in full).
	for retry := 0; err != nil && retry < 2 && ctx.Err() == nil && s.packsMoved(); retry++ {
		s.log.Info("the local repository's packs changed during the sync (git gc?); reading it again", "err", s.remote.redact(err))
		snap, err = s.sync(ctx)
	}
	return snap, s.remote.redact(err)
}

// packsMoved reports whether the local repository's pack files differ
// from those it had when the last Sync opened it (then the next Sync opens
// it again). s.mu held.
func (s *Source) packsMoved() bool {
	if s.url || s.local == nil {
		return false
	}
	packs, err := objectPacks(s.local)
	return err == nil && !slices.Equal(packs, s.packs)
}

// sync is Sync; its errors may hold what go-git put in them. s.mu held.
func (s *Source) sync(ctx context.Context) (Snapshot, error) {
	repo := s.cloned
	var refName plumbing.ReferenceName
	if s.url {
		if err := s.fetch(ctx); err != nil {
			return Snapshot{}, err
		}
		refName = plumbing.NewRemoteReferenceName("origin", s.branch)
	} else {
		var err error
		if repo, err = s.openLocal(); err != nil {
			return Snapshot{}, err
		}
		if s.afterOpen != nil {
			s.afterOpen()
		}
		refName = plumbing.NewBranchReferenceName(s.branch)
	}
	ref, err := repo.Reference(refName, true)
	if errors.Is(err, plumbing.ErrReferenceNotFound) {
		return Snapshot{}, fmt.Errorf("branch %s not found in %s", s.branch, s.remote.shown)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("resolve branch %s: %w", s.branch, err)
	}
	head := ref.Hash()
	if head == s.head && s.ix.loaded {
		snap := s.Current()
		snap.Changed, snap.FleetChanged = nil, false
		return snap, nil
	}
	commit, err := repo.CommitObject(head)
	if err != nil {
		return Snapshot{}, fmt.Errorf("read commit %s: %w", head, err)
	}
	if err := s.checkHistory(repo, commit); err != nil {
		s.log.Error("refused new head", "branch", s.branch, "commit", head.String(), "err", s.remote.redact(err))
		return Snapshot{}, err
	}
	tree, err := commit.Tree()
	if err != nil {
		return Snapshot{}, fmt.Errorf("read tree of %s: %w", head, err)
	}
	if s.subdir != "" {
		if tree, err = tree.Tree(s.subdir); err != nil {
			return Snapshot{}, fmt.Errorf("read folder %s of %s: %w", s.subdir, head, err)
		}
	}
	l, err := gitListing(repo, tree)
	if err != nil {
		return Snapshot{}, fmt.Errorf("list commit %s: %w", head, err)
	}
	before := s.ix.stats()
	snap, err := s.ix.update(ctx, l, gitReader(repo))
	if err != nil {
		return Snapshot{}, fmt.Errorf("load commit %s: %w", head, err)
	}
	snap.Commit, snap.Time = head.String(), commit.Committer.When
	snap.Correlation = Correlation(commit.Message, snap.Commit)
	s.head = head
	s.stateMu.Lock()
	s.current = snap
	s.stateMu.Unlock()
	after := s.ix.stats()
	s.log.Info("loaded desired state", "commit", head.String(), "tenants", len(snap.Tenants),
		"invalid", s.ix.invalid, "changed", len(snap.Changed), "parses", after.Parses-before.Parses,
		"errors", len(snap.Errors))
	return snap, nil
}

func (s *Source) fetch(ctx context.Context) error {
	spec := config.RefSpec(fmt.Sprintf("+refs/heads/%[1]s:refs/remotes/origin/%[1]s", s.branch))
	err := s.cloned.FetchContext(ctx, &git.FetchOptions{
		RemoteName: "origin",
		RefSpecs:   []config.RefSpec{spec},
		Auth:       s.remote.auth,
		Tags:       git.NoTags,
		// Take whatever the remote has; checkHistory judges it.
		Force: true,
	})
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return fmt.Errorf("fetch %s: %w", s.remote.shown, err)
	}
	return nil
}

// checkHistory refuses a head that does not descend from the last
// reconciled commit or, when none was marked, from the last loaded one.
func (s *Source) checkHistory(repo *git.Repository, head *object.Commit) error {
	s.stateMu.Lock()
	base := s.reconciled
	s.stateMu.Unlock()
	if base.IsZero() {
		base = s.head
	}
	if base.IsZero() || base == head.Hash {
		return nil
	}
	refused := &HistoryError{Branch: s.branch, Head: head.Hash.String(), Base: base.String()}
	bc, err := repo.CommitObject(base)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return refused // the base is not even in this history
	}
	if err != nil {
		return fmt.Errorf("read commit %s: %w", base, err)
	}
	ok, err := bc.IsAncestor(head)
	if err != nil {
		return fmt.Errorf("walk history of %s: %w", head.Hash, err)
	}
	if !ok {
		return refused
	}
	return nil
}

// gitListing lists the state files of a commit's tree. The tenants folder is
// listed lazily: the index skips it when its tree hash has not moved, and
// otherwise compares its raw tree with the files it holds (diffTree).
func gitListing(repo *git.Repository, root *object.Tree) (listing, error) {
	var l listing
	e, err := root.FindEntry(schema.FleetFile)
	switch {
	case err == nil && e.Mode.IsFile():
		l.fleet = &file{path: schema.FleetFile, blob: e.Hash, link: e.Mode == filemode.Symlink}
	case err != nil && !notFound(err):
		return l, err
	}
	tpl, err := root.Tree(schema.TemplatesDir)
	switch {
	case err == nil:
		for _, e := range tpl.Entries {
			if e.Mode.IsFile() && strings.HasSuffix(e.Name, ".json") {
				l.templates = append(l.templates, file{path: schema.TemplatesDir + "/" + e.Name, blob: e.Hash, link: e.Mode == filemode.Symlink})
			}
		}
	case !notFound(err):
		return l, err
	}
	l.tenants = func() ([]file, error) { return nil, nil }
	e, err = root.FindEntry(schema.TenantsDir)
	switch {
	case err == nil && e.Mode == filemode.Dir:
		l.tenantsKey = e.Hash
		l.tenants = func() ([]file, error) {
			t, err := repo.TreeObject(e.Hash)
			if err != nil {
				return nil, err
			}
			files := make([]file, 0, len(t.Entries))
			for _, e := range t.Entries {
				if e.Mode.IsFile() && isTenantFile(e.Name) {
					files = append(files, file{path: schema.TenantsDir + "/" + e.Name, blob: e.Hash, link: e.Mode == filemode.Symlink})
				}
			}
			return files, nil
		}
		l.diffTenants = func(prev []byte, known []*tenantFile) ([]file, []string, []byte, bool) {
			raw, err := readTree(repo, e.Hash)
			if err != nil {
				return nil, nil, nil, false // listed the ordinary way, which reports it
			}
			ok := false
			var changed []file
			var removed []string
			if prev != nil {
				changed, removed, ok = diffTrees(prev, raw, schema.TenantsDir, known)
			}
			if !ok {
				changed, removed, ok = diffTree(raw, schema.TenantsDir, known)
			}
			return changed, removed, raw, ok
		}
	case err != nil && !notFound(err):
		return l, err
	}
	return l, nil
}

func notFound(err error) bool {
	return errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) || errors.Is(err, object.ErrFileNotFound)
}

// gitReader reads blobs, refusing symbolic links (their target is outside
// the commit's reviewed content) and files over schema.MaxFileSize.
func gitReader(repo *git.Repository) readFunc {
	return func(f file) ([]byte, error) {
		if f.link {
			return nil, &fileError{"file is a symbolic link; links are not followed"}
		}
		return readBlob(repo, f.blob)
	}
}
