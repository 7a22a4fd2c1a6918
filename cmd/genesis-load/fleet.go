package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"filippo.io/age"
	"golang.org/x/sync/errgroup"

	fleetagent "genesis.dev/fleet/agent"
	"genesis.dev/fleet/internal/certreload/selfsigned"
	"genesis.dev/fleet/internal/loadstate"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

// fleet is the reconciler under load and what the load tool needs of it:
// its URL, its database (to record fake droplets and mint their tokens),
// and, when the load tool started it, the state repository, the trusted
// signing key and the push webhook's secret.
type fleet struct {
	url     string
	st      *store.Store
	tokens  *agentapi.Service // keyless: MintToken only
	account string
	// started: the load tool started the reconciler (a subprocess or in
	// this process) and has its state repository and keys.
	started    bool
	serverOnly bool // the reconciler runs in its own process
	serverPID  int
	bareURL    string // bare304 in the reconciler's process ("" with --reconciler)
	repo       *stateRepo
	trusted    dsse.Trusted
	secret     []byte // the push webhook's
	http       *http.Client
	// tls is the certificate the scale run's replicas serve (nil: plain
	// HTTP).
	tls       *selfsigned.Pair
	log       *slog.Logger
	closersMu sync.Mutex // replicas start concurrently (scale)
	closers   []func()
}

// addCloser has close run fn (safe from several goroutines).
func (f *fleet) addCloser(fn func()) {
	f.closersMu.Lock()
	defer f.closersMu.Unlock()
	f.closers = append(f.closers, fn)
}

// close stops what startFleet started, last started first.
func (f *fleet) close() {
	for i := len(f.closers) - 1; i >= 0; i-- {
		f.closers[i]()
	}
	f.closers = nil
}

// dropletBase is added to an agent's index to make its (fake) droplet id,
// far above the ids the simulator or DigitalOcean hand out.
const dropletBase = 9_000_000_000

// tenantID names agent i's workspace.
func tenantID(i int) string { return fmt.Sprintf("load-%06d", i) }

func startFleet(ctx context.Context, c config, log, serverLog *slog.Logger, stderr io.Writer) (_ *fleet, err error) {
	tr := &http.Transport{MaxIdleConnsPerHost: c.connections + c.agents + 64, MaxIdleConns: c.connections + c.agents + 64, IdleConnTimeout: 2 * time.Minute}
	f := &fleet{http: &http.Client{Transport: tr}, log: log}
	f.closers = append(f.closers, tr.CloseIdleConnections)
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	if c.reconciler != "" {
		return f, f.attach(ctx, c, serverLog)
	}
	return f, f.start(ctx, c, serverLog, stderr)
}

// attach reaches a running reconciler and its database.
func (f *fleet) attach(ctx context.Context, c config, serverLog *slog.Logger) error {
	st, err := store.Open(ctx, c.databaseURL, serverLog)
	if err != nil {
		return err
	}
	f.closers = append(f.closers, st.Close)
	f.st, f.url = st, c.reconciler
	if err := st.Pool().QueryRow(ctx, `SELECT name FROM do_accounts ORDER BY name LIMIT 1`).Scan(&f.account); err != nil {
		return fmt.Errorf("find an account in the reconciler's database: %w", err)
	}
	// Only MintToken is used: a Service without keys serves nothing.
	f.tokens = agentapi.New(agentapi.Config{Store: st, Logger: serverLog})
	f.log.Info("targeting a running reconciler", "url", f.url)
	return nil
}

// start makes the state repository and keys and starts the reconciler's
// agent side with them, as a subprocess (default) or in this process.
func (f *fleet) start(ctx context.Context, c config, serverLog *slog.Logger, stderr io.Writer) error {
	f.started = true
	began := time.Now()
	fleetID, err := age.GenerateX25519Identity()
	if err != nil {
		return err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	signer := dsse.NewSigner(priv)
	f.trusted = dsse.Trusted{}
	f.trusted.Add(signer.Public())
	var secret [32]byte
	rand.Read(secret[:])
	f.secret = []byte(hex.EncodeToString(secret[:]))

	dir, err := os.MkdirTemp("", "genesis-load-")
	if err != nil {
		return err
	}
	f.closers = append(f.closers, func() { os.RemoveAll(dir) })
	f.repo, err = newStateRepo(ctx, dir, loadstate.Fleet(max(c.agents, 1), 0, fleetID.Recipient().String()), fleetID.Recipient(), c.agents, c.credentials, 0)
	if err != nil {
		return err
	}
	f.account = loadstate.Account
	cfg, err := writeKeys(dir, f.repo.dir, fleetID, priv)
	if err != nil {
		return err
	}
	cfg.WebhookSecret = string(f.secret)
	var info serverInfo
	if c.server == "inproc" {
		info, err = f.startInproc(ctx, cfg, serverLog)
	} else {
		info, err = f.startSubprocess(ctx, c, dir, cfg, stderr)
	}
	if err != nil {
		return err
	}
	f.url, f.serverPID, f.bareURL = info.URL, info.PID, info.BareURL
	f.serverOnly = info.PID != os.Getpid()
	// The load tool's own connection to the reconciler's database: fake
	// droplets are journaled through it and their tokens minted.
	st, err := store.Open(ctx, info.DatabaseURL, serverLog)
	if err != nil {
		return err
	}
	f.closers = append(f.closers, st.Close)
	f.st = st
	f.tokens = agentapi.New(agentapi.Config{Store: st, Logger: serverLog})
	f.log.Info("reconciler ready", "url", f.url, "server", c.server, "pid", info.PID, "tenants", c.agents,
		"took", time.Since(began).Round(time.Millisecond).String())
	return nil
}

// writeKeys writes the reconciler's signing key and the fleet's age
// identity as files under dir (0600, removed with it), as
// genesis-reconciler takes them, and returns the server's configuration
// for repo (without the webhook's secret).
func writeKeys(dir, repo string, id *age.X25519Identity, key ed25519.PrivateKey) (serverConfig, error) {
	cfg := serverConfig{StateRepo: repo, SigningKey: filepath.Join(dir, "signing.pem"), AgeIdentity: filepath.Join(dir, "fleet.agekey")}
	if err := os.WriteFile(cfg.SigningKey, dsse.MarshalPrivateKeyPEM(key), 0o600); err != nil {
		return serverConfig{}, err
	}
	if err := os.WriteFile(cfg.AgeIdentity, []byte(id.String()+"\n"), 0o600); err != nil {
		return serverConfig{}, err
	}
	return cfg, nil
}

// startInproc runs serveFleet on a goroutine of this process.
func (f *fleet) startInproc(ctx context.Context, cfg serverConfig, serverLog *slog.Logger) (serverInfo, error) {
	ready := make(chan serverInfo, 1)
	done := make(chan error, 1)
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() { done <- serveFleet(runCtx, cfg, serverLog, func(i serverInfo) { ready <- i }) }()
	f.closers = append(f.closers, func() {
		cancel()
		if err := <-done; err != nil {
			f.log.Error("in-process reconciler stopped", "err", err)
		}
	})
	select {
	case info := <-ready:
		return info, nil
	case err := <-done:
		done <- err
		return serverInfo{}, fmt.Errorf("in-process reconciler: %w", err)
	case <-ctx.Done():
		return serverInfo{}, ctx.Err()
	}
}

// serveEnv marks a `genesis-load serve` child (the test binary's TestMain
// reads it to act as the command).
const serveEnv = "GENESIS_LOAD_SERVE"

// startSubprocess runs `genesis-load serve` with cfg's key files and the
// webhook's secret in a file under dir (0600, removed at the end) and reads
// the line it prints when ready. Closing its stdin stops it.
func (f *fleet) startSubprocess(ctx context.Context, c config, dir string, cfg serverConfig, stderr io.Writer, extra ...string) (serverInfo, error) {
	secretFile := filepath.Join(dir, "webhook.secret")
	// Replicas starting together share the file: it is written once.
	if old, err := os.ReadFile(secretFile); err != nil || string(old) != cfg.WebhookSecret {
		if err := os.WriteFile(secretFile, []byte(cfg.WebhookSecret), 0o600); err != nil {
			return serverInfo{}, err
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return serverInfo{}, err
	}
	cmd := exec.Command(exe, "serve", "--state-repo", cfg.StateRepo, "--signing-key", cfg.SigningKey,
		"--age-identity", cfg.AgeIdentity, "--webhook-secret-file", secretFile,
		"--log-format", c.logFormat, "--log-level", c.serverLogLevel)
	cmd.Args = append(cmd.Args, extra...)
	cmd.Env = append(os.Environ(), serveEnv+"=1")
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return serverInfo{}, err
	}
	lines, err := f.startChild(cmd, "reconciler subprocess", func() { stdin.Close() })
	if err != nil {
		return serverInfo{}, err
	}
	select {
	case line := <-lines:
		var info serverInfo
		if err := json.Unmarshal([]byte(line), &info); err != nil || info.URL == "" || info.DatabaseURL == "" {
			return serverInfo{}, errors.New("the reconciler subprocess ended before it was ready (its log is above)")
		}
		if err := loopbackURL("serve url", info.URL); err != nil {
			return serverInfo{}, err
		}
		return info, nil
	case <-ctx.Done():
		return serverInfo{}, ctx.Err()
	}
}

// startChild starts cmd, a server the run needs, and returns the first
// line it prints on stdout (its readiness; the rest is discarded). As the
// run ends, stop asks it to stop (closing its stdin, a signal) and it gets
// 30 s before it is killed; name says what it is in the log.
func (f *fleet) startChild(cmd *exec.Cmd, name string, stop func()) (<-chan string, error) {
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	exited := make(chan error, 1)
	lines := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		line, _ := br.ReadString('\n')
		lines <- line
		io.Copy(io.Discard, br)
		exited <- cmd.Wait()
	}()
	f.addCloser(func() {
		stop()
		select {
		case err := <-exited:
			if err != nil {
				f.log.Error(name+" ended", "err", err)
			}
		case <-time.After(30 * time.Second):
			f.log.Error(name+" did not stop; killing it", "pid", cmd.Process.Pid)
			cmd.Process.Kill()
			<-exited
		}
	})
	return lines, nil
}

// push tells the reconciler the state repository changed, as the git
// host's push webhook does (signed with the shared secret).
func (f *fleet) push(ctx context.Context) error {
	body := []byte(`{"ref":"refs/heads/main"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(f.url, "/")+"/hooks/git", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set(tenants.SignatureHeader, tenants.Sign(f.secret, body))
	resp, err := f.http.Do(req)
	if err != nil {
		return fmt.Errorf("push webhook: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("push webhook: status %d", resp.StatusCode)
	}
	return nil
}

// serverRSS is the reconciler's resident set and its peak.
func (f *fleet) serverRSS() (rss, peak int64) { return rssOf(f.serverPID) }

// simAgent is one simulated droplet and its agent's state.
type simAgent struct {
	i                 int
	ws, droplet, name string
	ip                string
	account           string // its DigitalOcean account (scale)
	token             string // the one-time provisioning token, bound at the create's record
	identity          *age.X25519Identity
	cred              string
	seq               int64
	applied           int64
	digest, etag      string
}

func (f *fleet) client() *fleetagent.Client {
	return &fleetagent.Client{BaseURL: f.url, HTTP: f.http}
}

// makeAgents records n fake droplets as the reconciler's create does
// (journaled, a one-time token minted, then finished with an id and an
// address, which binds the token) and enrolls an agent on each through
// POST /v1/enroll with its token.
func (f *fleet) makeAgents(ctx context.Context, n int) ([]*simAgent, error) {
	began := time.Now()
	as := make([]*simAgent, n)
	for i := range as {
		as[i] = &simAgent{i: i, ws: tenantID(i), droplet: fmt.Sprint(dropletBase + i), name: plan.DropletName(tenantID(i), 1),
			ip: fmt.Sprintf("100.%d.%d.%d", 64+i>>16, (i>>8)&255, i&255)}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, a := range as {
		g.Go(func() error { return f.provision(gctx, a) })
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	provisioned := time.Since(began)
	cl := f.client()
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(16)
	for _, a := range as {
		g.Go(func() error {
			id, err := age.GenerateX25519Identity()
			if err != nil {
				return err
			}
			pub, _, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return err
			}
			resp, err := cl.Enroll(gctx, schema.EnrollRequest{Token: a.token, Workspace: a.ws, DropletID: a.droplet, DropletName: a.name,
				AgeRecipient: id.Recipient().String(), SigningKey: string(dsse.MarshalPublicKeyPEM(pub)), AgentVersion: "genesis-load"})
			if err != nil {
				return fmt.Errorf("enroll %s: %w", a.ws, err)
			}
			a.identity, a.cred = id, resp.Credential
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	f.log.Info("agents enrolled", "agents", n, "provision", provisioned.Round(time.Millisecond).String(),
		"enroll", (time.Since(began) - provisioned).Round(time.Millisecond).String())
	return as, nil
}

// provision journals a's droplet as created, as the reconciler's executor
// does once DigitalOcean reports the droplet active.
func (f *fleet) provision(ctx context.Context, a *simAgent) error {
	act := plan.Action{Kind: plan.Create, Workspace: a.ws, Account: f.account, Region: loadstate.Region, Size: loadstate.Size, Droplet: a.name, Gen: 1}
	id, err := f.st.Begin(ctx, act, schema.StateRunning, "")
	if err != nil {
		return err
	}
	// Minted before the create is recorded, as UserData mints it: the
	// record binds it to the droplet id.
	if a.token, err = f.tokens.MintToken(ctx, a.ws, a.name); err != nil {
		return err
	}
	out := store.Outcome{Account: f.account, DropletID: dropletBase + a.i, DropletName: a.name, IP: a.ip, Desired: schema.StateRunning}
	return f.st.Finish(ctx, id, act, out, nil)
}

// heartbeat is agent a's next heartbeat, reporting version applied.
func (a *simAgent) heartbeat(now time.Time) schema.Heartbeat {
	a.seq++
	return schema.Heartbeat{Workspace: a.ws, Droplet: a.droplet, Seq: a.seq, SentAt: now, AppliedVersion: a.applied, AppliedDigest: a.digest,
		Components: map[string]schema.ComponentHealth{"n8n": {OK: true}, "caddy": {OK: true}, "postgres": {OK: true}},
		MemoryUsed: 512 << 20, MemoryTotal: 1 << 30, DiskUsed: 8 << 30, DiskTotal: 32 << 30, UptimeSeconds: 3600,
		AgentVersion: "genesis-load", N8NVersion: "1.123.81"}
}

// accept verifies envelope as the agent does (signature, payload, every
// credential opened with a's own identity) and records it as applied.
func (a *simAgent) accept(envelope []byte, etag string, trusted dsse.Trusted) error {
	v, err := fleetagent.Verify(envelope, fleetagent.Expectation{Workspace: a.ws, Droplet: a.droplet, Trusted: trusted, Identity: a.identity,
		AppliedVersion: a.applied, AppliedDigest: a.digest, Now: time.Now()})
	if err != nil {
		return err
	}
	fleetagent.Forget(v.Credentials)
	a.applied, a.digest, a.etag = v.Manifest.Version, v.Digest, etag
	return nil
}
