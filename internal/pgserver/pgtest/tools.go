package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// ClientBin is the directory of pg_dump and pg_restore: PATH's, else the
// highest /usr/lib/postgresql/<version>/bin (where pgserver finds the
// server).
func ClientBin(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("pg_dump"); err == nil {
		if p, err := filepath.EvalSymlinks(p); err == nil {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), "pg_restore")); err == nil {
				return filepath.Dir(p)
			}
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_dump")); err == nil {
			return d
		}
	}
	tb.Fatal("no pg_dump in PATH or /usr/lib/postgresql/*/bin")
	return ""
}

// DumpArgv is the argv of a pg_dump of url in custom format to stdout.
func DumpArgv(tb testing.TB, url string) []string {
	return []string{filepath.Join(ClientBin(tb), "pg_dump"), "-Fc", "-d", url}
}

// RestoreArgv is the argv of a pg_restore into url of a custom-format
// archive on stdin, wholly or not at all.
func RestoreArgv(tb testing.TB, url string) []string {
	return []string{filepath.Join(ClientBin(tb), "pg_restore"), "--clean", "--if-exists", "--no-owner", "--single-transaction", "-d", url}
}
