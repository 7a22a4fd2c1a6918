package tenants

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"

	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/klauspost/compress/zlib"
)

// readTree returns the raw content of a tree object: its entries, each
// "<octal mode> <name>\x00<20-byte hash>", sorted by name. A loose object
// (what a local commit writes) is inflated straight into a buffer of its
// size; anything else is read through go-git, which also has the last word
// on an object the fast path cannot read.
func readTree(repo *git.Repository, h plumbing.Hash) ([]byte, error) {
	if st, ok := repo.Storer.(*filesystem.Storage); ok {
		if raw, err := readLooseTree(st, h); err == nil {
			return raw, nil
		}
	}
	o, err := repo.Storer.EncodedObject(plumbing.TreeObject, h)
	if err != nil {
		return nil, err
	}
	r, err := o.Reader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := bytes.NewBuffer(make([]byte, 0, o.Size()+bytes.MinRead))
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// readLooseTree reads the loose tree object h of a repository's storage:
// zlib over "tree <size>\x00" and the content. go-git would copy it into a
// growing buffer, hash it again and put it in its cache; at 100,000
// tenants that is 5 MB for each commit. The inflate is klauspost's (the
// same format as compress/zlib): it reads the file's buffered bytes
// without an interface call per byte, ~0.7× the time for a 100,000-entry
// tree, which is most of a one-tenant sync.
func readLooseTree(st *filesystem.Storage, h plumbing.Hash) ([]byte, error) {
	fs := st.Filesystem()
	hex := h.String()
	f, err := fs.Open(fs.Join("objects", hex[:2], hex[2:]))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := zlib.NewReader(bufio.NewReaderSize(f, 64<<10))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	br := bufio.NewReaderSize(zr, 64)
	header, err := br.ReadSlice(0)
	if err != nil {
		return nil, err
	}
	size, found := bytes.CutPrefix(header[:len(header)-1], []byte("tree "))
	if !found {
		return nil, errors.New("not a tree")
	}
	n, err := strconv.ParseInt(string(size), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt32 {
		return nil, fmt.Errorf("bad size %q", size)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(br, raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// diffTree compares raw, the content of the tree object of the folder dir,
// with known, the files the index holds from that folder sorted by path. It
// returns the tenant files that are new or have another blob and the known
// paths that are gone, both in path order: what index.diff returns for the
// same folder listed file by file, without a value made for each entry. A
// 100,000-entry folder in which one file changed costs one pass over its
// bytes and one allocation.
//
// ok is false when raw is not a tree go-git decodes as such or its tenant
// files are not in strictly ascending order (a tree git would not write):
// the caller then lists the folder the ordinary way, so that go-git's
// error, or its handling of the odd tree, is what happens.
func diffTree(raw []byte, dir string, known []*tenantFile) (changed []file, removed []string, ok bool) {
	prefix := dir + "/"
	for _, f := range known {
		if len(f.path) <= len(prefix) || f.path[:len(prefix)] != prefix {
			return nil, nil, false // not a file of this folder: let diff sort it out
		}
	}
	j := 0
	var last []byte
	for len(raw) > 0 {
		var e treeEntry
		if e, raw, ok = nextEntry(raw); !ok {
			return nil, nil, false
		}
		if !e.tenant() {
			continue
		}
		if last != nil && bytes.Compare(last, e.name) >= 0 {
			return nil, nil, false
		}
		last = e.name
		for j < len(known) && known[j].path[len(prefix):] < string(e.name) {
			removed = append(removed, known[j].path)
			j++
		}
		if j < len(known) && known[j].path[len(prefix):] == string(e.name) {
			// Only the blob counts, as in index.diff.
			if h := e.hash(); known[j].blob != h {
				changed = append(changed, file{path: known[j].path, blob: h, link: e.mode == filemode.Symlink})
			}
			j++
			continue
		}
		changed = append(changed, file{path: prefix + string(e.name), blob: e.hash(), link: e.mode == filemode.Symlink})
	}
	for ; j < len(known); j++ {
		removed = append(removed, known[j].path)
	}
	return changed, removed, true
}

// diffTrees is diffTree given old, the raw tree known was listed from (the
// folder at the last sync): the two trees are walked side by side and an
// entry whose bytes are unchanged costs a comparison of its bytes, without
// a look at known. ok is false as for diffTree, and when known turns out
// not to be old's tenant files.
func diffTrees(old, raw []byte, dir string, known []*tenantFile) (changed []file, removed []string, ok bool) {
	prefix := dir + "/"
	j := 0 // known[j] is the tenant file of o, or of the next one in old
	var last []byte
	// inStep reports whether known[j] is the file of old's entry o.
	inStep := func(o treeEntry) bool {
		return j < len(known) && len(known[j].path) > len(prefix) && known[j].path[:len(prefix)] == prefix && known[j].path[len(prefix):] == string(o.name)
	}
	var o, n treeEntry
	haveO, haveN := false, false
	for {
		if !haveO && len(old) > 0 {
			if o, old, ok = nextEntry(old); !ok {
				return nil, nil, false
			}
			haveO = true
		}
		if !haveN && len(raw) > 0 {
			if n, raw, ok = nextEntry(raw); !ok {
				return nil, nil, false
			}
			haveN = true
		}
		if !haveO && !haveN {
			break
		}
		if haveO && haveN && bytes.Equal(o.all, n.all) {
			if n.tenant() {
				if last != nil && bytes.Compare(last, n.name) >= 0 {
					return nil, nil, false
				}
				last = n.name
				j++
			}
			haveO, haveN = false, false
			continue
		}
		if haveO && !o.tenant() {
			haveO = false
			continue
		}
		if haveN && !n.tenant() {
			haveN = false
			continue
		}
		if haveN {
			if last != nil && bytes.Compare(last, n.name) >= 0 {
				return nil, nil, false
			}
		}
		var gone, added bool // o's file is gone, n's file is new
		switch {
		case !haveN:
			gone = true
		case !haveO:
			added = true
		default:
			c := bytes.Compare(o.name, n.name)
			gone, added = c < 0, c > 0
		}
		switch {
		case gone:
			if !inStep(o) {
				return nil, nil, false
			}
			removed = append(removed, known[j].path)
			j++
			haveO = false
		case added:
			last = n.name
			changed = append(changed, file{path: prefix + string(n.name), blob: n.hash(), link: n.mode == filemode.Symlink})
			haveN = false
		default:
			// The same file: only the blob counts, as in index.diff.
			if !inStep(o) {
				return nil, nil, false
			}
			last = n.name
			if h := n.hash(); known[j].blob != h {
				changed = append(changed, file{path: known[j].path, blob: h, link: n.mode == filemode.Symlink})
			}
			j++
			haveO, haveN = false, false
		}
	}
	if j != len(known) {
		return nil, nil, false
	}
	return changed, removed, true
}

// treeEntry is one entry of a raw tree.
type treeEntry struct {
	all, name, id []byte // the whole entry, its name, its object id
	mode          filemode.FileMode
}

func (e treeEntry) hash() (h plumbing.Hash) {
	copy(h[:], e.id)
	return h
}

// tenant reports whether the entry is a tenant file (what gitListing lists).
func (e treeEntry) tenant() bool {
	return e.mode.IsFile() && (bytes.HasSuffix(e.name, []byte(".yaml")) || bytes.HasSuffix(e.name, []byte(".yml")))
}

// nextEntry parses the first entry of raw as object.Tree.Decode does; ok is
// false where Decode fails.
func nextEntry(raw []byte) (e treeEntry, rest []byte, ok bool) {
	sp := bytes.IndexByte(raw, ' ')
	if sp < 0 {
		return e, nil, false
	}
	if e.mode, ok = parseMode(raw[:sp]); !ok {
		return e, nil, false
	}
	nul := bytes.IndexByte(raw[sp+1:], 0)
	end := sp + 1 + nul + 1 + len(plumbing.ZeroHash)
	if nul <= 0 || len(raw) < end {
		return e, nil, false
	}
	e.all, e.name, e.id = raw[:end], raw[sp+1:sp+1+nul], raw[sp+1+nul+1:end]
	return e, raw[end:], true
}

// parseMode reads a tree entry's mode as object.Tree.Decode does: octal,
// at most 32 bits, then made canonical.
func parseMode(b []byte) (filemode.FileMode, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '7' {
			return 0, false
		}
		if n = n<<3 | uint64(c-'0'); n > math.MaxUint32 {
			return 0, false
		}
	}
	m := filemode.FileMode(n)
	switch m & 0o170000 {
	case 0o040000:
		return filemode.Dir, true
	case 0o100000:
		if m&0o111 != 0 {
			return filemode.Executable, true
		}
		return filemode.Regular, true
	case 0o120000:
		return filemode.Symlink, true
	default:
		return filemode.Submodule, true
	}
}
