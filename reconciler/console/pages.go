package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/availability"
	"genesis.dev/fleet/reconciler/backup"
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/reconciler/store"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// PageSize is the overview's rows per page.
const PageSize = 50

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return "never"
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"usd":   func(f float64) string { return fmt.Sprintf("$%.2f", f) },
	"pct":   func(f *float64) string { return pctOf(f) },
	"bytes": humanBytes,
	"lower": strings.ToLower,
	"lcClass": func(s string) string {
		return "lc-" + strings.ToLower(strings.ReplaceAll(s, "_", "-"))
	},
	"list": func(s ...string) []string { return s },
	"dur":  func(sec float64) string { return (time.Duration(sec) * time.Second).String() },
}

func pctOf(f *float64) string {
	if f == nil {
		return "—"
	}
	return fmt.Sprintf("%.3f%%", *f*100)
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// snapshot is the state repository's snapshot as this replica has it
// (the tenant page's declaration, the fleet's accounts and prices). The
// overview never reads it: what it filters by of git is in Postgres.
func (c *Console) snapshot() tenants.Snapshot {
	snap, _ := c.cfg.Desired()
	return snap
}

// countsTTL is how long the fleet's counts by state and health are
// reused: counting 100,000 rows costs tens of milliseconds, and every
// overview shows them.
const countsTTL = 5 * time.Second

// counts are the fleet's tenants by state and health, at most countsTTL
// old; one reader refreshes them while the others wait for it.
func (c *Console) counts(ctx context.Context) ([]store.StateCount, error) {
	c.countsMu.Lock()
	defer c.countsMu.Unlock()
	if now := c.cfg.Now(); c.countsVal != nil && now.Sub(c.countsAt) < countsTTL {
		return c.countsVal, nil
	}
	v, err := c.cfg.Store.ConsoleCounts(ctx)
	if err != nil {
		return nil, err
	}
	if v == nil {
		v = []store.StateCount{}
	}
	c.countsVal, c.countsAt = v, c.cfg.Now()
	return v, nil
}

// overviewData is the overview template's data.
type overviewData struct {
	Filter   Filter
	Error    string
	Counts   []countRow
	Healths  []string
	Page     store.ConsolePage
	Rows     []store.ConsoleTenant
	Total    int
	Next     string
	Prev     string
	States   []string
	Tiers    []string
	Values   store.ConsoleValues
	WaveOpts []waveOpt
}

type waveOpt struct {
	Index int
	Name  string
}

type countRow struct {
	Lifecycle string
	ByHealth  []int
	Total     int
	Link      string
}

// overview is GET /console/.
func (c *Console) overview(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	status := http.StatusOK
	d := overviewData{Healths: healths, States: lifecycle.Strings(lifecycle.All())}
	for _, t := range schema.Tiers() {
		d.Tiers = append(d.Tiers, string(t))
	}
	f, err := ParseFilter(r.URL.Query())
	if err != nil {
		status, d.Error = http.StatusBadRequest, err.Error()
		f = Filter{Wave: -1}
	}
	d.Filter = f
	sf := f.store()
	var errs []error
	d.Page, err = c.cfg.Store.ConsoleTenants(ctx, sf)
	errs = append(errs, err)
	counts, err := c.counts(ctx)
	errs = append(errs, err)
	if (f == Filter{Wave: -1, After: f.After, Before: f.Before}) {
		for _, cnt := range counts { // unfiltered: the fleet's count is the counts' sum
			d.Total += cnt.Tenants
		}
	} else {
		d.Total, err = c.cfg.Store.ConsoleTotal(ctx, sf)
		errs = append(errs, err)
	}
	d.Values, err = c.cfg.Store.ConsoleFilterValues(ctx)
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		c.log.Error("overview failed", "err", err)
		c.fail(w, r, v, http.StatusInternalServerError, err.Error())
		return
	}
	for i, n := range d.Values.Waves {
		if n == "" {
			n = fmt.Sprintf("wave %d", i)
		}
		d.WaveOpts = append(d.WaveOpts, waveOpt{i, n})
	}
	d.Counts = countTable(counts)
	d.Rows = d.Page.Tenants
	base := f.Query(false)
	if d.Page.More && len(d.Page.Tenants) > 0 {
		q := cloneValues(base)
		q.Set("after", d.Page.Tenants[len(d.Page.Tenants)-1].Workspace)
		d.Next = "/console/?" + q.Encode()
	}
	if d.Page.HasPrev && len(d.Page.Tenants) > 0 {
		q := cloneValues(base)
		q.Set("before", d.Page.Tenants[0].Workspace)
		d.Prev = "/console/?" + q.Encode()
	}
	c.render(w, r, status, "overview", "Fleet overview", v, d)
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = slices.Clone(vs)
	}
	return out
}

// countTable arranges counts by lifecycle state (in lifecycle order) and
// health.
func countTable(counts []store.StateCount) []countRow {
	by := map[string]*countRow{}
	var out []countRow
	for _, s := range lifecycle.All() {
		by[string(s)] = &countRow{Lifecycle: string(s), ByHealth: make([]int, len(healths))}
	}
	for _, cnt := range counts {
		row, ok := by[cnt.Lifecycle]
		if !ok {
			continue
		}
		i := slices.Index(healths, cnt.Health)
		if i >= 0 {
			row.ByHealth[i] += cnt.Tenants
		}
		row.Total += cnt.Tenants
	}
	for _, s := range lifecycle.All() {
		if row := by[string(s)]; row.Total > 0 {
			row.Link = "/console/?" + url.Values{"state": {string(s)}}.Encode()
			out = append(out, *row)
		}
	}
	return out
}

// tenantData is the tenant page's data.
type tenantData struct {
	ID         string
	Row        store.FleetRow
	HasRow     bool
	Declared   *schema.Tenant
	FileErrors []string
	Components []component
	History    []store.HistoryEntry
	Manifests  []store.IssuedManifest
	Backups    []store.Backup
	Recovery   *backup.Point
	Avail      *api.TenantAvailability
	Cost       float64
	CostWhat   string
	StableName string
	Domains    []string
	Actions    []actionInfo
	Commit     string
}

type component struct {
	Name, Detail string
	OK, Repaired bool
}

// tenant is GET /console/tenants/{id}.
func (c *Console) tenant(w http.ResponseWriter, r *http.Request, v *viewer) {
	ctx := r.Context()
	id := r.PathValue("id")
	if !workspaceRe.MatchString(id) {
		c.fail(w, r, v, http.StatusBadRequest, "id: not a workspace id ([a-z0-9-]{3,40})")
		return
	}
	snap := c.snapshot()
	d := tenantData{ID: id, Commit: snap.Commit, Actions: actionList}
	ts, declared := snap.Tenants[id]
	if declared {
		d.Declared = ts.Tenant
		for _, e := range ts.Errors {
			d.FileErrors = append(d.FileErrors, e.Error())
		}
	}
	row, err := c.cfg.Store.FleetRowOf(ctx, id)
	switch {
	case errors.Is(err, store.ErrUnknownTenant):
		if !declared {
			c.fail(w, r, v, http.StatusNotFound, "tenant "+id+": not declared in git and not recorded")
			return
		}
	case err != nil:
		c.fail(w, r, v, http.StatusInternalServerError, err.Error())
		return
	default:
		d.Row, d.HasRow = row, true
	}
	if hd := d.Row.HealthDetail; hd != nil {
		names := make([]string, 0, len(hd.Components))
		for n := range hd.Components {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			ch := hd.Components[n]
			d.Components = append(d.Components, component{Name: n, Detail: ch.Detail, OK: ch.OK,
				Repaired: strings.Contains(ch.Detail, "repaired")})
		}
	}
	var errs []error
	d.History, err = c.cfg.Store.TenantHistory(ctx, id, 50)
	errs = append(errs, err)
	d.Manifests, err = c.cfg.Store.TenantManifests(ctx, id, 10)
	errs = append(errs, err)
	d.Backups, err = c.cfg.Store.TenantBackups(ctx, id, 10)
	errs = append(errs, err)
	d.Avail, err = availability.TenantReport(ctx, c.cfg.Store, id, c.cfg.Now())
	errs = append(errs, err)
	if err := errors.Join(errs...); err != nil {
		c.log.Error("tenant page failed", "tenant", id, "err", err)
		c.fail(w, r, v, http.StatusInternalServerError, err.Error())
		return
	}
	if c.cfg.RecoveryPoints != nil {
		if p, ok := c.cfg.RecoveryPoints()[id]; ok {
			d.Recovery = &p
		}
	}
	if f := snap.Fleet; f != nil {
		d.StableName = f.StableName(id)
		switch {
		case d.Row.DropletID != 0 && d.Row.Size != "":
			d.Cost, d.CostWhat = f.MonthlyUSD(d.Row.Size), "droplet "+d.Row.Size
		case d.Row.SnapshotID != "":
			d.Cost, d.CostWhat = f.SnapshotMonthlyUSD(d.Row.SnapshotGB), fmt.Sprintf("snapshot %.1f GB", d.Row.SnapshotGB)
		default:
			d.CostWhat = "nothing billed"
		}
	}
	if d.Declared != nil {
		d.Domains = d.Declared.Spec.Domains
	}
	c.render(w, r, http.StatusOK, "tenant", "Tenant "+id, v, d)
}

// rolloutsData is the rollouts page's data.
type rolloutsData struct {
	Rollouts []api.Rollout
	Error    string
}

// rollouts is GET /console/rollouts: the API's GET /v1/rollouts with the
// viewer's token.
func (c *Console) rollouts(w http.ResponseWriter, r *http.Request, v *viewer) {
	var d rolloutsData
	l, err := c.client(v).Rollouts(r.Context())
	if err != nil {
		d.Error = err.Error()
	}
	d.Rollouts = l.Rollouts
	c.render(w, r, http.StatusOK, "rollouts", "Rollouts", v, d)
}
