package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"filippo.io/age"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	fleetagent "genesis.dev/fleet/agent"
	"genesis.dev/fleet/internal/pgserver"
	"genesis.dev/fleet/reconciler/agentapi"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/dsse"
	"genesis.dev/fleet/tenants"
)

// fleet is the reconciler under load and what the load tool needs of it:
// its URL, its database (to record fake droplets and mint their tokens),
// and, in process, the state repository, the trusted signing key and the
// push trigger.
type fleet struct {
	url     string
	st      *store.Store
	tokens  *agentapi.Service // MintToken only (in process: the serving Service)
	account string
	inproc  bool
	repo    *stateRepo   // in process only
	trusted dsse.Trusted // in process only
	trigger func()       // in process: what the push webhook does
	http    *http.Client
	log     *slog.Logger
	closers []func()
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

func startFleet(ctx context.Context, c config, log, serverLog *slog.Logger) (_ *fleet, err error) {
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
	return f, f.start(ctx, c, serverLog)
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
	f.tokens = agentapi.New(agentapi.Config{Pool: st.Pool(), Logger: serverLog})
	f.log.Info("targeting a running reconciler", "url", f.url)
	return nil
}

// start runs Postgres, the state repository and the reconciler's agent
// side in this process.
func (f *fleet) start(ctx context.Context, c config, serverLog *slog.Logger) error {
	f.inproc = true
	began := time.Now()
	pg, err := pgserver.Start(ctx, pgserver.Options{})
	if err != nil {
		return err
	}
	f.closers = append(f.closers, func() {
		if err := pg.Stop(); err != nil {
			f.log.Error("stop postgres", "err", err)
		}
	})
	if err := pg.CreateDatabase(ctx, "genesis"); err != nil {
		return err
	}
	st, err := store.Open(ctx, pg.URL("genesis"), serverLog)
	if err != nil {
		return err
	}
	f.closers = append(f.closers, st.Close)
	f.st = st

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

	dir, err := os.MkdirTemp("", "genesis-load-")
	if err != nil {
		return err
	}
	f.closers = append(f.closers, func() { os.RemoveAll(dir) })
	f.repo, err = newStateRepo(ctx, dir, fleetID.Recipient(), c.agents, c.credentials)
	if err != nil {
		return err
	}
	f.account = stateAccount
	src, err := tenants.Open(tenants.Config{Repo: f.repo.dir, Logger: serverLog})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f.url = "http://" + ln.Addr().String()
	var snap atomic.Pointer[tenants.Snapshot]
	reg := prometheus.NewRegistry()
	svc := agentapi.New(agentapi.Config{
		Pool: st.Pool(), Logger: serverLog, Registerer: reg, Signer: signer, Identities: []age.Identity{fleetID}, PublicURL: f.url,
		Desired: func() (tenants.Snapshot, bool) {
			if s := snap.Load(); s != nil {
				return *s, true
			}
			return tenants.Snapshot{}, false
		},
	})
	f.tokens = svc
	watcher := tenants.NewWatcher(src, tenants.WatchConfig{Logger: serverLog})
	f.trigger = watcher.Trigger
	mux := http.NewServeMux()
	mux.Handle("/v1/", svc.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}

	first := make(chan error, 1)
	var once sync.Once
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error {
		return watcher.Run(gctx, func(ctx context.Context, s tenants.Snapshot, err error) {
			if err != nil {
				return
			}
			once.Do(func() { first <- st.SyncAccounts(ctx, s.Fleet) })
			snap.Store(&s)
			svc.Kick()
		})
	})
	g.Go(func() error { return svc.Run(gctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	f.closers = append(f.closers, func() {
		// Stopping the service answers parked long-polls; then the server
		// drains.
		cancel()
		shut, done := context.WithTimeout(context.Background(), 10*time.Second)
		defer done()
		if err := srv.Shutdown(shut); err != nil {
			srv.Close()
		}
		if err := g.Wait(); err != nil {
			f.log.Error("in-process reconciler stopped", "err", err)
		}
	})
	select {
	case err := <-first:
		if err != nil {
			return fmt.Errorf("record accounts: %w", err)
		}
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(5 * time.Minute):
		return errors.New("the state repository was not read within 5 minutes")
	}
	f.log.Info("in-process reconciler ready", "url", f.url, "tenants", c.agents, "took", time.Since(began).Round(time.Millisecond).String())
	return nil
}

// simAgent is one simulated droplet and its agent's state.
type simAgent struct {
	i                 int
	ws, droplet, name string
	ip                string
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
// (journaled, then finished with an id and an address) and enrolls an agent
// on each through POST /v1/enroll with a freshly minted one-time token.
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
			tok, err := f.tokens.MintToken(gctx, a.ws, a.name)
			if err != nil {
				return err
			}
			resp, err := cl.Enroll(gctx, schema.EnrollRequest{Token: tok, Workspace: a.ws, DropletID: a.droplet, DropletName: a.name,
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
	act := plan.Action{Kind: plan.Create, Workspace: a.ws, Account: f.account, Region: stateRegion, Size: stateSize, Droplet: a.name, Gen: 1}
	id, err := f.st.Begin(ctx, act, schema.StateRunning, "")
	if err != nil {
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
