package localfleet

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/service"
	"genesis.dev/fleet/schema"
)

// startTestFleet starts a local fleet on repo's state for a test that
// runs real droplets (genesis-demo droplet with the agent, heartbeat 1 s,
// fast boots and actions): opt fills in the rest (Names, TokensFile;
// caddy is the pinned Caddy binary the droplets run). It
// stops the fleet at the end (checking that no process it started is
// left, and printing the logs of a failed test) and returns the fleet and
// a connection to its Postgres.
func startTestFleet(t testing.TB, repo *testkit.StateRepo, accounts []schema.Account, work string, opt func(o *Options, caddy string)) (*Fleet, *pgx.Conn) {
	t.Helper()
	bin, caddy := buildBins(t)
	pidLog := filepath.Join(work, "pids.log")
	o := Options{StateRepo: repo.URL(), Accounts: accounts, Work: work,
		AgeIdentity: testkit.ExamplePath(t, "demo-keys/age.key"), WebhookSecret: "test-secret",
		BootDelay: 200 * time.Millisecond, ActionDelay: 100 * time.Millisecond, HookGrace: 2 * time.Second,
		BootCmd: fmt.Sprintf("exec %s droplet --caddy-bin %s --agent-bin %s --pid-log %s -- --heartbeat-interval 1s --poll-wait 20s --log-format json",
			filepath.Join(bin, "genesis-demo"), caddy, filepath.Join(bin, "genesis-agent"), pidLog),
		Reconciler: func(c *service.Config) { c.PollInterval = 300 * time.Millisecond },
	}
	if opt != nil {
		opt(&o, caddy)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	fl, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fl.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		alive, _, err := Leftovers(pidLog)
		if err != nil || len(alive) > 0 {
			t.Errorf("after Stop still running: %q (%v)", alive, err)
		}
		if t.Failed() {
			logs, _ := exec.Command("sh", "-c", "tail -n 40 "+work+"/*.log").CombinedOutput()
			t.Logf("logs:\n%s", logs)
		}
	})
	db, err := pgx.Connect(context.Background(), fl.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close(context.Background()) })
	return fl, db
}
