package console

import (
	"context"
	"math"
	"net/http"
	"time"

	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
)

// The accounts page. Capacity, the droplets held and the status come from
// genesis.yaml and Postgres, alike on every replica. The rate budget
// (DigitalOcean's RateLimit-Remaining) and the headroom as the leader
// computed it are gauges of the leader's registry only: the leader is the
// one replica that calls DigitalOcean. So while a replica leads, its
// console publishes those gauges to Postgres (account_figures) every
// FiguresEvery, and every replica's page shows the newest published
// figures with their age and the replica that published them; the leader
// itself shows its own gauges, which are never older.

// DefaultFiguresEvery is how often the leader publishes its account
// figures.
const DefaultFiguresEvery = 15 * time.Second

// Gauges read for the figures.
const (
	rateGauge     = "genesis_do_rate_remaining"
	headroomGauge = "genesis_account_headroom"
)

// publishFigures publishes the account figures every FiguresEvery while
// this replica leads, until ctx ends. A replica that stops leading stops
// publishing: its gauges keep their last values, which only the new
// leader's calls would make current.
func (c *Console) publishFigures(ctx context.Context) {
	if c.cfg.Gatherer == nil {
		return
	}
	tick := time.NewTicker(c.cfg.FiguresEvery)
	defer tick.Stop()
	for {
		if c.cfg.Leading() {
			if err := c.publishOnce(ctx); err != nil && ctx.Err() == nil {
				c.log.Warn("publish account figures failed", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// publishOnce writes this replica's account gauges to account_figures.
func (c *Console) publishOnce(ctx context.Context) error {
	gauges := c.accountGauges()
	now := c.cfg.Now()
	by := map[string]*store.AccountFigure{}
	var order []string
	for _, name := range []string{rateGauge, headroomGauge} {
		for acct, v := range gauges[name] {
			f, ok := by[acct]
			if !ok {
				f = &store.AccountFigure{Account: acct, Replica: c.cfg.Replica, ObservedAt: now}
				by[acct] = f
				order = append(order, acct)
			}
			n := int(math.Round(v))
			if name == rateGauge {
				f.RateRemaining = &n
			} else {
				f.Headroom = &n
			}
		}
	}
	list := make([]store.AccountFigure, 0, len(order))
	for _, a := range order {
		list = append(list, *by[a])
	}
	return c.cfg.Store.PublishAccountFigures(ctx, list)
}

// accountRow is one row of the accounts page.
type accountRow struct {
	Name, Status, LastError, TokenEnv string
	Regions                           []string
	MaxDroplets, Droplets, Headroom   int
	// The leader's figures (Has* false: none known).
	RateRemaining, LeaderHeadroom int
	HasRate, HasLeaderHeadroom    bool
	// FiguresFrom says whose figures they are and how old: "this replica
	// (leader)", or the publishing replica and the age.
	FiguresFrom string
	// FiguresStale: published longer ago than three publishing intervals
	// (no leader publishes, or it cannot reach Postgres).
	FiguresStale bool
	Declared     bool
}

// accounts is GET /console/accounts: genesis.yaml's accounts, do_accounts
// and the droplets each holds, and the leader's figures (its own gauges on
// the leader, what it published on any other replica).
func (c *Console) accounts(w http.ResponseWriter, r *http.Request, v *viewer) {
	uses, err := c.cfg.Store.AccountUses(r.Context())
	if err != nil {
		c.fail(w, r, v, http.StatusInternalServerError, err.Error())
		return
	}
	published, err := c.cfg.Store.AccountFigures(r.Context())
	if err != nil {
		c.fail(w, r, v, http.StatusInternalServerError, err.Error())
		return
	}
	snap := c.snapshot()
	leading := c.cfg.Leading()
	var gauges map[string]map[string]float64
	if leading { // a follower's gauges are a former lease's, however old
		gauges = c.accountGauges()
	}
	rows := map[string]*accountRow{}
	var order []string
	if snap.Fleet != nil {
		for _, a := range snap.Fleet.Spec.Accounts {
			st := string(a.Status)
			if st == "" {
				st = string(schema.AccountActive)
			}
			rows[a.Name] = &accountRow{Name: a.Name, Status: st, Regions: a.Regions, MaxDroplets: a.MaxDroplets, TokenEnv: a.TokenEnv, Declared: true}
			order = append(order, a.Name)
		}
	}
	for _, u := range uses {
		row, ok := rows[u.Name]
		if !ok {
			row = &accountRow{Name: u.Name, Status: u.Status, Regions: u.Regions, MaxDroplets: u.MaxDroplets}
			rows[u.Name] = row
			order = append(order, u.Name)
		}
		row.Droplets, row.LastError = u.Droplets, u.LastError
	}
	now := c.cfg.Now()
	var out []accountRow
	for _, n := range order {
		row := rows[n]
		row.Headroom = row.MaxDroplets - row.Droplets
		rate, hasRate := gauges[rateGauge][n]
		head, hasHead := gauges[headroomGauge][n]
		switch f, ok := published[n]; {
		case hasRate || hasHead:
			row.FiguresFrom = "this replica (leader), now"
			row.RateRemaining, row.HasRate = int(math.Round(rate)), hasRate
			row.LeaderHeadroom, row.HasLeaderHeadroom = int(math.Round(head)), hasHead
		case ok:
			age := max(now.Sub(f.ObservedAt), 0).Round(time.Second)
			row.FiguresFrom = "leader"
			if f.Replica != "" {
				row.FiguresFrom += " " + f.Replica
			}
			row.FiguresFrom += ", " + age.String() + " ago"
			row.FiguresStale = age > 3*c.cfg.FiguresEvery
			if f.RateRemaining != nil {
				row.RateRemaining, row.HasRate = *f.RateRemaining, true
			}
			if f.Headroom != nil {
				row.LeaderHeadroom, row.HasLeaderHeadroom = *f.Headroom, true
			}
		}
		out = append(out, *row)
	}
	c.render(w, r, http.StatusOK, "accounts", "Accounts", v, out)
}

// accountGauges reads the per-account gauges of this replica's registry.
func (c *Console) accountGauges() map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	if c.cfg.Gatherer == nil {
		return out
	}
	fams, err := c.cfg.Gatherer.Gather()
	if err != nil {
		c.log.Warn("gather metrics failed", "err", err)
	}
	for _, f := range fams {
		name := f.GetName()
		if name != rateGauge && name != headroomGauge {
			continue
		}
		m := map[string]float64{}
		for _, met := range f.GetMetric() {
			for _, l := range met.GetLabel() {
				if l.GetName() == "account" && met.GetGauge() != nil && !math.IsNaN(met.GetGauge().GetValue()) && !math.IsInf(met.GetGauge().GetValue(), 0) {
					m[l.GetValue()] = met.GetGauge().GetValue()
				}
			}
		}
		out[name] = m
	}
	return out
}
