package backup

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/internal/pgserver/pgtest"
)

var testBinding = Binding{
	Workspace:  "acme",
	Droplet:    "d-100",
	BackupID:   "b-123",
	Created:    time.Date(2025, 7, 1, 2, 3, 4, 0, time.UTC),
	N8NVersion: "1.123.81",
}

// store is a plain HTTP peer standing in for presigned S3 URLs: it keeps
// PUT bodies (which must come with a Content-Length, as S3 requires) and
// serves them to GETs. fail lists statuses to answer first, one per
// request.
type store struct {
	t       *testing.T
	mu      sync.Mutex
	objects map[string][]byte
	fail    []int
	puts    int
	gets    int
	srv     *httptest.Server
}

func newStore(t *testing.T) *store {
	s := &store{t: t, objects: map[string][]byte{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// url is an object's URL with a query like a presigned one's.
func (s *store) url(key string) string {
	return s.srv.URL + "/backups/" + key + "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=d34db33fs3cr3t"
}

func (s *store) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		s.puts++
		if len(r.TransferEncoding) > 0 || r.ContentLength < 0 {
			s.t.Errorf("PUT without a Content-Length (transfer encoding %v)", r.TransferEncoding)
			http.Error(w, "<Error><Code>MissingContentLength</Code></Error>", http.StatusLengthRequired)
			return
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
			s.t.Errorf("PUT Content-Type %q", ct)
		}
		body, err := io.ReadAll(r.Body)
		if err != nil || int64(len(body)) != r.ContentLength {
			s.t.Errorf("PUT body: %d bytes, Content-Length %d, %v", len(body), r.ContentLength, err)
			return
		}
		if s.failNext(w) {
			return
		}
		s.objects[r.URL.Path] = body
	case http.MethodGet:
		s.gets++
		if s.failNext(w) {
			return
		}
		body, ok := s.objects[r.URL.Path]
		if !ok {
			http.Error(w, "<Error><Code>NoSuchKey</Code></Error>", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	}
}

func (s *store) failNext(w http.ResponseWriter) bool {
	if len(s.fail) == 0 {
		return false
	}
	code := s.fail[0]
	s.fail = s.fail[1:]
	if code == http.StatusForbidden {
		http.Error(w, "<Error>\n  <Code>AccessDenied</Code>\n  <Message>Request has expired</Message>\n</Error>", code)
		return true
	}
	http.Error(w, "<Error><Code>InternalError</Code></Error>", code)
	return true
}

func sha256hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// source is a seeded n8n database and data directory, backed up once.
type source struct {
	url     string
	dataDir string
	id      *age.X25519Identity
	archive *Archive
}

func newSource(t *testing.T, executions int) *source {
	t.Helper()
	s := &source{url: pgtest.New(t), id: newIdentity(t)}
	seed(t, s.url, executions)
	s.dataDir = n8nDataDir(t, t.TempDir(), "key-of-the-backup")
	a, err := Take(t.Context(), Source{Dump: dumpArgv(t, s.url), DataDir: s.dataDir}, testBinding, []age.Recipient{s.id.Recipient()}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s.archive = a
	return s
}

// TestRoundTrip: a backup of a real n8n-like database and data directory
// goes through Take, Upload, Fetch and Restore into a fresh database and
// a new droplet's data directory, and comes back exactly; restoring it
// again over the restored one replaces it cleanly.
func TestRoundTrip(t *testing.T) {
	ctx := t.Context()
	src := newSource(t, 1000)
	a := src.archive
	if a.Size == 0 || len(a.SHA256) != 64 || a.Binding != testBinding {
		t.Fatalf("archive %+v", a)
	}
	st := newStore(t)
	if err := Upload(ctx, st.srv.Client(), st.url("b-123"), a); err != nil {
		t.Fatal(err)
	}
	if err := a.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(a.Path); !os.IsNotExist(err) {
		t.Fatalf("archive still there after Remove: %v", err)
	}

	work := t.TempDir()
	path, err := Fetch(ctx, st.srv.Client(), st.url("b-123"), a.Size, a.SHA256, work)
	if err != nil {
		t.Fatal(err)
	}
	dst := pgtest.New(t)
	root := t.TempDir() // the new droplet: no data dir yet
	dataDir := filepath.Join(root, "n8n")
	want := Binding{Workspace: "acme", BackupID: "b-123", Droplet: "d-200"}
	target := Target{Restore: restoreArgv(t, dst), DataDir: dataDir, StagingDir: root}
	for _, round := range []string{"into a fresh droplet", "over the restored one"} {
		got, err := Restore(ctx, path, []age.Identity{src.id}, want, target)
		if err != nil {
			t.Fatalf("%s: %v", round, err)
		}
		if diff := cmp.Diff(got, testBinding); diff != "" {
			t.Errorf("%s: binding (-got +want):\n%s", round, diff)
		}
		if diff := cmp.Diff(dbState(t, dst), dbState(t, src.url)); diff != "" {
			t.Errorf("%s: database (-got +want):\n%s", round, diff)
		}
		if diff := cmp.Diff(dirState(t, dataDir), dirState(t, src.dataDir)); diff != "" {
			t.Errorf("%s: data dir (-got +want):\n%s", round, diff)
		}
		if diff := cmp.Diff(tempEntries(t, root), []string{"n8n"}); diff != "" {
			t.Errorf("%s: left beside the data dir (-got +want):\n%s", round, diff)
		}
	}
	if !strings.Contains(dbState(t, dst), "executions 1000 ") {
		t.Errorf("restored database: %s", dbState(t, dst))
	}
}

// craft builds a container plaintext: the binding, then sections given
// as name and data (split in chunks of at most chunk bytes), then, if
// end, the end marker.
func craft(t testing.TB, b Binding, end bool, sections ...[2]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	cw := &containerWriter{w: &buf}
	if err := cw.begin(b); err != nil {
		t.Fatal(err)
	}
	for _, s := range sections {
		w, err := cw.section(s[0])
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, s[1])
		w.Close()
	}
	if end {
		cw.end()
	}
	return buf.Bytes()
}

// encrypt writes plain encrypted to r in a new file.
func encrypt(t testing.TB, r age.Recipient, plain []byte) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, r)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plain)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "crafted.age")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tarOf makes a tar of the given entries.
func tarOf(t testing.TB, entries ...tar.Header) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		body := ""
		if h.Typeflag == tar.TypeReg {
			body = "content of " + h.Name
			h.Size = int64(len(body))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		io.WriteString(tw, body)
	}
	tw.Close()
	return buf.String()
}

// TestRestoreRefuses: every damaged, foreign or hostile backup is refused
// in the first phase, with an error naming what failed, and the target's
// database and data directory are exactly as they were, with nothing left
// in the staging directory.
func TestRestoreRefuses(t *testing.T) {
	ctx := t.Context()
	src := newSource(t, 1000)
	good, err := os.ReadFile(src.archive.Path)
	if err != nil {
		t.Fatal(err)
	}
	dst := pgtest.New(t)
	seed(t, dst, 5) // the target already has data of its own
	root := t.TempDir()
	dataDir := n8nDataDir(t, root, "key-of-the-target")
	staging := t.TempDir()
	beforeDB, beforeDir := dbState(t, dst), dirState(t, dataDir)
	target := Target{Restore: restoreArgv(t, dst), DataDir: dataDir, StagingDir: staging}
	want := Binding{Workspace: "acme", BackupID: "b-123"}
	other := newIdentity(t)
	dump := "PGDMP fake dump"
	fileTar := tarOf(t, tar.Header{Name: ".", Typeflag: tar.TypeDir, Mode: 0o755}, tar.Header{Name: "config", Typeflag: tar.TypeReg})

	withBytes := func(b []byte) func(t *testing.T) string {
		return func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "backup.age")
			if err := os.WriteFile(p, b, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	flip := func(at int) func(t *testing.T) string {
		b := bytes.Clone(good)
		b[at] ^= 0x01
		return withBytes(b)
	}
	cut := func(n int) func(t *testing.T) string { return withBytes(good[:n]) }
	crafted := func(plain []byte) func(t *testing.T) string {
		return func(t *testing.T) string { return encrypt(t, src.id.Recipient(), plain) }
	}
	withTar := func(tr string) func(t *testing.T) string {
		return crafted(craft(t, testBinding, true, [2]string{sectionDump, dump}, [2]string{sectionData, tr}))
	}
	n := len(good)
	// age's payload: after the header's "--- MAC" line, a 16-byte nonce,
	// then chunks of 64 KiB and a 16-byte tag.
	payloadAt := bytes.Index(good, []byte("\n--- ")) + 1
	payloadAt += bytes.IndexByte(good[payloadAt:], '\n') + 1 + 16
	tests := []struct {
		name    string
		file    func(t *testing.T) string
		ids     []age.Identity
		want    Binding
		target  *Target
		wantErr string
		is      error
	}{
		{name: "flipped byte in the age header", file: flip(40), wantErr: "backup b-123: decrypt: "},
		{name: "flipped byte in the middle", file: flip(n / 2), wantErr: `reading section "data.tar" data: failed to decrypt and authenticate payload chunk`},
		{name: "flipped last byte", file: flip(n - 1), wantErr: `reading section "data.tar" data: failed to decrypt and authenticate payload chunk`},
		{name: "empty file", file: cut(0), wantErr: "backup b-123: decrypt: "},
		{name: "cut in the header", file: cut(60), wantErr: "backup b-123: decrypt: "},
		{name: "cut in the middle", file: cut(n / 2), wantErr: "backup b-123: read: "},
		{name: "cut 17 bytes short", file: cut(n - 17), wantErr: "backup b-123: read: "},
		{name: "cut one byte short", file: cut(n - 1), wantErr: "backup b-123: read: "},
		{name: "cut at a 64 KiB age chunk boundary", file: cut(payloadAt + 2*(64<<10+16)), wantErr: `backup b-123: read: malformed backup container: offset 131072: truncated: end of data while reading section "data.tar" data`},
		{name: "encrypted to another key", file: withBytes(good), ids: []age.Identity{other}, wantErr: "backup b-123: decrypt: identity did not match any of the recipients"},
		{name: "wrong workspace", file: withBytes(good), want: Binding{Workspace: "globex", BackupID: "b-123"},
			wantErr: `backup b-123: backup is bound to another workspace or backup id: binding says workspace "acme", want "globex"`, is: ErrBinding},
		{name: "wrong backup id", file: withBytes(good), want: Binding{Workspace: "acme", BackupID: "b-124"},
			wantErr: `backup b-124: backup is bound to another workspace or backup id: binding says backup id "b-123", want "b-124"`, is: ErrBinding},
		{name: "plaintext cut at a chunk boundary", file: crafted(craft(t, testBinding, false, [2]string{sectionDump, dump})[:len(craft(t, testBinding, false, [2]string{sectionDump, dump}))-4]),
			wantErr: `read: malformed backup container: offset 171: truncated: end of data while reading section "postgres.dump" chunk length`, is: ErrContainer},
		{name: "no end marker", file: crafted(craft(t, testBinding, false, [2]string{sectionDump, dump})),
			wantErr: "read: malformed backup container: offset 175: truncated: end of data while reading a section or the end marker", is: ErrContainer},
		{name: "data after the end marker", file: crafted(append(craft(t, testBinding, true, [2]string{sectionDump, dump}), 'x')),
			wantErr: "read: malformed backup container: offset 195: data after the end marker", is: ErrContainer},
		{name: "no dump section", file: crafted(craft(t, testBinding, true)),
			wantErr: "read: malformed backup container: offset 137: no postgres.dump section", is: ErrContainer},
		{name: "no data dir in the backup", file: crafted(craft(t, testBinding, true, [2]string{sectionDump, dump})),
			wantErr: "backup b-123: holds no data directory; restore it with an empty Target.DataDir"},
		{name: "tar entry with ..", file: withTar(tarOf(t, tar.Header{Name: "../escaped", Typeflag: tar.TypeReg})),
			wantErr: `section data.tar: entry "../escaped": ".." in path`},
		{name: "tar entry with an absolute path", file: withTar(tarOf(t, tar.Header{Name: "/etc/escaped", Typeflag: tar.TypeReg})),
			wantErr: `section data.tar: entry "/etc/escaped": absolute path`},
		{name: "tar symlink out of the directory", file: withTar(tarOf(t, tar.Header{Name: "up", Typeflag: tar.TypeSymlink, Linkname: "../../.."})),
			wantErr: `section data.tar: entry "up": symlink to "../../.." leaves the directory`},
		{name: "tar absolute symlink", file: withTar(tarOf(t, tar.Header{Name: "etc", Typeflag: tar.TypeSymlink, Linkname: "/etc"})),
			wantErr: `section data.tar: entry "etc": symlink to "/etc" leaves the directory`},
		{name: "tar write through a symlink", file: withTar(tarOf(t,
			tar.Header{Name: "sub/", Typeflag: tar.TypeDir},
			tar.Header{Name: "link", Typeflag: tar.TypeSymlink, Linkname: "sub"},
			tar.Header{Name: "link/file", Typeflag: tar.TypeReg})),
			wantErr: `section data.tar: entry "link/file": parent "link" is not a directory of the archive`},
		{name: "tar hard link", file: withTar(tarOf(t, tar.Header{Name: "config", Typeflag: tar.TypeReg}, tar.Header{Name: "hard", Typeflag: tar.TypeLink, Linkname: "config"})),
			wantErr: `section data.tar: entry "hard": type '1' is not a file, directory or symlink`},
		{name: "tar device", file: withTar(tarOf(t, tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3})),
			wantErr: `section data.tar: entry "null": type '3' is not a file, directory or symlink`},
		{name: "tar duplicate entry", file: withTar(tarOf(t, tar.Header{Name: "config", Typeflag: tar.TypeReg}, tar.Header{Name: "config", Typeflag: tar.TypeReg})),
			wantErr: `section data.tar: entry "config": duplicate`},
		{name: "tar not a tar", file: withTar(strings.Repeat("not a tar ", 100)),
			wantErr: `section data.tar: archive/tar: invalid tar header`},
		{name: "restore command fails (its transaction rolls back)", file: withBytes(good),
			target:  &Target{Restore: []string{filepath.Join(pgBin(t), "pg_restore"), "--no-owner", "--single-transaction", "-d", dst}, DataDir: dataDir, StagingDir: staging},
			wantErr: `backup b-123: restore command pg_restore: exit status 1: pg_restore: error: could not execute query: ERROR:  relation "`},
	}
	// A sanity check of the crafted files: the same construction with a
	// good tar restores (into a target without a database change).
	if _, err := Restore(ctx, withTar(fileTar)(t), []age.Identity{src.id}, want, Target{Restore: []string{"true"}, DataDir: filepath.Join(t.TempDir(), "n8n")}); err != nil {
		t.Fatalf("a well-formed crafted backup: %v", err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids := tc.ids
			if ids == nil {
				ids = []age.Identity{src.id}
			}
			w := want
			if tc.want != (Binding{}) {
				w = tc.want
			}
			tg := target
			if tc.target != nil {
				tg = *tc.target
			}
			_, err := Restore(ctx, tc.file(t), ids, w, tg)
			t.Log(err)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %v, want one containing %q", err, tc.wantErr)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if diff := cmp.Diff(dbState(t, dst), beforeDB); diff != "" {
				t.Errorf("target database changed (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(dirState(t, dataDir), beforeDir); diff != "" {
				t.Errorf("target data dir changed (-got +want):\n%s", diff)
			}
			if diff := cmp.Diff(tempEntries(t, root), []string{"n8n"}); diff != "" {
				t.Errorf("beside the data dir (-got +want):\n%s", diff)
			}
			if left := tempEntries(t, staging); len(left) > 0 {
				t.Errorf("staging dir left: %v", left)
			}
		})
	}
}

// TestTakeFails: a dump command that fails, complains or writes something
// other than a custom-format archive fails the backup with an error naming
// it, and no file is left.
func TestTakeFails(t *testing.T) {
	ctx := t.Context()
	url := pgtest.New(t)
	seed(t, url, 10)
	missingDB := strings.Replace(url, "/t_", "/missing_", 1)
	escaping := t.TempDir()
	os.Symlink("/etc/passwd", filepath.Join(escaping, "passwd"))
	tests := []struct {
		name    string
		src     Source
		wantErr string
	}{
		{"no such command", Source{Dump: []string{"/nonexistent/pg_dump", "-Fc"}},
			"backup b-123: dump command pg_dump: fork/exec /nonexistent/pg_dump: no such file or directory"},
		{"pg_dump of a missing database", Source{Dump: dumpArgv(t, missingDB)},
			`backup b-123: dump command pg_dump: exit status 1: pg_dump: error: connection to server at "127.0.0.1", port`},
		{"pg_dump with a bad flag", Source{Dump: []string{filepath.Join(pgBin(t), "pg_dump"), "--no-such-flag"}},
			"backup b-123: dump command pg_dump: exit status 1: " + filepath.Join(pgBin(t), "pg_dump") + ": unrecognized option '--no-such-flag'"},
		{"plain format", Source{Dump: []string{filepath.Join(pgBin(t), "pg_dump"), "-d", url}},
			`backup b-123: dump command pg_dump: its output is not a pg_dump custom-format archive (starts with "--\n--")`},
		{"no output", Source{Dump: []string{"true"}},
			"backup b-123: dump command true: its output ended after 0 bytes, before a pg_dump header"},
		{"stderr on success", Source{Dump: []string{"sh", "-c", "printf PGDMP; echo 'warning: something' >&2"}},
			"backup b-123: dump command sh wrote to stderr: warning: something"},
		{"fails after a megabyte", Source{Dump: []string{"sh", "-c", "printf PGDMP; head -c 1000000 /dev/zero; exit 3"}},
			"backup b-123: dump command sh: exit status 3"},
		{"missing data dir", Source{Dump: dumpArgv(t, url), DataDir: "/nonexistent/n8n"},
			"backup b-123: data dir: stat /nonexistent/n8n: no such file or directory"},
		{"symlink out of the data dir", Source{Dump: dumpArgv(t, url), DataDir: escaping},
			`backup b-123: data dir: passwd: symlink to "/etc/passwd" leaves the data directory`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmp := t.TempDir()
			a, err := Take(ctx, tc.src, testBinding, []age.Recipient{newIdentity(t).Recipient()}, tmp)
			if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("Take: %+v, %v; want an error starting %q", a, err, tc.wantErr)
			}
			if left := tempEntries(t, tmp); len(left) > 0 {
				t.Errorf("left in tmpDir: %v", left)
			}
		})
	}
}

// TestUpload: 5xx and 429 are retried and the object arrives whole; a
// 403 (an expired URL) is not retried and is ErrRefused; errors never
// show the presigned URL's signature.
func TestUpload(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	body := bytes.Repeat([]byte("archive "), 100_000)
	p := filepath.Join(dir, "a.age")
	os.WriteFile(p, body, 0o600)
	a := &Archive{Path: p, Size: int64(len(body)), Binding: testBinding}
	tests := []struct {
		name     string
		fail     []int
		wantPuts int
		wantErr  string
		refused  bool
	}{
		{name: "ok", wantPuts: 1},
		{name: "500 twice then 200", fail: []int{500, 500}, wantPuts: 3},
		{name: "429 then 200", fail: []int{429}, wantPuts: 2},
		{name: "403 expired", fail: []int{403}, wantPuts: 1, refused: true,
			wantErr: "upload backup b-123: PUT: 403 Forbidden: <Error> <Code>AccessDenied</Code> <Message>Request has expired</Message> </Error>"},
		{name: "404", fail: []int{404}, wantPuts: 1, refused: true, wantErr: "upload backup b-123: PUT: 404 Not Found"},
		{name: "500 every time", fail: []int{500, 500, 500, 500, 500, 500}, wantPuts: attempts,
			wantErr: "upload backup b-123: gave up after 5 attempts: PUT: 500 Internal Server Error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			st.fail = tc.fail
			err := Upload(ctx, st.srv.Client(), st.url("b-123"), a)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.wantErr)) {
				t.Errorf("Upload: %v, want %q", err, tc.wantErr)
			}
			if got := errors.Is(err, ErrRefused); got != tc.refused {
				t.Errorf("errors.Is(%v, ErrRefused) = %v, want %v", err, got, tc.refused)
			}
			if err != nil && strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("error shows the signature: %v", err)
			}
			if st.puts != tc.wantPuts {
				t.Errorf("%d PUTs, want %d", st.puts, tc.wantPuts)
			}
			if err == nil && !bytes.Equal(st.objects["/backups/b-123"], body) {
				t.Errorf("stored %d bytes, want the %d of the archive", len(st.objects["/backups/b-123"]), len(body))
			}
		})
	}
	t.Run("network error", func(t *testing.T) {
		st := newStore(t)
		u := st.url("b-123")
		st.srv.Close()
		ctx, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
		defer cancel()
		err := Upload(ctx, http.DefaultClient, u, a)
		if err == nil || strings.Contains(err.Error(), "s3cr3t") || !strings.Contains(err.Error(), "connection refused") || errors.Is(err, ErrRefused) {
			t.Errorf("Upload to a closed server: %v", err)
		}
	})
}

// TestFetch: a body that is not the announced one (digest, size, larger
// than announced) is refused and no file is left; 5xx is retried, 4xx is
// ErrRefused.
func TestFetch(t *testing.T) {
	ctx := t.Context()
	body := bytes.Repeat([]byte("0123456789"), 50_000)
	sum := sha256hex(body)
	tests := []struct {
		name     string
		fail     []int
		size     int64
		sha      string
		handler  http.HandlerFunc
		wantErr  string
		refused  bool
		wantGets int
	}{
		{name: "ok", size: int64(len(body)), sha: sum, wantGets: 1},
		{name: "500 then ok", fail: []int{500}, size: int64(len(body)), sha: sum, wantGets: 2},
		{name: "wrong sha256", size: int64(len(body)), sha: strings.Repeat("0", 64), wantGets: 1,
			wantErr: "fetch backup: sha256 " + sum + ", want " + strings.Repeat("0", 64)},
		{name: "announced size differs", size: 10, sha: sum, wantGets: 1, wantErr: "fetch backup: announced 500000 bytes, want 10"},
		{name: "larger than announced, unannounced", size: 10, sha: sum,
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Write(body[:100])
				w.(http.Flusher).Flush()
				w.Write(body[100:])
			},
			wantErr: "fetch backup: body is larger than the announced 10 bytes"},
		{name: "403", fail: []int{403}, size: int64(len(body)), sha: sum, wantGets: 1, refused: true, wantErr: "fetch backup: GET: 403 Forbidden"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newStore(t)
			st.objects["/backups/b-1"] = body
			st.fail = tc.fail
			u := st.url("b-1")
			if tc.handler != nil {
				srv := httptest.NewServer(tc.handler)
				defer srv.Close()
				u = srv.URL
			}
			tmp := t.TempDir()
			p, err := Fetch(ctx, http.DefaultClient, u, tc.size, tc.sha, tmp)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := os.ReadFile(p); !bytes.Equal(got, body) {
					t.Errorf("fetched %d bytes, want %d", len(got), len(body))
				}
			} else {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Errorf("Fetch: %q, %v; want %q", p, err, tc.wantErr)
				}
				if left := tempEntries(t, tmp); len(left) > 0 {
					t.Errorf("left in tmpDir: %v", left)
				}
			}
			if got := errors.Is(err, ErrRefused); got != tc.refused {
				t.Errorf("errors.Is(%v, ErrRefused) = %v, want %v", err, got, tc.refused)
			}
			if tc.handler == nil && st.gets != tc.wantGets {
				t.Errorf("%d GETs, want %d", st.gets, tc.wantGets)
			}
		})
	}
}
