package backup

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
)

// Source is what a backup is taken of.
type Source struct {
	// Dump is the argv of a command that writes a pg_dump custom-format
	// archive (pg_dump -Fc) to stdout. On droplets: docker compose -p
	// genesis -f /opt/genesis/compose.yaml exec -T postgres pg_dump -Fc -U
	// n8n n8n.
	Dump []string
	// DataDir is n8n's data directory; empty means none.
	DataDir string
}

// Archive is an encrypted backup file on local disk.
type Archive struct {
	Path    string
	Size    int64
	SHA256  string // hex, of the encrypted file
	Binding Binding
}

// Remove deletes the archive's file.
func (a *Archive) Remove() error {
	if err := os.Remove(a.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// dumpMagic starts every pg_dump custom-format archive.
const dumpMagic = "PGDMP"

// copyBuf is the size of the buffers that data is streamed through.
const copyBuf = 256 << 10

// Take runs src.Dump and tars src.DataDir into a container bound to b,
// encrypted to recipients, in a new file in tmpDir. Nothing is buffered
// beyond fixed-size buffers. On error no file is left.
func Take(ctx context.Context, src Source, b Binding, recipients []age.Recipient, tmpDir string) (_ *Archive, err error) {
	if len(src.Dump) == 0 {
		return nil, errors.New("backup: no dump command")
	}
	if len(recipients) == 0 {
		return nil, errors.New("backup: no recipients")
	}
	if b.Workspace == "" || b.BackupID == "" {
		return nil, errors.New("backup: binding needs a workspace and a backup id")
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("backup %s: %w", b.BackupID, err)
		}
	}()
	if src.DataDir != "" {
		// Fail before running the dump when the directory is not there.
		fi, err := os.Stat(src.DataDir)
		if err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("data dir %s is not a directory", src.DataDir)
		}
	}

	f, err := os.CreateTemp(tmpDir, "genesis-backup-*.age")
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	var size countWriter
	bw := bufio.NewWriterSize(f, copyBuf)
	aw, err := age.Encrypt(io.MultiWriter(bw, h, &size), recipients...)
	if err != nil {
		return nil, fmt.Errorf("encrypt: %w", err)
	}
	cw := &containerWriter{w: aw}
	if err := cw.begin(b); err != nil {
		return nil, err
	}
	buf := make([]byte, copyBuf)
	sw, err := cw.section(sectionDump)
	if err != nil {
		return nil, err
	}
	if err := dump(ctx, src.Dump, sw, buf); err != nil {
		return nil, err
	}
	if err := sw.Close(); err != nil {
		return nil, err
	}
	if src.DataDir != "" {
		sw, err := cw.section(sectionData)
		if err != nil {
			return nil, err
		}
		if err := writeTar(ctx, sw, src.DataDir, buf); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		if err := sw.Close(); err != nil {
			return nil, err
		}
	}
	if err := cw.end(); err != nil {
		return nil, err
	}
	if err := aw.Close(); err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &Archive{Path: f.Name(), Size: int64(size), SHA256: hex.EncodeToString(h.Sum(nil)), Binding: b}, nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

// dump runs argv and streams its stdout to w. A non-zero exit, anything on
// stderr or output that is not a custom-format archive is an error naming
// the command (argv[0] only: the rest may hold a connection URL).
func dump(ctx context.Context, argv []string, w io.Writer, buf []byte) error {
	name := filepath.Base(argv[0])
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	stderr := &headBuffer{max: 2048}
	cmd.Stderr = stderr
	cmd.WaitDelay = 10 * time.Second // a grandchild holding stderr open
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("dump command %s: %w", name, err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dump command %s: %w", name, err)
	}
	var bad, copyErr error
	killed := false
	hdr := buf[:len(dumpMagic)]
	n, err := io.ReadFull(out, hdr)
	switch {
	case err == nil && string(hdr) == dumpMagic:
		if _, copyErr = w.Write(hdr); copyErr == nil {
			_, copyErr = io.CopyBuffer(w, out, buf)
		}
	case err == nil:
		bad = fmt.Errorf("its output is not a pg_dump custom-format archive (starts with %q)", hdr)
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		bad = fmt.Errorf("its output ended after %d bytes, before a pg_dump header", n)
	default:
		copyErr = err
	}
	if copyErr != nil || bad != nil && err == nil {
		cmd.Process.Kill() // we stop reading: do not leave it blocked on a full pipe
		killed = true
	}
	werr := cmd.Wait()
	switch {
	case copyErr != nil:
		return fmt.Errorf("dump command %s: copy its output: %w", name, copyErr)
	case ctx.Err() != nil:
		return fmt.Errorf("dump command %s: %w", name, ctx.Err())
	case werr != nil && !killed:
		return fmt.Errorf("dump command %s: %w%s", name, werr, stderr.suffix())
	case stderr.n > 0:
		return fmt.Errorf("dump command %s wrote to stderr%s", name, stderr.suffix())
	case bad != nil:
		return fmt.Errorf("dump command %s: %w", name, bad)
	}
	return nil
}

// headBuffer keeps the first max bytes written to it and counts them all.
type headBuffer struct {
	max int
	b   []byte
	n   int64
}

func (h *headBuffer) Write(p []byte) (int, error) {
	h.n += int64(len(p))
	if k := min(len(p), h.max-len(h.b)); k > 0 {
		h.b = append(h.b, p[:k]...)
	}
	return len(p), nil
}

// suffix is ": <what was written>" for an error message, or "".
func (h *headBuffer) suffix() string {
	s := strings.TrimSpace(string(h.b))
	if s == "" {
		return ""
	}
	if h.n > int64(len(h.b)) {
		s += " …"
	}
	return ": " + s
}

// writeTar writes a tar of dir to w: the directory itself as ".", then
// its directories, regular files and symlinks (which must stay inside
// it). Sockets, pipes and devices hold no data and are left out. A file
// whose size changes while it is read is an error.
func writeTar(ctx context.Context, w io.Writer, dir string, buf []byte) error {
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		switch info.Mode().Type() {
		case 0, fs.ModeDir:
		case fs.ModeSymlink:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
			if !linkInside(rel, link) {
				return fmt.Errorf("%s: symlink to %q leaves the data directory", rel, link)
			}
		default:
			return nil
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		hdr.Name = rel
		if info.IsDir() && rel != "." {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.AccessTime, hdr.ChangeTime = time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// A file that grows while it is read (n8n's append-only event log)
		// is kept as it was when listed; one that shrank is an error.
		n, err := io.CopyBuffer(tw, io.LimitReader(f, hdr.Size), buf)
		if err == nil && n != hdr.Size {
			return fmt.Errorf("%s: shrank while being read", rel)
		}
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// linkInside reports whether a symlink at rel (slash-separated, relative
// to the tree's root) pointing to target resolves inside the tree.
func linkInside(rel, target string) bool {
	if target == "" || path.IsAbs(target) || filepath.IsAbs(target) {
		return false
	}
	t := path.Join(path.Dir(rel), target)
	return t != ".." && !strings.HasPrefix(t, "../")
}
