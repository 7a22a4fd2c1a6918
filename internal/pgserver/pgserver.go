// Package pgserver starts a private, throwaway PostgreSQL cluster from the
// system's server binaries, for tests (through package pgtest) and for
// `make db`.
//
// A cluster is one directory: data/ (made by initdb, trust authentication,
// UTF8, C locale, no fsync), sock/ (the unix socket) and postgres.log. The
// server listens on 127.0.0.1 only, on a port picked free at start, with
// settings that trade durability for speed (fsync, synchronous_commit and
// full_page_writes off). It is started and stopped with pg_ctl, so it runs
// detached from the calling process; Stop shuts it down immediately and
// removes the directory.
//
// initdb and postgres refuse to run as root. When the caller is root, every
// binary runs as the "postgres" system user (set through the process
// credentials, no sudo needed) and the cluster directory is given to it.
//
// A process that dies without calling Stop (a test binary hitting its
// -timeout, kill -9) leaves its cluster running. Every temporary cluster
// directory records the pid of the process that made it, and Start stops
// and removes the clusters whose owner is gone.
//
// The binaries are found in PATH or in /usr/lib/postgresql/<version>/bin
// (the highest version wins). When there are none and the caller is root on
// Debian, Start installs the postgresql package with apt-get.
package pgserver

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// Superuser is the name of the cluster's superuser (no password).
const Superuser = "postgres"

// tempPrefix names temporary cluster directories in os.TempDir().
const tempPrefix = "pgserver-"

// settings are appended to postgresql.conf after initdb.
const settings = `
# Added by genesis.dev/fleet/internal/pgserver: a throwaway cluster for
# tests and development. Fast, not durable.
listen_addresses = '127.0.0.1'
max_connections = 200
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_wal_size = 1GB
checkpoint_timeout = 30min
timezone = 'UTC'
log_timezone = 'UTC'
unix_socket_permissions = 0700
`

// Options configure Start.
type Options struct {
	// Dir keeps the cluster in this directory: created if missing, reused
	// (data kept) if it already holds one, and left in place by Stop.
	// Empty means a new temporary directory that Stop removes.
	Dir string
	// BinDir is the directory of initdb, pg_ctl and postgres. Empty means
	// search PATH and /usr/lib/postgresql/*/bin.
	BinDir string
}

// Server is a running cluster. Its methods are safe for concurrent use.
type Server struct {
	root    string // cluster directory
	data    string
	sock    string
	sockTmp bool // sock is a separate temp dir (root's path was too long)
	logFile string
	bin     string
	port    int
	temp    bool                // remove root on Stop
	cred    *syscall.Credential // run binaries as this user (we are root)
	uid     int                 // owner for files we create; -1 when not root
	gid     int

	stopOnce sync.Once
	stopErr  error
}

// Start initializes (unless opts.Dir already holds a cluster) and starts a
// cluster, returning once it accepts connections.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	bin := opts.BinDir
	if bin == "" {
		if bin, err = findBinDir(ctx); err != nil {
			return nil, err
		}
	}
	s := &Server{bin: bin, uid: -1, gid: -1}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("pgserver: running as root needs a postgres system user to run the server as: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.uid, s.gid = uid, gid
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	reapStale(ctx, s)

	if opts.Dir == "" {
		s.temp = true
		if s.root, err = os.MkdirTemp("", tempPrefix); err != nil {
			return nil, fmt.Errorf("pgserver: %w", err)
		}
		if err := os.WriteFile(filepath.Join(s.root, "owner"), []byte(ownerID(os.Getpid())), 0o644); err != nil {
			os.RemoveAll(s.root)
			return nil, fmt.Errorf("pgserver: %w", err)
		}
	} else {
		if s.root, err = filepath.Abs(opts.Dir); err != nil {
			return nil, fmt.Errorf("pgserver: %w", err)
		}
		if err := os.MkdirAll(s.root, 0o700); err != nil {
			return nil, fmt.Errorf("pgserver: %w", err)
		}
	}
	defer func() {
		if err != nil {
			s.cleanup()
		}
	}()
	if strings.ContainsAny(s.root, `'"\`) {
		return nil, fmt.Errorf("pgserver: directory %q: quotes and backslashes are not supported", s.root)
	}
	if err := s.chown(s.root); err != nil {
		return nil, err
	}
	if err := s.checkReachable(s.root); err != nil {
		return nil, err
	}
	s.data = filepath.Join(s.root, "data")
	s.logFile = filepath.Join(s.root, "postgres.log")
	if err := s.makeSockDir(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(s.data, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := s.initdb(ctx); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("pgserver: %w", err)
	}
	if err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// URL returns a connection URL for database dbname as the superuser, over
// TCP on 127.0.0.1.
func (s *Server) URL(dbname string) string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)),
		Path:     "/" + dbname,
		RawQuery: "sslmode=disable",
	}
	return u.String()
}

// Port returns the TCP port the server listens on (on 127.0.0.1).
func (s *Server) Port() int { return s.port }

// BinDir is the directory of the server's binaries (pg_dump and
// pg_restore are there too).
func (s *Server) BinDir() string { return s.bin }

// Dir returns the cluster directory.
func (s *Server) Dir() string { return s.root }

// CreateDatabase creates an empty database.
func (s *Server) CreateDatabase(ctx context.Context, name string) error {
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("create database %s: %w", name, err)
	}
	return nil
}

// Stop stops the server (immediately for a temporary cluster, with a clean
// shutdown for one kept in Options.Dir) and removes a temporary cluster's
// directory. Calling it again returns the first result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		mode := "fast"
		if s.temp {
			mode = "immediate"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := s.run(ctx, "pg_ctl", "stop", "-D", s.data, "-m", mode, "-w", "-t", "60"); err != nil && s.running() {
			s.stopErr = fmt.Errorf("pgserver: stop: %w", err)
			return
		}
		s.stopErr = s.cleanup()
	})
	return s.stopErr
}

// Restart stops the server with a fast shutdown (every session is
// disconnected, the data kept) and starts it again on the same port.
func (s *Server) Restart(ctx context.Context) error {
	opts := fmt.Sprintf("-p %d -k '%s'", s.port, s.sock)
	if out, err := s.run(ctx, "pg_ctl", "restart", "-D", s.data, "-l", s.logFile, "-m", "fast", "-w", "-t", "120", "-o", opts); err != nil {
		return fmt.Errorf("pgserver: pg_ctl restart: %w\n%s", err, out)
	}
	return nil
}

// cleanup removes what Start made that must not outlive the server.
func (s *Server) cleanup() error {
	var errs []error
	if s.sockTmp {
		errs = append(errs, os.RemoveAll(s.sock))
	}
	if s.temp && s.root != "" {
		if s.data != "" && s.running() {
			// Start failed half-way with the server up.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			s.run(ctx, "pg_ctl", "stop", "-D", s.data, "-m", "immediate", "-w")
			cancel()
		}
		errs = append(errs, os.RemoveAll(s.root))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return nil
}

// running reports whether a postmaster.pid file exists.
func (s *Server) running() bool {
	_, err := os.Stat(filepath.Join(s.data, "postmaster.pid"))
	return err == nil
}

func (s *Server) initdb(ctx context.Context) error {
	out, err := s.run(ctx, "initdb",
		"-D", s.data,
		"-U", Superuser,
		"--auth=trust",
		"--no-sync",
		"-E", "UTF8",
		"--no-locale",
	)
	if err != nil {
		return fmt.Errorf("pgserver: initdb: %w\n%s", err, out)
	}
	f, err := os.OpenFile(filepath.Join(s.data, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	_, err = io.WriteString(f, settings)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pgserver: write postgresql.conf: %w", err)
	}
	return nil
}

// start runs pg_ctl start on a free port, retrying with another port when
// someone else took it between the check and the bind.
func (s *Server) start(ctx context.Context) error {
	var err error
	for range 5 {
		if s.port, err = freePort(); err != nil {
			return fmt.Errorf("pgserver: pick a port: %w", err)
		}
		logStart := fileSize(s.logFile)
		opts := fmt.Sprintf("-p %d -k '%s'", s.port, s.sock)
		var out []byte
		out, err = s.run(ctx, "pg_ctl", "start", "-D", s.data, "-l", s.logFile, "-w", "-t", "120", "-o", opts)
		if err == nil {
			return nil
		}
		log := readFrom(s.logFile, logStart)
		err = fmt.Errorf("pgserver: pg_ctl start: %w\n%s%s", err, out, log)
		if !strings.Contains(log, "could not bind") && !strings.Contains(log, "already in use") {
			return err
		}
	}
	return err
}

// run runs one of the PostgreSQL binaries, as the postgres user when we are
// root, and returns its combined output.
func (s *Server) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, name), args...)
	cmd.Dir = os.TempDir() // the caller's working directory may be closed to postgres
	cmd.Env = cleanEnv()
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.Bytes(), err
}

// cleanEnv is the environment without PG* variables, which would otherwise
// point the binaries at some other cluster.
func cleanEnv() []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
	return append(env, "LC_ALL=C", "TZ=UTC")
}

// makeSockDir makes the unix socket directory: sock/ in the cluster
// directory, or a short temporary one when that path is too long for a
// socket address (about 107 bytes).
func (s *Server) makeSockDir() error {
	s.sock = filepath.Join(s.root, "sock")
	if len(s.sock)+len("/.s.PGSQL.65535") > 100 {
		dir, err := os.MkdirTemp("", "pgsock-")
		if err != nil {
			return fmt.Errorf("pgserver: %w", err)
		}
		s.sock, s.sockTmp = dir, true
	} else if err := os.MkdirAll(s.sock, 0o700); err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	return s.chown(s.sock)
}

// chown gives path to the postgres user when we are root.
func (s *Server) chown(path string) error {
	if s.uid < 0 {
		return nil
	}
	if err := os.Chown(path, s.uid, s.gid); err != nil {
		return fmt.Errorf("pgserver: give %s to the postgres user: %w", path, err)
	}
	return nil
}

// checkReachable reports a clear error when, running as root, the postgres
// user cannot reach dir because a parent directory is closed to it.
func (s *Server) checkReachable(dir string) error {
	if s.uid < 0 {
		return nil
	}
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("pgserver: %w", err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		perm := fi.Mode().Perm()
		switch {
		case perm&0o001 != 0:
		case ok && int(st.Uid) == s.uid && perm&0o100 != 0:
		case ok && int(st.Gid) == s.gid && perm&0o010 != 0:
		default:
			return fmt.Errorf("pgserver: the postgres user (the server cannot run as root) cannot enter %s; choose a directory it can reach", d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// reapStale stops and removes temporary clusters whose owning process has
// exited without calling Stop.
func reapStale(ctx context.Context, s *Server) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), tempPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "owner"))
		if err != nil {
			continue // not ours, or its owner is still writing it
		}
		pidText, ns, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || ns != pidNamespace() || alive(pid) {
			continue // another machine's or container's process, or still running
		}
		stale := &Server{bin: s.bin, cred: s.cred, uid: s.uid, gid: s.gid, root: dir, data: filepath.Join(dir, "data"), temp: true}
		if stale.running() {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			stale.run(ctx, "pg_ctl", "stop", "-D", stale.data, "-m", "immediate", "-w")
			cancel()
		}
		os.RemoveAll(dir)
	}
}

// ownerID is what a temporary cluster's owner file holds: the owner's pid
// and its pid namespace, so that a process never judges the liveness of a
// pid from another container sharing the same /tmp.
func ownerID(pid int) string {
	return strconv.Itoa(pid) + " " + pidNamespace()
}

func pidNamespace() string {
	ns, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return "unknown"
	}
	return ns
}

// alive reports whether process pid exists and is not a zombie waiting
// for its parent.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no procfs: trust kill
	}
	// The state follows the parenthesized command name: "pid (comm) S ...".
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the end of a log file from offset, at most 4 KiB.
func readFrom(path string, offset int64) string {
	b, err := os.ReadFile(path)
	if err != nil || offset > int64(len(b)) {
		return ""
	}
	b = b[offset:]
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// findBinDir returns the directory holding initdb, pg_ctl and postgres,
// installing Debian's postgresql package when we are root and there is none.
func findBinDir(ctx context.Context) (string, error) {
	if dir := lookBinDir(); dir != "" {
		return dir, nil
	}
	if os.Geteuid() == 0 && fileExists("/etc/debian_version") {
		if err := aptInstall(ctx); err != nil {
			return "", err
		}
		if dir := lookBinDir(); dir != "" {
			return dir, nil
		}
	}
	return "", errors.New("pgserver: no PostgreSQL server binaries (initdb, pg_ctl, postgres) in PATH or /usr/lib/postgresql/*/bin; " +
		"install them (Debian: apt-get install postgresql) or set DATABASE_URL to a server where tests may create databases")
}

func lookBinDir() string {
	if p, err := exec.LookPath("initdb"); err == nil {
		if p, err := filepath.EvalSymlinks(p); err == nil && hasBinaries(filepath.Dir(p)) {
			return filepath.Dir(p)
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		return compareVersions(filepath.Base(filepath.Dir(b)), filepath.Base(filepath.Dir(a)))
	})
	for _, d := range dirs {
		if hasBinaries(d) {
			return d
		}
	}
	return ""
}

// compareVersions orders dotted version strings numerically ("9.6" < "15").
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if c := cmp.Compare(x, y); c != 0 {
			return c
		}
	}
	return strings.Compare(a, b)
}

func hasBinaries(dir string) bool {
	for _, b := range [...]string{"initdb", "pg_ctl", "postgres"} {
		if !fileExists(filepath.Join(dir, b)) {
			return false
		}
	}
	return true
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func aptInstall(ctx context.Context) error {
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{
		{"-o", "DPkg::Lock::Timeout=600", "update", "-qq"},
		{"-o", "DPkg::Lock::Timeout=600", "install", "-y", "-qq", "--no-install-recommends", "postgresql"},
	} {
		cmd := exec.CommandContext(ctx, "apt-get", args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("pgserver: no PostgreSQL binaries found and apt-get %s failed: %w\n%s", args[2], err, out)
		}
	}
	return nil
}

// RunDev runs a development cluster for `make db`: it starts one (kept in
// dir when dir is not empty, else in a temporary directory), makes sure a
// database named "genesis" exists, prints its DATABASE_URL=... line to
// stdout, and stops the server when ctx is done. It applies no migrations.
func RunDev(ctx context.Context, stdout io.Writer, dir string) (err error) {
	s, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, s.Stop()) }()

	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return fmt.Errorf("pgserver: %w", err)
	}
	var exists bool
	err = conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'genesis')`).Scan(&exists)
	if err == nil && !exists {
		_, err = conn.Exec(ctx, `CREATE DATABASE genesis`)
	}
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return fmt.Errorf("pgserver: create database genesis: %w", err)
	}

	where := "a temporary directory, removed on exit"
	if dir != "" {
		where = s.root
	}
	fmt.Fprintf(stdout, "DATABASE_URL=%s\n# PostgreSQL from %s on 127.0.0.1:%d, data in %s; interrupt to stop it.\n",
		s.URL("genesis"), s.bin, s.port, where)
	<-ctx.Done()
	return nil
}
