package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"filippo.io/age"
)

// Target is where a backup is restored to.
type Target struct {
	// Restore is the argv of a command that reads a pg_dump custom-format
	// archive on stdin and restores it, e.g. pg_restore --clean --if-exists
	// --no-owner --single-transaction -d URL. It should apply wholly or
	// not at all (--single-transaction).
	Restore []string
	// DataDir is n8n's data directory, replaced by the backup's; empty
	// leaves the data directory alone.
	DataDir string
	// StagingDir is where the backup is unpacked before anything is
	// touched. It must be on DataDir's filesystem (the swap is a rename);
	// empty means DataDir's parent, or the system's temporary directory
	// when DataDir is empty.
	StagingDir string
}

// ErrBinding is wrapped by the error for a backup bound to another
// workspace or backup id.
var ErrBinding = errors.New("backup is bound to another workspace or backup id")

// oldSuffix names the previous data directory during the swap.
const oldSuffix = ".genesis-old"

// Restore restores the backup in file path, encrypted to one of ids and
// bound to want's workspace and backup id (its droplet is not compared: a
// backup is restored on a new droplet), into dst, and returns its binding.
// It unpacks and checks the whole backup before it touches dst: any error
// before the restore command runs leaves the database and DataDir as they
// were. See the package doc for what a crash during the swap leaves.
func Restore(ctx context.Context, path string, ids []age.Identity, want Binding, dst Target) (_ Binding, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("backup %s: %w", want.BackupID, err)
		}
	}()
	if len(dst.Restore) == 0 {
		return Binding{}, errors.New("no restore command")
	}
	if want.Workspace == "" || want.BackupID == "" {
		return Binding{}, errors.New("restore needs the workspace and backup id to expect")
	}
	stagingDir := dst.StagingDir
	if stagingDir == "" && dst.DataDir != "" {
		stagingDir = filepath.Dir(filepath.Clean(dst.DataDir))
	}
	staging, err := os.MkdirTemp(stagingDir, "genesis-restore-")
	if err != nil {
		return Binding{}, fmt.Errorf("staging: %w", err)
	}
	defer os.RemoveAll(staging)

	// Phase 1: unpack and check everything; nothing of dst is touched.
	got, hasData, err := stage(ctx, path, ids, want, staging)
	if err != nil {
		return got, err
	}
	stagedData := filepath.Join(staging, "data")
	if dst.DataDir != "" {
		if !hasData {
			return got, errors.New("holds no data directory; restore it with an empty Target.DataDir")
		}
		if err := sameFilesystem(stagedData, filepath.Dir(filepath.Clean(dst.DataDir))); err != nil {
			return got, err
		}
	}

	// Phase 2: the database, then the data directory.
	if err := runRestore(ctx, dst.Restore, filepath.Join(staging, "postgres.dump")); err != nil {
		return got, err
	}
	if dst.DataDir != "" {
		if err := swapDir(stagedData, filepath.Clean(dst.DataDir)); err != nil {
			return got, fmt.Errorf("database restored, data dir not: %w", err)
		}
	}
	return got, nil
}

// stage decrypts and parses the backup into staging: postgres.dump and,
// when the backup has one, data/.
func stage(ctx context.Context, file string, ids []age.Identity, want Binding, staging string) (got Binding, hasData bool, err error) {
	f, err := os.Open(file)
	if err != nil {
		return got, false, err
	}
	defer f.Close()
	plain, err := age.Decrypt(bufio.NewReaderSize(&ctxReader{ctx, f}, copyBuf), ids...)
	if err != nil {
		return got, false, fmt.Errorf("decrypt: %w", err)
	}
	buf := make([]byte, copyBuf)
	got, seen, err := parseContainer(plain, func(b Binding) error {
		switch {
		case b.Workspace != want.Workspace:
			return fmt.Errorf("%w: binding says workspace %q, want %q", ErrBinding, b.Workspace, want.Workspace)
		case b.BackupID != want.BackupID:
			return fmt.Errorf("%w: binding says backup id %q, want %q", ErrBinding, b.BackupID, want.BackupID)
		}
		return nil
	}, func(name string, r io.Reader) error {
		switch name {
		case sectionDump:
			out, err := os.OpenFile(filepath.Join(staging, "postgres.dump"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.CopyBuffer(out, r, buf)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			return err
		case sectionData:
			dir := filepath.Join(staging, "data")
			if err := os.Mkdir(dir, 0o700); err != nil {
				return err
			}
			if err := extract(r, dir, buf); err != nil {
				return fmt.Errorf("section %s: %w", sectionData, err)
			}
			return nil
		}
		return fmt.Errorf("section %q not handled", name)
	})
	if err != nil {
		if errors.Is(err, ErrBinding) {
			return got, false, err
		}
		return got, false, fmt.Errorf("read: %w", err)
	}
	return got, slices.Contains(seen, sectionData), nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// extract unpacks a tar written by writeTar into dir: "." (dir's own
// mode, owner and time), directories, regular files, and symlinks whose
// targets stay inside dir. Entries are checked lexically (no absolute
// path, no "..", no duplicate, nothing under a symlink), and created
// through an os.Root, which refuses to leave dir whatever the checks
// missed. Owners are kept when we run as root.
func extract(r io.Reader, dir string, buf []byte) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	asRoot := os.Geteuid() == 0
	tr := tar.NewReader(r)
	seen := map[string]tar.Header{}
	var dirs []string // to chmod and chtimes last, deepest first
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		if _, dup := seen[name]; dup {
			return fmt.Errorf("entry %q: duplicate", name)
		}
		for p := path.Dir(name); p != "."; p = path.Dir(p) {
			if h, ok := seen[p]; !ok || h.Typeflag != tar.TypeDir {
				return fmt.Errorf("entry %q: parent %q is not a directory of the archive", name, p)
			}
		}
		perm := fs.FileMode(hdr.Mode) & fs.ModePerm
		switch hdr.Typeflag {
		case tar.TypeDir:
			if name != "." {
				if err := root.Mkdir(name, 0o700); err != nil {
					return err
				}
			}
			dirs = append(dirs, name)
		case tar.TypeReg:
			if name == "." {
				return errors.New(`entry ".": not a directory`)
			}
			out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.CopyBuffer(out, tr, buf)
			if err == nil {
				err = out.Chmod(perm)
			}
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("entry %q: %w", name, err)
			}
			if err := root.Chtimes(name, hdr.ModTime, hdr.ModTime); err != nil {
				return err
			}
		case tar.TypeSymlink:
			if name == "." || !linkInside(name, hdr.Linkname) {
				return fmt.Errorf("entry %q: symlink to %q leaves the directory", name, hdr.Linkname)
			}
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry %q: type %q is not a file, directory or symlink", name, hdr.Typeflag)
		}
		if asRoot {
			if err := root.Lchown(name, hdr.Uid, hdr.Gid); err != nil {
				return err
			}
		}
		seen[name] = tar.Header{Typeflag: hdr.Typeflag, Mode: hdr.Mode, ModTime: hdr.ModTime}
	}
	for _, d := range slices.Backward(dirs) {
		h := seen[d]
		if err := root.Chmod(d, fs.FileMode(h.Mode)&fs.ModePerm); err != nil {
			return err
		}
		if err := root.Chtimes(d, h.ModTime, h.ModTime); err != nil {
			return err
		}
	}
	return nil
}

// entryName checks a tar entry's name and returns it clean, without a
// trailing slash.
func entryName(name string) (string, error) {
	n := strings.TrimSuffix(name, "/")
	switch {
	case n == "":
		return "", errors.New("entry with an empty name")
	case strings.HasPrefix(n, "/") || filepath.IsAbs(n):
		return "", fmt.Errorf("entry %q: absolute path", name)
	case strings.ContainsRune(n, 0) || strings.Contains(n, `\`):
		return "", fmt.Errorf("entry %q: bad character", name)
	case slices.Contains(strings.Split(n, "/"), ".."):
		return "", fmt.Errorf("entry %q: \"..\" in path", name)
	case path.Clean(n) != n:
		return "", fmt.Errorf("entry %q: not a clean path", name)
	}
	return n, nil
}

// sameFilesystem checks that a can be renamed to b's directory.
func sameFilesystem(a, b string) error {
	var sa, sb syscall.Stat_t
	if err := syscall.Stat(a, &sa); err != nil {
		return fmt.Errorf("staging: %w", err)
	}
	if err := syscall.Stat(b, &sb); err != nil {
		return fmt.Errorf("data dir parent: %w", err)
	}
	if sa.Dev != sb.Dev {
		return fmt.Errorf("staging dir %s is not on the filesystem of %s (the data dir is swapped by rename)", filepath.Dir(a), b)
	}
	return nil
}

// runRestore runs argv with the dump file on stdin.
func runRestore(ctx context.Context, argv []string, dumpFile string) error {
	name := filepath.Base(argv[0])
	in, err := os.Open(dumpFile)
	if err != nil {
		return err
	}
	defer in.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = in
	out := &headBuffer{max: 2048}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("restore command %s: %w%s", name, err, out.suffix())
	}
	return nil
}

// swapDir replaces dataDir by staged: dataDir is renamed aside, staged
// renamed in, the old one removed. Either rename may be the last thing
// done before a crash; dataDir then holds the old or the new tree whole.
func swapDir(staged, dataDir string) error {
	old := dataDir + oldSuffix
	_, err := os.Lstat(dataDir)
	switch {
	case err == nil:
		if err := os.RemoveAll(old); err != nil {
			return fmt.Errorf("remove a stale %s: %w", old, err)
		}
		if err := os.Rename(dataDir, old); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := os.Rename(staged, dataDir); err != nil {
		if rerr := os.Rename(old, dataDir); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return fmt.Errorf("%w (and putting the old one back: %v)", err, rerr)
		}
		return err
	}
	if d, err := os.Open(filepath.Dir(dataDir)); err == nil {
		d.Sync()
		d.Close()
	}
	return os.RemoveAll(old)
}
