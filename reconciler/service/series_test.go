package service

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
	"genesis.dev/fleet/internal/pgserver/pgtest"
	"genesis.dev/fleet/internal/syncio"
	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/auth"
	"genesis.dev/fleet/tenants"
)

// seriesQueried are the reconciler's series the Grafana dashboard and the
// alert rules query (the agent's own, genesis_agent_*, come from agents).
func seriesQueried(t *testing.T) []string {
	t.Helper()
	root := testkit.ModuleRoot(t)
	var out []string
	re := regexp.MustCompile(`genesis_[a-z0-9_]+`)
	for _, f := range []string{"deploy/grafana/genesis-fleet.json", "deploy/prometheus/alerts.yml"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAll(b, -1) {
			name := string(bytes.TrimSuffix(bytes.TrimSuffix(bytes.TrimSuffix(m, []byte("_bucket")), []byte("_count")), []byte("_sum")))
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}

// notFresh are the queried names a fresh reconciler rightly lacks: the
// Postgres channel's name (in an alert's text, not a series) and the
// backup series, which exist only with backups configured (--backup-key and
// spec.backup storage; reconciler/backup starts its counters at 0).
var notFresh = map[string]bool{"genesis_reconciler": true, "genesis_backups_total": true, "genesis_recovery_point_stale_tenants": true}

// TestFreshSeries: every series the dashboard and the alert rules query
// exists on a fresh reconciler (its first pass done, nothing else
// happened), so panels read 0, not "No data", and an absence-based alert
// can tell "none" from "broken".
func TestFreshSeries(t *testing.T) {
	dir := t.TempDir()
	repo := testkit.NewStateRepo(t)
	repo.WriteFleet(testkit.Fleet())
	repo.Commit("fleet")
	repo.Push()
	sim := dosimtest.Start(t, dosim.Config{Accounts: []dosim.Account{{Name: "acct-a", Token: "tok-a", DropletLimit: 10}}})
	logs := &syncio.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	c := Defaults()
	c.StateRepo, c.Branch, c.CacheDir = repo.URL(), tenants.DefaultBranch, filepath.Join(dir, "cache")
	c.DatabaseURL, c.DOAPIURL, c.Listen = pgtest.New(t), sim.URL, "127.0.0.1:0"
	c.InsecureNoAuth, c.ReplicaID, c.ObservedMaxAge, c.Resync = true, "fresh", time.Minute, 100*time.Millisecond
	c.UnauthRate, c.UnauthBurst = auth.DefaultFailureRate, auth.DefaultFailureBurst
	c.Getenv = func(k string) string { return map[string]string{"TOKEN_A": "tok-a"}[k] }
	reg := prometheus.NewRegistry()
	svc, err := New(t.Context(), c, log, reg)
	if err != nil {
		t.Fatal(err)
	}
	runUntilCleanup(t, svc, logs)
	have := func() map[string]bool {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]bool{}
		for _, mf := range mfs {
			m[mf.GetName()] = true
		}
		return m
	}
	// The first pass that observed DigitalOcean and planned (an earlier
	// one may have ended before, without a desired state) records the
	// accounts' series.
	testkit.WaitFor(t, "the first complete pass", func() bool { return have()["genesis_account_status"] })
	var missing []string
	got := have()
	for _, name := range seriesQueried(t) {
		if !got[name] && !notFresh[name] {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		t.Errorf("series the dashboard or the alerts query that a fresh reconciler does not export: %v", missing)
	}
}
