package dosim

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

func (s *Sim) diskPath(kind string, id int) string {
	return filepath.Join(s.cfg.DiskRoot, kind, fmt.Sprint(id))
}

// makeDisk gives a new droplet its directory, copied from a snapshot's when
// fromSnapshot is not zero.
func (s *Sim) makeDisk(dropletID, fromSnapshot int) error {
	if s.cfg.DiskRoot == "" {
		return nil
	}
	dst := s.diskPath("droplets", dropletID)
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	if fromSnapshot != 0 {
		src := s.diskPath("snapshots", fromSnapshot)
		if _, err := os.Stat(src); err == nil {
			return copyTree(src, dst)
		}
	}
	return os.MkdirAll(dst, 0o755)
}

// copyDiskToSnapshot copies a droplet's directory to a snapshot's.
func (s *Sim) copyDiskToSnapshot(dropletID, snapshotID int) error {
	if s.cfg.DiskRoot == "" {
		return nil
	}
	dst := s.diskPath("snapshots", snapshotID)
	if err := os.RemoveAll(dst); err != nil {
		return err
	}
	src := s.diskPath("droplets", dropletID)
	if _, err := os.Stat(src); err != nil {
		return os.MkdirAll(dst, 0o755)
	}
	return copyTree(src, dst)
}

func (s *Sim) removeDisk(kind string, id int) {
	if s.cfg.DiskRoot == "" {
		return
	}
	if err := os.RemoveAll(s.diskPath(kind, id)); err != nil {
		s.log.Warn("remove disk", "kind", kind, "id", id, "err", err)
	}
}

// snapshotSizeGB is the size of a snapshot's copied directory in GiB, at
// least 0.01 (DigitalOcean never reports zero); 1.5 without a disk root.
func (s *Sim) snapshotSizeGB(id int) float64 {
	if s.cfg.DiskRoot == "" {
		return 1.5
	}
	var total int64
	filepath.WalkDir(s.diskPath("snapshots", id), func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	gb := float64(total) / (1 << 30)
	if gb < 0.01 {
		gb = 0.01
	}
	return float64(int(gb*100+0.5)) / 100
}

// copyTree copies directories, regular files and symlinks from src to dst,
// keeping modes. Other file types (sockets, devices) are skipped.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case d.Type()&fs.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case d.Type().IsRegular():
			return copyFile(p, target, info.Mode().Perm())
		}
		return nil
	})
}

func copyFile(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func removeIfExists(p string) error {
	if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}
