package service

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"genesis.dev/fleet/reconciler"
	"genesis.dev/fleet/reconciler/activator"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// activatorServer is a replica's activator (reconciler/activator) on its
// own listener: the held requests its Caddy front proxies, and that
// Caddy's on-demand TLS /ask (asked on the listener's IP address, which no
// tenant's name is). Every replica may run one (day-2 rule 6): the wake
// it asks for goes through Reconciler.Wake, which any replica takes.
type activatorServer struct {
	h   *activator.Handler
	srv *http.Server
	ln  net.Listener
	log *slog.Logger
}

// newActivator wires the activator to the reconciler's snapshot (the
// tenants' names: stable names and tracking domains) and the store (their
// status, the wake, their activity), and listens on c.Listen.
func newActivator(c ActivatorConfig, rec *reconciler.Reconciler, st *store.Store, log *slog.Logger, reg prometheus.Registerer) (*activatorServer, error) {
	var roots *x509.CertPool
	if c.DropletCA != "" {
		pem, err := os.ReadFile(c.DropletCA)
		if err != nil {
			return nil, fmt.Errorf("read --activator-droplet-ca: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--activator-droplet-ca %s: no PEM certificate in it", c.DropletCA)
		}
	}
	names := &hostIndex{snapshot: rec.Snapshot}
	h, err := activator.New(activator.Config{
		Lookup: names.lookup,
		Status: func(ctx context.Context, ws string) (activator.Status, error) {
			a, err := st.Address(ctx, ws)
			return activator.Status{Lifecycle: a.Lifecycle, IP: a.IP}, err
		},
		Statuses: func(ctx context.Context) (map[string]activator.Status, error) {
			all, err := st.Addresses(ctx)
			out := make(map[string]activator.Status, len(all))
			for ws, a := range all {
				out[ws] = activator.Status{Lifecycle: a.Lifecycle, IP: a.IP}
			}
			return out, err
		},
		Wake:  func(ctx context.Context, ws string) error { return wakeForActivator(ctx, rec, ws) },
		Touch: st.RecordActivity,
		Hold:  c.Hold, MaxHeld: c.MaxHeld, MaxHeldPerTenant: c.MaxHeldPerTenant, MaxBody: c.MaxBody,
		DropletPort: c.DropletPort, RootCAs: roots, PixelPaths: c.PixelPaths,
		Logger: log, Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("activator listen: %w", err)
	}
	ask := h.Ask()
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.Host); err == nil && net.ParseIP(host) != nil && r.URL.Path == "/ask" {
			ask.ServeHTTP(w, r) // Caddy's permission request, to the listener's IP
			return
		}
		h.ServeHTTP(w, r)
	})
	hold := c.Hold
	if hold <= 0 {
		hold = activator.DefaultHold
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		// A held request waits up to Hold, then its droplet answers.
		WriteTimeout: hold + 2*time.Minute,
		ErrorLog:     slog.NewLogLogger(log.With("component", "activator").Handler(), slog.LevelWarn)}
	log.Info("activator listening", "component", "activator", "addr", ln.Addr().String())
	return &activatorServer{h: h, srv: srv, ln: ln, log: log}, nil
}

// run serves until ctx ends (or serving fails), then ends the wake
// episodes (held requests get 503) and drains the server.
func (a *activatorServer) run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.h.Run(ctx) })
	g.Go(func() error {
		if err := a.srv.Serve(a.ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("activator: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		a.h.Close()
		shut, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return a.srv.Shutdown(shut)
	})
	return g.Wait()
}

// close releases the listener when run did not serve it.
func (a *activatorServer) close() { a.ln.Close() }

// ActivatorAddr is the activator's listen address ("" without one).
func (s *Service) ActivatorAddr() string {
	if s.activator == nil {
		return ""
	}
	return s.activator.ln.Addr().String()
}

// wakeForActivator asks for ws's wake as the activator: an "already
// waking or running" conflict is fine (the activator waits for it), a
// tenant git declares hibernated or the fleet does not know is
// activator.ErrWakeRefused.
func wakeForActivator(ctx context.Context, rec *reconciler.Reconciler, ws string) error {
	_, err := rec.Wake(ctx, ws, "activator")
	switch {
	case err == nil:
		return nil
	case errors.Is(err, reconciler.ErrUnknownTenant):
		return fmt.Errorf("%w: %v", activator.ErrWakeRefused, err)
	case errors.Is(err, reconciler.ErrWakeConflict):
		snap, _ := rec.Snapshot()
		if ts, ok := snap.Tenants[ws]; ok && ts.Tenant != nil && ts.Tenant.Spec.State == schema.StateRunning {
			return nil // not hibernated: waking, booting or running already
		}
		return fmt.Errorf("%w: %v", activator.ErrWakeRefused, err)
	}
	return err
}

// hostIndex maps the tenants' names (stable names and tracking domains)
// to their workspace, rebuilt when the reconciler's snapshot changes.
type hostIndex struct {
	snapshot func() (tenants.Snapshot, bool)

	mu    sync.Mutex
	key   string
	hosts map[string]activator.Tenant
}

func (x *hostIndex) lookup(host string) (activator.Tenant, bool) {
	snap, ok := x.snapshot()
	if !ok {
		return activator.Tenant{}, false
	}
	key := snap.Commit + "|" + snap.Time.Format(time.RFC3339Nano)
	x.mu.Lock()
	if x.hosts == nil || x.key != key {
		x.key, x.hosts = key, indexHosts(snap)
	}
	hosts := x.hosts
	x.mu.Unlock()
	t, ok := hosts[host]
	return t, ok
}

// indexHosts lists every declared (not absent) tenant's names.
func indexHosts(snap tenants.Snapshot) map[string]activator.Tenant {
	out := make(map[string]activator.Tenant)
	for id, ts := range snap.Tenants {
		if ts.Tenant == nil || ts.Tenant.Spec.State == schema.StateAbsent {
			continue
		}
		t := activator.Tenant{Workspace: id, WakeAllowed: ts.Tenant.Spec.State == schema.StateRunning}
		if name := snap.Fleet.StableName(id); name != "" {
			out[strings.ToLower(name)] = t
		}
		for _, d := range ts.Tenant.Spec.Domains {
			if name, ok := activator.ParseHost(d); ok {
				out[name] = t
			}
		}
	}
	return out
}
