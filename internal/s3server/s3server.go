// Package s3server runs a real S3-compatible object store, SeaweedFS's
// `weed mini` (master, volume server, filer and S3 gateway in one process),
// on 127.0.0.1 for tests and development: the stand-in for DigitalOcean
// Spaces. Package s3test finds or builds the pinned binary
// (scripts/build-weed) and gives each test a server that stops with it.
//
// A server is one directory: data/ (volumes and filer metadata), s3.json
// (the one identity, with fixed keys and every S3 action), log/ (SeaweedFS's
// log files) and weed.log (its standard output and error). Every port it
// listens on (HTTP and gRPC of master, volume, filer, S3 and the embedded
// admin worker) is picked free at start and passed explicitly, so SeaweedFS
// refuses a taken port instead of silently moving to another one; Start then
// tries again with new ports. Telemetry, WebDAV, the admin UI and the
// Iceberg and Lance endpoints are off.
//
// Start returns once the S3 gateway answers a signed request and the bucket
// exists. The process leads its own process group and dies with the process
// that started it; Stop ends the group and removes a temporary directory (a
// process killed before Stop leaves only that directory, s3server-* in the
// temporary directory, about half a megabyte). Down and Up stop and start the same server
// on the same ports and data, for tests of storage that goes away and comes
// back.
package s3server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The fixed credentials and region of every server this package starts. They
// guard nothing but a loopback test server.
const (
	AccessKey = "genesis-test-access"
	SecretKey = "genesis-test-secret-not-for-production"
	Region    = "us-east-1"
)

// DefaultBucket is the bucket Start creates when Options.Bucket is empty.
const DefaultBucket = "genesis-backups"

// stopGrace is how long a stopping server gets after SIGTERM before SIGKILL.
const stopGrace = 15 * time.Second

// Options configure Start.
type Options struct {
	// Bin is the weed binary (required; see s3test.Bin).
	Bin string
	// Dir keeps the server's data in this directory: created if missing,
	// reused if it holds a server's data, and left in place by Stop. Empty
	// means a new temporary directory that Stop removes.
	Dir string
	// Bucket is created at start when missing; empty means DefaultBucket.
	Bucket string
}

// ports are the ones a server listens on, all on 127.0.0.1.
type ports struct {
	master, masterGRPC, volume, volumeGRPC, filer, filerGRPC, s3, s3GRPC, admin, adminGRPC int
}

func (p ports) all() []int {
	return []int{p.master, p.masterGRPC, p.volume, p.volumeGRPC, p.filer, p.filerGRPC, p.s3, p.s3GRPC, p.admin, p.adminGRPC}
}

// Server is a running (or, between Down and Up, stopped) SeaweedFS. Its
// methods are safe for concurrent use.
type Server struct {
	bin    string
	root   string
	temp   bool
	bucket string
	ports  ports

	mu      sync.Mutex // held across Up, Down and Stop
	proc    *proc      // nil while down
	stopped bool

	stopOnce sync.Once
	stopErr  error
}

// proc is one run of weed.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for
	err    error         // cmd.Wait's result, written before exited closes
	logOff int64         // weed.log's size when it started
}

// Start prepares the directory, starts SeaweedFS and returns once its S3
// gateway answers and the bucket exists.
func Start(ctx context.Context, opts Options) (_ *Server, err error) {
	if opts.Bin == "" {
		return nil, errors.New("s3server: no weed binary (Options.Bin)")
	}
	bin, err := filepath.Abs(opts.Bin)
	if err != nil {
		return nil, fmt.Errorf("s3server: %w", err)
	}
	s := &Server{bin: bin, bucket: cmpOr(opts.Bucket, DefaultBucket)}
	if opts.Dir == "" {
		s.temp = true
		if s.root, err = os.MkdirTemp("", "s3server-"); err != nil {
			return nil, fmt.Errorf("s3server: %w", err)
		}
	} else {
		if s.root, err = filepath.Abs(opts.Dir); err != nil {
			return nil, fmt.Errorf("s3server: %w", err)
		}
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	for _, d := range []string{s.dataDir(), s.logDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("s3server: %w", err)
		}
	}
	if err := writeIdentities(filepath.Join(s.root, "s3.json")); err != nil {
		return nil, err
	}

	// A port picked free can be taken before weed binds it; weed then
	// exits (every port is explicit), and a new set is tried.
	for try := 1; ; try++ {
		if s.ports, err = pickPorts(); err != nil {
			return nil, fmt.Errorf("s3server: pick ports: %w", err)
		}
		err = s.Up(ctx)
		if err == nil || try == 5 || ctx.Err() != nil || !errors.Is(err, errExited) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if err := s.ensureBucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Endpoint returns the S3 gateway's base URL, http://127.0.0.1:port.
func (s *Server) Endpoint() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(s.ports.s3))
}

// AccessKey returns the access key id the server accepts.
func (s *Server) AccessKey() string { return AccessKey }

// SecretKey returns the secret key of AccessKey.
func (s *Server) SecretKey() string { return SecretKey }

// Region returns the region requests are signed for.
func (s *Server) Region() string { return Region }

// Bucket returns the bucket Start created.
func (s *Server) Bucket() string { return s.bucket }

// Dir returns the server's directory.
func (s *Server) Dir() string { return s.root }

// Up starts the server again after Down, on the same ports and data, and
// returns once its S3 gateway answers a signed request. It does nothing
// when the server is running.
func (s *Server) Up(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("s3server: up: the server was stopped")
	}
	if s.proc != nil {
		return nil
	}
	logFile, err := os.OpenFile(s.logFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("s3server: %w", err)
	}
	defer logFile.Close() // the child has its own copy
	p := &proc{exited: make(chan struct{}), logOff: fileSize(s.logFile())}

	cmd := exec.Command(s.bin, s.args()...)
	cmd.Dir = s.root
	cmd.Env = s.env()
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	// Its own process group, for Down; and killed with the process that
	// started it (Linux's parent-death signal), so a test binary that dies
	// on its -timeout leaves no server running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("s3server: start %s: %w", s.bin, err)
	}
	p.cmd = cmd
	s.proc = p
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()

	if err := s.waitReady(ctx, p); err != nil {
		s.downLocked()
		return err
	}
	return nil
}

// errExited marks a start that failed because weed exited (a taken port,
// typically), as opposed to one that ran out of time.
var errExited = errors.New("weed exited during start")

// waitReady polls the S3 gateway with a signed request (listing buckets)
// until it answers, weed exits, or ctx is done.
func (s *Server) waitReady(ctx context.Context, p *proc) error {
	mc, err := s.client()
	if err != nil {
		return err
	}
	var last error
	for {
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, last = mc.ListBuckets(attempt)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("s3server: %w (%v); weed.log:\n%s", errExited, p.err, readFrom(s.logFile(), p.logOff))
		case <-ctx.Done():
			return fmt.Errorf("s3server: waiting for S3 on %s: %w (last: %v); weed.log:\n%s", s.Endpoint(), ctx.Err(), last, readFrom(s.logFile(), p.logOff))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ensureBucket creates the bucket unless it exists (a reused Dir).
func (s *Server) ensureBucket(ctx context.Context) error {
	mc, err := s.client()
	if err != nil {
		return err
	}
	ok, err := mc.BucketExists(ctx, s.bucket)
	if err == nil && !ok {
		err = mc.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: Region})
	}
	if err != nil {
		return fmt.Errorf("s3server: create bucket %s: %w", s.bucket, err)
	}
	return nil
}

// client is an S3 client for the server, without retries (the callers poll).
func (s *Server) client() (*minio.Client, error) {
	mc, err := minio.New(net.JoinHostPort("127.0.0.1", strconv.Itoa(s.ports.s3)), &minio.Options{
		Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Region:       Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    &http.Transport{DisableKeepAlives: true},
		MaxRetries:   1,
	})
	if err != nil {
		return nil, fmt.Errorf("s3server: %w", err)
	}
	return mc, nil
}

// Down stops the server (SIGTERM to its process group, SIGKILL after a
// grace period) and keeps its data and ports, so Up can bring it back.
// Requests meanwhile fail with a refused connection. It does nothing when
// the server is already down.
func (s *Server) Down() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downLocked()
}

func (s *Server) downLocked() error {
	p := s.proc
	if p == nil {
		return nil
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	var killed bool
	select {
	case <-p.exited:
	case <-time.After(stopGrace):
		killed = true
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.exited
	}
	_ = syscall.Kill(-pgid, syscall.SIGKILL) // whatever the group left behind
	s.proc = nil
	s.removeSockets()
	if killed {
		return fmt.Errorf("s3server: weed ignored SIGTERM for %s and was killed", stopGrace)
	}
	return nil
}

// Stop stops the server for good and removes a temporary directory.
// Calling it again returns the first result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopped = true
		err := s.downLocked()
		s.mu.Unlock()
		if s.temp && s.root != "" {
			err = errors.Join(err, os.RemoveAll(s.root))
		}
		if err != nil {
			s.stopErr = fmt.Errorf("s3server: stop: %w", err)
		}
	})
	return s.stopErr
}

func (s *Server) dataDir() string { return filepath.Join(s.root, "data") }
func (s *Server) logDir() string  { return filepath.Join(s.root, "log") }
func (s *Server) logFile() string { return filepath.Join(s.root, "weed.log") }

// args is weed's command line: `weed mini` with every port explicit.
func (s *Server) args() []string {
	p := s.ports
	flag := func(name string, v any) string { return fmt.Sprintf("-%s=%v", name, v) }
	return []string{
		flag("logdir", s.logDir()),
		"mini",
		flag("dir", s.dataDir()),
		flag("ip", "127.0.0.1"),
		flag("ip.bind", "127.0.0.1"),
		flag("master.port", p.master),
		flag("master.port.grpc", p.masterGRPC),
		flag("master.telemetry", false),
		flag("master.volumeSizeLimitMB", 64),
		flag("volume.port", p.volume),
		flag("volume.port.grpc", p.volumeGRPC),
		flag("filer.port", p.filer),
		flag("filer.port.grpc", p.filerGRPC),
		flag("s3.port", p.s3),
		flag("s3.port.grpc", p.s3GRPC),
		flag("s3.port.iceberg", 0),
		flag("s3.port.lance", 0),
		flag("s3.config", filepath.Join(s.root, "s3.json")),
		flag("s3.autoCreateBucket", false),
		flag("admin.port", p.admin),
		flag("admin.port.grpc", p.adminGRPC),
		flag("admin.port.legacy", 0),
		flag("admin.ui", false),
		flag("webdav", false),
	}
}

// env is the caller's environment without the variables SeaweedFS reads as
// settings (WEED_*, S3_*, AWS_*), with HOME and TMPDIR in the server's
// directory so no configuration file of the user's is found.
func (s *Server) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "WEED_"), strings.HasPrefix(name, "S3_"), strings.HasPrefix(name, "AWS_"),
			name == "HOME", name == "TMPDIR":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "HOME="+s.root, "TMPDIR="+s.root)
}

// removeSockets removes the unix sockets weed mini makes in /tmp, named
// after our ports, in case it left them behind.
func (s *Server) removeSockets() {
	p := s.ports
	for _, name := range []string{
		fmt.Sprintf("seaweedfs-master-grpc-%d.sock", p.masterGRPC),
		fmt.Sprintf("seaweedfs-volume-grpc-%d.sock", p.volumeGRPC),
		fmt.Sprintf("seaweedfs-filer-grpc-%d.sock", p.filerGRPC),
		fmt.Sprintf("seaweedfs-s3-grpc-%d.sock", p.s3GRPC),
		fmt.Sprintf("seaweedfs-admin-grpc-%d.sock", p.adminGRPC),
		fmt.Sprintf("seaweedfs-filer-%d.sock", p.filer),
		fmt.Sprintf("seaweedfs-s3-%d.sock", p.s3),
	} {
		os.Remove(filepath.Join("/tmp", name))
	}
}

// identities is the s3.json SeaweedFS reads with -s3.config.
type identities struct {
	Identities []identity `json:"identities"`
}

type identity struct {
	Name        string       `json:"name"`
	Credentials []credential `json:"credentials"`
	Actions     []string     `json:"actions"`
}

type credential struct {
	AccessKey string `json:"accessKey"`
	SecretKey string `json:"secretKey"`
}

func writeIdentities(path string) error {
	b, err := json.MarshalIndent(identities{Identities: []identity{{
		Name:        "genesis",
		Credentials: []credential{{AccessKey: AccessKey, SecretKey: SecretKey}},
		Actions:     []string{"Admin", "Read", "Write", "List", "Tagging"},
	}}}, "", "  ")
	if err != nil {
		return fmt.Errorf("s3server: %w", err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("s3server: %w", err)
	}
	return nil
}

// pickPorts returns ten distinct ports that were free on 127.0.0.1 a
// moment ago (held open together, so no two are the same). They are taken
// below the kernel's ephemeral range (ip_local_port_range), from which
// every other test's "listen on :0" draws: weed binds its ports seconds
// after they are picked, and a port from the shared range could be handed
// to another test in between (seen: a test's Caddy found its HTTPS port
// answered by weed).
func pickPorts() (ports, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	low := ephemeralLow()
	var n [10]int
	for i := range n {
		var l net.Listener
		var err error
		for try := 0; try < 200; try++ {
			port := lowPortBase + rand.IntN(low-lowPortBase)
			if l, err = net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				break
			}
		}
		if l == nil {
			// The low range is crowded: fall back to the kernel's choice.
			if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
				return ports{}, err
			}
		}
		ls = append(ls, l)
		n[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports{n[0], n[1], n[2], n[3], n[4], n[5], n[6], n[7], n[8], n[9]}, nil
}

// lowPortBase is the lowest port pickPorts uses.
const lowPortBase = 20000

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// default 32768 when it cannot be read, or when it is too low to leave
// room below it).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > lowPortBase+1000 {
				return v
			}
		}
	}
	return 32768
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
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
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, offset, 1<<30))
	if err != nil {
		return ""
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(bytes.ToValidUTF8(b, []byte("?")))
}
