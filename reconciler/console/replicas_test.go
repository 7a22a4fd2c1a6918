package console

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/html"

	"genesis.dev/fleet/internal/testkit"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/tenants"
)

// replica is another console on r's database, API and key (another
// replica of the same fleet), configured by tweak and served by its own
// httptest server; a browser logged in on r is logged in on it too.
func (r *rig) replica(t *testing.T, tweak func(*Config)) *rig {
	t.Helper()
	cfg := Config{Store: r.st, API: r.apiH, Auth: r.authn, Key: DeriveKey([]byte("test key material")), Desired: r.rec.Snapshot,
		Logger: quietLog(), Registerer: prometheus.NewRegistry(), Heartbeat: 200 * time.Millisecond}
	if tweak != nil {
		tweak(&cfg)
	}
	con, srv := serveConsole(t, cfg, r.apiH)
	return &rig{st: r.st, rec: r.rec, con: con, srv: srv, apiH: r.apiH, authn: r.authn}
}

// rateGauges is a registry with the leader's per-account gauges.
func rateGauges(acct string, rate, headroom float64) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	r := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: rateGauge, Help: "test"}, []string{"account"})
	h := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: headroomGauge, Help: "test"}, []string{"account"})
	reg.MustRegister(r, h)
	r.WithLabelValues(acct).Set(rate)
	h.WithLabelValues(acct).Set(headroom)
	return reg
}

// accountCell is the accounts page's rate budget cell of acct.
func accountCell(t *testing.T, b *browser, acct string) string {
	t.Helper()
	code, page, _ := b.get("/console/accounts")
	if code != http.StatusOK {
		t.Fatalf("accounts = %d", code)
	}
	rows := find(doc(t, page), func(n *html.Node) bool { v, _ := attr(n, "data-account"); return n.Data == "tr" && v == acct })
	if len(rows) != 1 {
		t.Fatalf("accounts page: %d rows of %s", len(rows), acct)
	}
	cells := find(rows[0], func(n *html.Node) bool { c, _ := attr(n, "class"); return n.Data == "td" && c == "num rate" })
	if len(cells) != 1 {
		t.Fatalf("accounts page: no rate cell for %s", acct)
	}
	return text(cells[0])
}

// TestAccountFiguresOnEveryReplica: the leader publishes its rate budget
// and headroom gauges; a follower (whose own gauges are a former lease's,
// and which publishes nothing) shows the leader's figures with the leader's
// name and their age, marked stale once they are old; the leader shows its
// own.
func TestAccountFiguresOnEveryReplica(t *testing.T) {
	acct := testkit.Fleet().Spec.Accounts[0].Name
	var leading atomic.Bool
	leading.Store(true)
	leader := newRigWith(t, rigOptions{config: func(c *Config) {
		c.Gatherer = rateGauges(acct, 4321, 17)
		c.Leading = leading.Load
		c.Replica = "replica-a"
		c.FiguresEvery = 50 * time.Millisecond
	}})
	var skew atomic.Int64
	follower := leader.replica(t, func(c *Config) {
		c.Gatherer = rateGauges(acct, 9999, 99) // what it saw when it last led
		c.Replica = "replica-b"
		c.FiguresEvery = 50 * time.Millisecond
		c.Now = func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	})
	lb := leader.browser(t)
	lb.login(dashToken)
	fb := follower.browser(t)
	fb.login(dashToken)

	if got := accountCell(t, lb, acct); !strings.Contains(got, "4321") || !strings.Contains(got, "this replica (leader)") {
		t.Errorf("the leader's rate cell %q, want its own 4321", got)
	}
	var got string
	testkit.Poll{Every: 20 * time.Millisecond, Within: 10 * time.Second}.Until(t, "the follower shows the leader's rate budget", func() bool {
		got = accountCell(t, fb, acct)
		return strings.Contains(got, "4321")
	})
	if !strings.Contains(got, "leader replica-a") || !strings.Contains(got, "ago") || strings.Contains(got, "stale") {
		t.Errorf("the follower's rate cell %q: want the leader's name and the age, not stale", got)
	}
	_, page, _ := fb.get("/console/accounts")
	if !strings.Contains(page, "leader: 17") || strings.Contains(page, "9999") || strings.Contains(page, "leader: 99<") {
		t.Errorf("the follower's page shows its own old gauges or not the leader's headroom:\n%s", page)
	}
	var replica string
	var rate int
	if err := leader.st.Pool().QueryRow(t.Context(), `SELECT replica, rate_remaining FROM account_figures WHERE account = $1`, acct).Scan(&replica, &rate); err != nil || replica != "replica-a" || rate != 4321 {
		t.Errorf("account_figures: %s %d %v, want replica-a 4321 (a follower publishes nothing)", replica, rate, err)
	}
	// The leader loses its lease: nothing more is published, and the
	// figures age into stale.
	leading.Store(false)
	time.Sleep(100 * time.Millisecond)
	skew.Store(int64(time.Minute))
	if got := accountCell(t, fb, acct); !strings.Contains(got, "4321") || !strings.Contains(got, "stale") {
		t.Errorf("a minute later the follower's rate cell is %q, want 4321 marked stale", got)
	}
	if got := accountCell(t, lb, acct); strings.Contains(got, "this replica") {
		t.Errorf("a replica that no longer leads shows its own gauges: %q", got)
	}
}

// TestOverviewReadsLeaderFacts: the overview's tier filter and domain
// search read what the leader recorded in Postgres, not the replica's
// snapshot: a replica that has no snapshot yet filters alike, and a
// tenant the leader no longer records as declared has no tier and no
// domain to be found by, though its id still is.
func TestOverviewReadsLeaderFacts(t *testing.T) {
	r := newRig(t, false)
	follower := r.replica(t, func(c *Config) {
		c.Desired = func() (tenants.Snapshot, bool) { return tenants.Snapshot{}, false }
	})
	b := follower.browser(t)
	b.login(dashToken)
	rows := func(query string) string {
		t.Helper()
		code, page, _ := b.get("/console/?" + query)
		if code != http.StatusOK {
			t.Fatalf("%s = %d", query, code)
		}
		root := doc(t, page)
		return strings.Join(tenantRows(root), ",") + " / " + text(byID(root, "total"))
	}
	for _, tc := range []struct{ query, want string }{
		{"tier=enterprise", "ws-gamma / 1 tenants"},
		{"tier=pro&region=nyc3", "ws-acme / 1 tenants"},
		{"q=track.acme", "ws-acme / 1 tenants"},
		{"q=LINKS.gamma", "ws-gamma / 1 tenants"},
		{"q=.example", "ws-acme,ws-gamma / 2 tenants"},
	} {
		if got := rows(tc.query); got != tc.want {
			t.Errorf("%s on a replica without a snapshot: %s, want %s", tc.query, got, tc.want)
		}
	}
	code, page, _ := b.get("/console/?tier=enterprise")
	if code != 200 || len(find(doc(t, page), func(n *html.Node) bool { return n.Data == "td" && text(n) == "enterprise" })) != 1 {
		t.Errorf("the tier column does not show ws-gamma's tier")
	}
	// ws-gamma leaves git: a full pass records the others only.
	snap, _ := r.rec.Snapshot()
	facts := map[string]store.TenantFacts{}
	for id, ts := range snap.Tenants {
		if id != "ws-gamma" {
			facts[id] = store.FactsOf(ts.Tenant)
		}
	}
	if err := r.st.SetTenantFacts(t.Context(), facts, true); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ query, want string }{
		{"tier=enterprise", " / 0 tenants"},
		{"q=links.gamma", " / 0 tenants"},
		{"q=ws-gam", "ws-gamma / 1 tenants"},
	} {
		if got := rows(tc.query); got != tc.want {
			t.Errorf("%s after ws-gamma left git: %s, want %s", tc.query, got, tc.want)
		}
	}
}
