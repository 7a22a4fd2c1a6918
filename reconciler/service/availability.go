package service

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler"
	"genesis.dev/fleet/reconciler/availability"
	"genesis.dev/fleet/reconciler/notify"
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

// BurnCheckEvery is how often the leader looks for tiers and tenants
// burning their availability budget fast (the SLO-burn notice).
const BurnCheckEvery = 5 * time.Minute

// The SRE workbook's fast-burn pair (2% of a 30-day budget in an hour):
// a burn of at least fastBurn over the last hour and the last 5 minutes,
// each window with enough probes to mean something (minProbes*).
const (
	fastBurn      = 14.4
	minProbes1h   = 30
	minProbes5m   = 3
	burnNoticeMax = 5 // tenants named in the fleet's notice
)

// runBurnNotices checks the fast burn every BurnCheckEvery while this
// replica leads and queues burnNotices through notice, until ctx ends. It
// reads what every replica's prober wrote (Postgres), so one replica's
// check covers the fleet; a failed read is logged and tried at the next.
func runBurnNotices(ctx context.Context, st *store.Store, leading func() bool, notice func(context.Context, notify.Notification) error, log *slog.Logger) error {
	t := time.NewTicker(BurnCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if !leading() {
			continue
		}
		now := time.Now()
		hour, err := st.AvailabilityBurning(ctx, now, time.Hour, availability.Objective, fastBurn, minProbes1h)
		if err != nil {
			log.Warn("availability burn check failed", "component", "availability", "err", err)
			continue
		}
		recent, err := st.AvailabilityBurning(ctx, now, 5*time.Minute, availability.Objective, fastBurn, minProbes5m)
		if err != nil {
			log.Warn("availability burn check failed", "component", "availability", "err", err)
			continue
		}
		for _, n := range burnNotices(hour, recent) {
			if err := notice(ctx, n); err != nil && ctx.Err() == nil {
				log.Error("queue notice failed", "component", "availability", "kind", n.Kind, "err", err)
			}
		}
	}
}

// burnNotices are the SLO-burn notices for what burns fast over both the
// hour and the last 5 minutes (the workbook's pair: a burn that already
// stopped pages nobody): one per tier, and one for the fleet naming the
// fastest-burning tenants (at most burnNoticeMax of them, with the count).
func burnNotices(hour, recent []store.Burning) []notify.Notification {
	key := func(b store.Burning) string { return b.Tier + "/" + b.Workspace }
	now := map[string]store.Burning{}
	for _, b := range recent {
		now[key(b)] = b
	}
	pct := func(c store.Counts) string {
		r, _ := c.Ratio()
		return fmt.Sprintf("%.2f%%", 100*r)
	}
	var out []notify.Notification
	var tenants []string
	count := 0
	for _, b := range hour {
		r, ok := now[key(b)]
		if !ok {
			continue
		}
		if b.Workspace == "" {
			out = append(out, notify.Notification{Kind: notify.SLOBurn, Tier: b.Tier,
				Summary: fmt.Sprintf("tier %s is burning its %.1f%% availability budget %.0fx too fast", b.Tier, 100*availability.Objective, b.Burn),
				Detail: fmt.Sprintf("available %s of %d probes over the last hour (burn %.1f), %s over the last 5 minutes (burn %.1f); GET /v1/availability names the worst tenants",
					pct(b.Counts), b.Counts.Probes, b.Burn, pct(r.Counts), r.Burn)})
			continue
		}
		count++
		if len(tenants) < burnNoticeMax {
			tenants = append(tenants, fmt.Sprintf("%s (%s, %s over the hour, burn %.0f)", b.Workspace, b.Tier, pct(b.Counts), b.Burn))
		}
	}
	if count > 0 {
		out = append(out, notify.Notification{Kind: notify.SLOBurn,
			Summary: fmt.Sprintf("%d tenants are burning their %.1f%% availability budget fast", count, 100*availability.Objective),
			Detail:  "fastest: " + strings.Join(tenants, "; ")})
	}
	return out
}
