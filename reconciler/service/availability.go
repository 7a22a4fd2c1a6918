package service

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler"
	"genesis.dev/fleet/reconciler/availability"
	"genesis.dev/fleet/reconciler/store"
)

// newProber wires the availability prober (reconciler/availability) to the
// reconciler's snapshot (declared tenants, tiers, spec.dns) and the store
// (lifecycle states, leases, probes). It runs on every replica, leading or
// not; without spec.dns its rounds do nothing (availability.ErrOff). Nil
// with c.Off.
func newProber(c ProbeConfig, replica string, rec *reconciler.Reconciler, st *store.Store, log *slog.Logger, reg prometheus.Registerer) (*availability.Prober, error) {
	if c.Off {
		log.Info("availability prober off (--probe-interval 0)", "component", "availability")
		return nil, nil
	}
	var roots *x509.CertPool
	if c.CA != "" {
		pem, err := os.ReadFile(c.CA)
		if err != nil {
			return nil, fmt.Errorf("read --probe-ca: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--probe-ca %s: no PEM certificate in it", c.CA)
		}
	}
	if replica == "" {
		host, _ := os.Hostname()
		replica = fmt.Sprintf("%s/%d", host, os.Getpid())
	}
	targets := func(ctx context.Context) ([]availability.Target, error) {
		snap, ok := rec.Snapshot()
		if !ok {
			return nil, availability.ErrOff
		}
		addrs, err := st.Addresses(ctx)
		if err != nil {
			return nil, err
		}
		states := make(map[string]string, len(addrs))
		for ws, a := range addrs {
			states[ws] = string(a.Lifecycle)
		}
		return availability.Select(snap, states)
	}
	return availability.New(availability.Config{Store: st, Replica: replica, Targets: targets,
		Interval: c.Interval, Timeout: c.Timeout, Concurrency: c.Concurrency, RootCAs: roots, DialContext: c.DialContext,
		Logger: log, Registerer: reg}), nil
}

// tenantAvailability reads a tenant's availability for the tenant API.
func tenantAvailability(st *store.Store) func(context.Context, string) (*api.TenantAvailability, error) {
	return func(ctx context.Context, ws string) (*api.TenantAvailability, error) {
		return availability.TenantReport(ctx, st, ws, time.Now())
	}
}

// availabilityReport answers GET /v1/availability.
func availabilityReport(st *store.Store) func(context.Context, int) (api.Availability, error) {
	return func(ctx context.Context, worst int) (api.Availability, error) {
		return availability.Report(ctx, st, time.Now(), worst)
	}
}
