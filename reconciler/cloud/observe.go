package cloud

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/reconciler/plan"
)

// perPage is the largest page DigitalOcean serves.
const perPage = 200

// Observation is what Observe saw across every account.
type Observation struct {
	// At is when the listing started.
	At        time.Time
	Droplets  []plan.Droplet
	Snapshots []plan.Snapshot
	// Incomplete names each account whose listing failed or stopped part
	// way, with the reason. The droplets and snapshots of such an account
	// are still in the lists (whatever pages did arrive) but the view of
	// that account is partial: pass Incomplete on to plan.Observed so the
	// planner defers anything destructive.
	Incomplete map[string]string
}

// Partial reports whether account's part of the observation is incomplete.
func (o Observation) Partial(account string) bool {
	_, ok := o.Incomplete[account]
	return ok
}

// Observe lists, in every account at once, the droplets tagged genesis and
// the droplet snapshots named genesis-*. Every page goes through the
// account's rate budget (ahead of queued actions) and its retries. An
// account whose listing fails is recorded in Incomplete; Observe itself
// never fails.
func (p *Pool) Observe(ctx context.Context) Observation { return p.ObserveExcept(ctx, nil) }

// ObserveExcept is Observe without the accounts of skip (name → why): they
// are not listed and are recorded in Incomplete with the reason, so
// nothing is read as their droplets being gone.
func (p *Pool) ObserveExcept(ctx context.Context, skip map[string]string) Observation {
	ctx = withPriority(ctx, prioObserve)
	obs := Observation{At: p.now(), Incomplete: map[string]string{}}
	type part struct {
		droplets  []plan.Droplet
		snapshots []plan.Snapshot
		problems  []string
	}
	p.mu.RLock()
	names := slices.Clone(p.names)
	accts := make([]*account, len(names))
	for i, name := range names {
		accts[i] = p.accounts[name]
	}
	p.mu.RUnlock()
	parts := make([]part, len(names))
	var wg sync.WaitGroup
	for i, ac := range accts {
		if why, ok := skip[ac.name]; ok {
			parts[i].problems = []string{why}
			continue
		}
		wg.Go(func() {
			pt := &parts[i]
			var err error
			pt.droplets, err = p.listDroplets(ctx, ac, plan.TagFleet)
			if err != nil {
				pt.problems = append(pt.problems, err.Error())
			}
			pt.snapshots, err = p.listSnapshots(ctx, ac)
			if err != nil {
				pt.problems = append(pt.problems, err.Error())
			}
		})
	}
	wg.Wait()
	for i, name := range names {
		pt := parts[i]
		obs.Droplets = append(obs.Droplets, pt.droplets...)
		obs.Snapshots = append(obs.Snapshots, pt.snapshots...)
		if len(pt.problems) > 0 {
			obs.Incomplete[name] = strings.Join(pt.problems, "; ")
			p.log.Warn("incomplete listing", "account", name, "droplets", len(pt.droplets), "snapshots", len(pt.snapshots), "reason", obs.Incomplete[name])
		}
	}
	return obs
}

// listDroplets lists the account's droplets carrying tag, every page. On
// an error it returns what it had with the error.
func (p *Pool) listDroplets(ctx context.Context, ac *account, tag string) ([]plan.Droplet, error) {
	var out []plan.Droplet
	seen := map[int]bool{}
	for page := 1; ; page++ {
		var ds []listedDroplet
		var resp *godo.Response
		op := fmt.Sprintf("list droplets tagged %s page %d", tag, page)
		err := p.call(ctx, ac, op, func(ctx context.Context) (*godo.Response, error) {
			var err error
			ds, resp, err = listByTag(ctx, ac.client, tag, page)
			return resp, err
		})
		if err != nil {
			return out, err
		}
		for i := range ds {
			// A droplet made between two pages shifts the rest by one:
			// keep each id once.
			if !seen[ds[i].ID] {
				seen[ds[i].ID] = true
				out = append(out, ds[i].plan(ac.name))
			}
		}
		if lastPage(resp) || len(ds) == 0 {
			return out, nil
		}
	}
}

// listedDroplet is what an observation reads of a droplet in a listing
// (GET /v2/droplets?tag_name=): godo.Droplet's fields of the same names,
// and nothing of the rest (its image, size and region objects, networks,
// kernel, features). A droplet is ~1.4 KB of JSON; a page of 200 decoded
// into godo.Droplet makes 801 KB of garbage, into this 102 KB, in less
// than half the time (BenchmarkDecodeDropletPage): at 100,000 droplets,
// every pass of the leader decodes 500 pages.
type listedDroplet struct {
	ID       int      `json:"id"`
	Name     string   `json:"name"`
	Status   string   `json:"status"`
	SizeSlug string   `json:"size_slug"`
	Created  string   `json:"created_at"`
	Tags     []string `json:"tags"`
	Region   struct {
		Slug string `json:"slug"`
	} `json:"region"`
	Size struct {
		Slug string `json:"slug"`
	} `json:"size"`
}

func (d *listedDroplet) plan(account string) plan.Droplet {
	out := plan.Droplet{
		ID:        d.ID,
		Name:      d.Name,
		Account:   account,
		Size:      d.SizeSlug,
		Status:    d.Status,
		Workspace: plan.WorkspaceFromTags(d.Tags),
		Created:   parseTime(d.Created),
		Region:    d.Region.Slug,
	}
	if out.Size == "" {
		out.Size = d.Size.Slug
	}
	return out
}

// listByTag is godo's Droplets.ListByTag (the same request through the
// same client: its rate-limit headers, retries and errors) decoded into
// listedDroplet.
func listByTag(ctx context.Context, c *godo.Client, tag string, page int) ([]listedDroplet, *godo.Response, error) {
	q := url.Values{"tag_name": {tag}, "page": {strconv.Itoa(page)}, "per_page": {strconv.Itoa(perPage)}}
	req, err := c.NewRequest(ctx, http.MethodGet, "v2/droplets?"+q.Encode(), nil)
	if err != nil {
		return nil, nil, err
	}
	var root struct {
		Droplets []listedDroplet `json:"droplets"`
		Links    *godo.Links     `json:"links"`
		Meta     *godo.Meta      `json:"meta"`
	}
	resp, err := c.Do(ctx, req, &root)
	if err != nil {
		return nil, resp, err
	}
	if root.Links != nil {
		resp.Links = root.Links
	}
	if root.Meta != nil {
		resp.Meta = root.Meta
	}
	return root.Droplets, resp, nil
}

// listSnapshots lists the account's droplet snapshots named genesis-*.
func (p *Pool) listSnapshots(ctx context.Context, ac *account) ([]plan.Snapshot, error) {
	var out []plan.Snapshot
	seen := map[string]bool{}
	for page := 1; ; page++ {
		var ss []godo.Snapshot
		var resp *godo.Response
		op := fmt.Sprintf("list snapshots page %d", page)
		err := p.call(ctx, ac, op, func(ctx context.Context) (*godo.Response, error) {
			var err error
			ss, resp, err = ac.client.Snapshots.ListDroplet(ctx, &godo.ListOptions{Page: page, PerPage: perPage})
			return resp, err
		})
		if err != nil {
			return out, err
		}
		for i := range ss {
			if !strings.HasPrefix(ss[i].Name, "genesis-") || seen[ss[i].ID] {
				continue
			}
			seen[ss[i].ID] = true
			out = append(out, toSnapshot(ac.name, &ss[i]))
		}
		if lastPage(resp) || len(ss) == 0 {
			return out, nil
		}
	}
}

func lastPage(resp *godo.Response) bool {
	return resp == nil || resp.Links == nil || resp.Links.IsLastPage()
}

func toSnapshot(account string, s *godo.Snapshot) plan.Snapshot {
	out := plan.Snapshot{
		ID:        s.ID,
		Name:      s.Name,
		Account:   account,
		Workspace: plan.WorkspaceFromTags(s.Tags),
		SizeGB:    s.SizeGigaBytes,
		Created:   parseTime(s.Created),
	}
	if len(s.Regions) > 0 {
		out.Region = s.Regions[0]
	}
	if out.Workspace == "" {
		out.Workspace = workspaceFromSnapshotName(s.Name)
	}
	return out
}

// workspaceFromSnapshotName inverts plan.SnapshotName
// (genesis-<ws>-<gen>-snap) and plan.ManualSnapshotName; "" when the name
// is neither.
func workspaceFromSnapshotName(name string) string {
	rest, ok := strings.CutPrefix(plan.TrimSnapshotStamp(name), "genesis-")
	if !ok {
		return ""
	}
	rest, ok = strings.CutSuffix(rest, "-snap")
	if !ok {
		return ""
	}
	i := strings.LastIndexByte(rest, '-')
	if i <= 0 {
		return ""
	}
	ws := rest[:i]
	if plan.ParseGeneration(ws, name) == 0 {
		return ""
	}
	return ws
}

func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}
	}
	return t
}
