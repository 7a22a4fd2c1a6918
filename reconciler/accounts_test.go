package reconciler

import (
	"slices"
	"strings"
	"testing"

	"github.com/digitalocean/godo"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/schema"
)

// TestAccountAddedWithoutRestart: an account added to genesis.yaml is used
// by the running reconciler (before, the planner picked it and the create
// failed as "unknown account" until a restart); one whose token is missing
// is reported and leaves the pool as it was; the unchanged accounts keep
// working throughout.
func TestAccountAddedWithoutRestart(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.Commit("one tenant")
	h.converge(ctx)
	if err := h.sim.Sim.AddAccount(dosim.Account{Name: "acct-c", Token: "tok-c", DropletLimit: 5}); err != nil {
		t.Fatal(err)
	}
	f := testFleet()
	f.Spec.Accounts = append(f.Spec.Accounts, schema.Account{Name: "acct-c", Regions: []string{"sfo3"}, MaxDroplets: 5, TokenEnv: "TOKEN_C"})
	h.state.WriteFleet(f)
	h.state.WriteTenant(tenant("ws-sf", "running", "sfo3"))
	h.state.Commit("acct-c serves sfo3")
	// Its token is not there yet: nothing is created in it, and the
	// other accounts' work goes on.
	h.converge(ctx)
	if d := h.droplets(); d["genesis-ws-sf-1"] != "" || d["genesis-ws-a-1"] == "" {
		t.Fatalf("without acct-c's token: droplets %v", d)
	}
	h.tokens["acct-c"] = "tok-c"
	if err := h.rec.Retry(ctx, "ws-sf", "test", "acct-c's token is set"); err != nil {
		t.Fatal(err)
	}
	h.converge(ctx)
	c := h.sim.Client("tok-c")
	ds, _, err := c.Droplets.List(ctx, &godo.ListOptions{PerPage: 200})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 || ds[0].Name != "genesis-ws-sf-1" {
		t.Errorf("acct-c's droplets %v, want genesis-ws-sf-1", ds)
	}
	if got := h.rec.cloud.Accounts(); !slices.Equal(got, []string{"acct-a", "acct-b", "acct-c"}) {
		t.Errorf("the pool's accounts %v", got)
	}
}

// TestDisabledAccountNotObserved: with --skip-disabled-accounts a disabled
// account is not listed, and its tenants' droplets are neither recreated
// elsewhere nor read as gone; without the flag it is observed as before
// and its droplets kept.
func TestDisabledAccountNotObserved(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	f := testFleet()
	f.Spec.Accounts[1].Regions = []string{"fra1"} // ws-a can only live in acct-a
	h.state.WriteFleet(f)
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.Commit("ws-a in acct-a")
	h.converge(ctx)
	if d := h.droplets(); d["genesis-ws-a-1"] != "acct-a" {
		t.Fatalf("droplets %v", d)
	}
	m := h.rec.cfg.Metrics
	if got := testutil.ToFloat64(m.headroom.WithLabelValues("acct-a")); got != float64(f.Spec.Accounts[0].MaxDroplets-1) {
		t.Errorf("acct-a headroom %v, want %d", got, f.Spec.Accounts[0].MaxDroplets-1)
	}
	f.Spec.Accounts[0].Status = schema.AccountDisabled
	h.state.WriteFleet(f)
	h.state.Commit("acct-a disabled")
	for _, skip := range []bool{false, true} {
		h.rec.cfg.SkipDisabledAccounts = skip
		h.rec.passAll()
		h.converge(ctx)
		p := h.rec.LastPlan()
		if d := h.droplets(); len(d) != 1 || d["genesis-ws-a-1"] != "acct-a" {
			t.Errorf("skip=%v: droplets %v, want ws-a's kept and no other", skip, d)
		}
		deferred := strings.Join(p.Deferred, "; ")
		if skip != strings.Contains(deferred, "acct-a: disabled in genesis.yaml and not observed") {
			t.Errorf("skip=%v: deferred %q", skip, deferred)
		}
		if len(p.Orphans) != 0 || len(p.Withheld) != 0 {
			t.Errorf("skip=%v: orphans %v withheld %v", skip, p.Orphans, p.Withheld)
		}
		if testutil.ToFloat64(m.accountStatus.WithLabelValues("acct-a", "disabled")) != 1 {
			t.Errorf("skip=%v: genesis_account_status{acct-a,disabled} is not 1", skip)
		}
	}
}

// TestStormMovesCreates: a 5xx storm on an account moves creates to the
// other account serving the region with nothing made twice — through the
// planner when the storm also breaks the account's listing (an incomplete
// account takes no new droplet), and through the executor's failover when
// only its writes fail (a read-only token: 401 on the POST), with the
// decision audited.
func TestStormMovesCreates(t *testing.T) {
	for _, c := range []struct {
		name    string
		fault   dosim.Fault
		audited int
	}{
		{"storm", dosim.Fault{Kind: dosim.FaultError, Account: "acct-a", Status: 503, Count: 100000}, 0},
		// The planner spreads the three over both accounts: those it
		// sent to acct-a fail over.
		{"read-only token", dosim.Fault{Kind: dosim.FaultError, Account: "acct-a", Route: "POST /v2/droplets", Status: 401, Count: 100000}, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, dosim.Limits{})
			ctx := t.Context()
			if _, err := h.sim.Sim.InjectFault(c.fault); err != nil {
				t.Fatal(err)
			}
			for _, id := range []string{"ws-1", "ws-2", "ws-3"} {
				h.state.WriteTenant(tenant(id, "running", "nyc3"))
			}
			h.state.Commit("three tenants in nyc3, acct-a failing")
			h.converge(ctx)
			h.sim.Sim.ClearFaults()
			h.rec.passAll()
			h.converge(ctx)
			d := h.droplets()
			for _, id := range []string{"ws-1", "ws-2", "ws-3"} {
				if d["genesis-"+id+"-1"] != "acct-b" {
					t.Errorf("%s: %q, want its droplet in acct-b", id, d["genesis-"+id+"-1"])
				}
			}
			if len(d) != 3 {
				t.Errorf("droplets %v, want exactly three (no duplicates)", d)
			}
			var n int
			if err := h.store.Pool().QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE action = 'create' AND detail ? 'failed_over'`).Scan(&n); err != nil || n != c.audited {
				t.Errorf("audited failovers: %d %v, want %d", n, err, c.audited)
			}
		})
	}
}
