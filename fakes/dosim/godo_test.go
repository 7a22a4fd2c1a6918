package dosim_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
)

const (
	tokenA = "token-alpha"
	tokenB = "token-bravo"
)

var epoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

type env struct {
	*dosimtest.Server
	t        *testing.T
	contract *contract
	a, b     *godo.Client
}

// start serves a simulator with two accounts (alpha: 1000 droplets, bravo:
// 5), no rate limit, a 30 s boot delay and a 10 s action delay, on a frozen
// clock, checked against the OpenAPI description.
func start(t *testing.T, mutate ...func(*dosim.Config)) *env {
	t.Helper()
	cfg := dosim.Config{
		Accounts: []dosim.Account{
			{Name: "alpha", Token: tokenA, DropletLimit: 1000},
			{Name: "bravo", Token: tokenB, DropletLimit: 5},
		},
		Limits: dosim.Limits{
			RatePerMinute: -1, RatePerHour: -1,
			BootDelay:   dosim.Duration(30 * time.Second),
			ActionDelay: dosim.Duration(10 * time.Second),
		},
		Seed: 1,
	}
	// Simulated time starts at epoch and runs with the wall clock, but the
	// test freezes it at once and moves it explicitly.
	wall := time.Now()
	cfg.Now = func() time.Time { return epoch.Add(time.Since(wall)) }
	for _, m := range mutate {
		m(&cfg)
	}
	c := newContract(t)
	srv := dosimtest.Start(t, cfg, dosimtest.WithMiddleware(c.Wrap))
	srv.Sim.Freeze(true)
	return &env{Server: srv, t: t, contract: c, a: srv.Client(tokenA), b: srv.Client(tokenB)}
}

func (e *env) create(c *godo.Client, name string, tags ...string) *godo.Droplet {
	e.t.Helper()
	d, _, err := c.Droplets.Create(context.Background(), &godo.DropletCreateRequest{
		Name: name, Region: "fra1", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}, Tags: tags,
	})
	if err != nil {
		e.t.Fatalf("create %s: %v", name, err)
	}
	return d
}

func errStatus(t *testing.T, err error) (int, string) {
	t.Helper()
	var er *godo.ErrorResponse
	if !errors.As(err, &er) {
		t.Fatalf("error %v (%T) is not a *godo.ErrorResponse", err, err)
	}
	return er.Response.StatusCode, er.Message
}

func TestListPaginatesEveryDropletOnce(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	want := map[int]bool{}
	for i := 0; i < 45; i++ {
		names := make([]string, 10)
		for j := range names {
			names[j] = fmt.Sprintf("web-%03d", i*10+j)
		}
		ds, _, err := e.a.Droplets.CreateMultiple(ctx, &godo.DropletMultiCreateRequest{
			Names: names, Region: "nyc3", Size: "s-1vcpu-1gb",
			Image: godo.DropletCreateImage{Slug: "debian-12-x64"}, Tags: []string{"genesis"},
		})
		if err != nil {
			t.Fatalf("create batch %d: %v", i, err)
		}
		for _, d := range ds {
			want[d.ID] = true
		}
	}
	if len(want) != 450 {
		t.Fatalf("created %d distinct droplets, want 450", len(want))
	}

	seen := map[int]int{}
	type pageLinks struct{ First, Prev, Next, Last string }
	var gotLinks []pageLinks
	opt := &godo.ListOptions{Page: 1, PerPage: 200}
	for {
		ds, resp, err := e.a.Droplets.List(ctx, opt)
		if err != nil {
			t.Fatalf("list page %d: %v", opt.Page, err)
		}
		if resp.Meta == nil || resp.Meta.Total != 450 {
			t.Fatalf("page %d: meta %+v, want total 450", opt.Page, resp.Meta)
		}
		for _, d := range ds {
			seen[d.ID]++
		}
		var pl pageLinks
		if resp.Links != nil && resp.Links.Pages != nil {
			p := resp.Links.Pages
			pl = pageLinks{p.First, p.Prev, p.Next, p.Last}
		}
		gotLinks = append(gotLinks, pl)
		if resp.Links == nil || resp.Links.IsLastPage() {
			break
		}
		cur, err := resp.Links.CurrentPage()
		if err != nil || cur != opt.Page {
			t.Fatalf("CurrentPage = %d, %v; want %d", cur, err, opt.Page)
		}
		opt.Page = cur + 1
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("droplet %d seen %d times", id, seen[id])
		}
	}
	if len(seen) != 450 {
		t.Errorf("listing returned %d droplets, want 450", len(seen))
	}
	u := func(page int) string { return fmt.Sprintf("%sv2/droplets?page=%d&per_page=200", e.URL, page) }
	wantLinks := []pageLinks{
		{Next: u(2), Last: u(3)},
		{First: u(1), Prev: u(1), Next: u(3), Last: u(3)},
		{First: u(1), Prev: u(2)},
	}
	if diff := cmp.Diff(gotLinks, wantLinks); diff != "" {
		t.Errorf("links.pages (-got +want):\n%s", diff)
	}

	// The default page size is 20, and per_page above 200 is capped.
	ds, _, err := e.a.Droplets.List(ctx, nil)
	if err != nil || len(ds) != 20 {
		t.Errorf("default page: %d droplets, %v; want 20", len(ds), err)
	}
	// One page: links.pages is empty.
	_, resp, err := e.a.Droplets.ListByTag(ctx, "genesis", &godo.ListOptions{PerPage: 200, Page: 3})
	if err != nil || resp.Links.Pages.Next != "" || resp.Links.Pages.Prev == "" {
		t.Errorf("last tagged page: %+v, %v", resp.Links.Pages, err)
	}
	if e.contract.Checked() < 50 {
		t.Errorf("only %d responses checked against the OpenAPI description", e.contract.Checked())
	}
}

func TestTagFilter(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.create(e.a, "ws-1", "genesis", "genesis:ws:one")
	e.create(e.a, "ws-2", "genesis", "genesis:ws:two")
	e.create(e.a, "other")
	e.create(e.b, "bravo-1", "genesis", "genesis:ws:one") // another account

	tests := []struct {
		tag  string
		want []string
	}{
		{"genesis", []string{"ws-1", "ws-2"}},
		{"genesis:ws:one", []string{"ws-1"}},
		{"genesis:ws:three", nil},
	}
	for _, tc := range tests {
		t.Run(tc.tag, func(t *testing.T) {
			ds, resp, err := e.a.Droplets.ListByTag(ctx, tc.tag, &godo.ListOptions{PerPage: 200})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range ds {
				got = append(got, d.Name)
			}
			if diff := cmp.Diff(got, tc.want); diff != "" {
				t.Errorf("names (-got +want):\n%s", diff)
			}
			if resp.Meta.Total != len(tc.want) {
				t.Errorf("meta.total = %d, want %d", resp.Meta.Total, len(tc.want))
			}
			if !resp.Links.IsLastPage() {
				t.Errorf("single page has a next link: %+v", resp.Links.Pages)
			}
		})
	}
	// The tag also works when it arrives unescaped.
	resp := e.raw(t, "GET", "v2/droplets?tag_name=genesis:ws:two", tokenA, "")
	if resp.status != 200 || !strings.Contains(resp.body, `"name":"ws-2"`) || strings.Contains(resp.body, `"ws-1"`) {
		t.Errorf("raw tag filter: %d %s", resp.status, resp.body)
	}
}

func TestCreateValidatesLikeDigitalOcean(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	d := e.create(e.a, "fresh", "genesis:ws:x")
	if d.Status != "new" {
		t.Errorf("status = %q, want new", d.Status)
	}
	if ip, _ := d.PublicIPv4(); ip != "" {
		t.Errorf("new droplet has public IPv4 %q", ip)
	}
	if d.Networks == nil || len(d.Networks.V4) != 0 {
		t.Errorf("networks.v4 = %+v, want empty", d.Networks)
	}
	base := godo.DropletCreateRequest{Name: "ok", Region: "fra1", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}}
	tests := []struct {
		name   string
		mutate func(*godo.DropletCreateRequest)
		status int
		msg    string
	}{
		{"bad region", func(r *godo.DropletCreateRequest) { r.Region = "mars1" }, 422, "You specified an invalid region for Droplet creation."},
		{"bad size", func(r *godo.DropletCreateRequest) { r.Size = "xxl" }, 422, "You specified an invalid size for Droplet creation."},
		{"bad image", func(r *godo.DropletCreateRequest) { r.Image = godo.DropletCreateImage{Slug: "windows-95"} }, 422, "You specified an invalid image for Droplet creation."},
		{"unknown snapshot", func(r *godo.DropletCreateRequest) { r.Image = godo.DropletCreateImage{ID: 42} }, 422, "You specified an invalid image for Droplet creation."},
		{"bad name", func(r *godo.DropletCreateRequest) { r.Name = "under_score" }, 422, `name "under_score" is invalid`},
		{"bad tag", func(r *godo.DropletCreateRequest) { r.Tags = []string{"ok", "has space"} }, 422, `tags[1] "has space" is invalid`},
		{"long tag", func(r *godo.DropletCreateRequest) { r.Tags = []string{strings.Repeat("t", 256)} }, 422, `tags[0]`},
		{"big user data", func(r *godo.DropletCreateRequest) { r.UserData = strings.Repeat("x", 64<<10+1) }, 422, "user_data: must not exceed 64 KiB"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := base
			tc.mutate(&req)
			_, _, err := e.a.Droplets.Create(ctx, &req)
			status, msg := errStatus(t, err)
			if status != tc.status || !strings.HasPrefix(msg, tc.msg) {
				t.Errorf("got %d %q, want %d %q...", status, msg, tc.status, tc.msg)
			}
		})
	}
	// A 255-character tag is fine.
	e.create(e.a, "long-tag", strings.Repeat("t", 255))
}

func TestDropletLimitCountsNewDroplets(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	acct, _, err := e.b.Account.Get(ctx)
	if err != nil || acct.DropletLimit != 5 || acct.Status != "active" {
		t.Fatalf("account: %+v, %v", acct, err)
	}
	for i := range 5 {
		e.create(e.b, fmt.Sprintf("b-%d", i))
	}
	_, _, err = e.b.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "b-6", Region: "fra1", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}})
	status, msg := errStatus(t, err)
	if status != 422 || msg != "creating this/these droplet(s) will exceed your droplet limit" {
		t.Errorf("6th droplet: %d %q", status, msg)
	}
	// Raising the limit through the control API lets it through.
	if r := e.raw(t, "PATCH", "_sim/accounts/bravo", "", `{"droplet_limit":6}`); r.status != 200 {
		t.Fatalf("raise limit: %d %s", r.status, r.body)
	}
	e.create(e.b, "b-6")
}

func TestRateLimit(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	if err := e.Sim.SetLimits(dosim.Limits{RatePerMinute: 5, RatePerHour: 100}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		_, resp, err := e.a.Account.Get(ctx)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if resp.Rate.Limit != 100 || resp.Rate.Remaining != 100-(i+1) || resp.Rate.Reset.Unix() != epoch.Add(time.Hour).Unix() {
			t.Errorf("request %d: rate %+v", i, resp.Rate)
		}
	}
	// Over the per-minute window: 429 with DigitalOcean's body and headers.
	r := e.raw(t, "GET", "v2/account", tokenA, "")
	if r.status != 429 {
		t.Fatalf("6th request: %d %s", r.status, r.body)
	}
	wantBody := fmt.Sprintf(`{"id":"too_many_requests","message":"API Rate limit exceeded.","request_id":%q}`, r.header.Get("x-request-id"))
	if r.body != wantBody+"\n" {
		t.Errorf("429 body = %s, want %s", r.body, wantBody)
	}
	for h, want := range map[string]string{"Retry-After": "60", "RateLimit-Limit": "100", "RateLimit-Remaining": "95", "RateLimit-Reset": strconv.FormatInt(epoch.Add(time.Hour).Unix(), 10)} {
		if got := r.header.Get(h); got != want {
			t.Errorf("429 %s = %q, want %q", h, got, want)
		}
	}
	// Another token has its own window.
	if _, _, err := e.b.Account.Get(ctx); err != nil {
		t.Errorf("other token limited: %v", err)
	}

	// godo honours Retry-After: half a second before the window frees, the
	// server says Retry-After: 1; with the clock running again, godo's retry
	// after that second succeeds.
	e.Sim.Advance(59500 * time.Millisecond)
	e.Sim.Freeze(false)
	before := e.contract.statusCount(429)
	acct, resp, err := e.a.Account.Get(ctx)
	if err != nil || acct.Name != "alpha" {
		t.Fatalf("after Retry-After: %+v %v", acct, err)
	}
	if got := e.contract.statusCount(429) - before; got < 1 {
		t.Errorf("saw %d 429s before success, want at least 1", got)
	}
	if resp.Rate.Remaining >= 95 {
		t.Errorf("rate remaining %d after success", resp.Rate.Remaining)
	}
	e.Sim.Freeze(true)

	// The fast path: a 429 with Retry-After: 0 is retried at once.
	e.Sim.SetLimits(dosim.Limits{RatePerMinute: -1, RatePerHour: -1})
	if _, err := e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Status: 429, Count: 2, Route: "GET /v2/account"}); err != nil {
		t.Fatal(err)
	}
	before = e.contract.statusCount(429)
	if _, _, err := e.a.Account.Get(ctx); err != nil {
		t.Fatalf("after two instant 429s: %v", err)
	}
	if got := e.contract.statusCount(429) - before; got != 2 {
		t.Errorf("saw %d 429s, want 2", got)
	}
	// When retries run out godo reports the 429 and its attempts.
	e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Status: 429, Count: 10, Route: "GET /v2/account"})
	_, _, err = e.a.Account.Get(ctx)
	var er *godo.ErrorResponse
	if !errors.As(err, &er) || er.Response.StatusCode != 429 || er.Attempts != 4 || er.Message != "API Rate limit exceeded." || er.RequestID == "" {
		t.Errorf("exhausted retries: %#v", err)
	}
}

func TestActionsProgressAndBlock(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	d, resp, err := e.a.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "act", Region: "lon1", Size: "s-1vcpu-2gb", Image: godo.DropletCreateImage{Slug: "ubuntu-22-04-x64"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Links.Actions) != 1 || resp.Links.Actions[0].Rel != "create" || resp.Links.Actions[0].HREF != fmt.Sprintf("%sv2/actions/%d", e.URL, resp.Links.Actions[0].ID) {
		t.Fatalf("links.actions = %+v", resp.Links.Actions)
	}
	createID := resp.Links.Actions[0].ID
	a, _, err := e.a.Actions.Get(ctx, createID)
	if err != nil || a.Status != "in-progress" || a.Type != "create" || a.ResourceID != d.ID {
		t.Fatalf("create action: %+v %v", a, err)
	}
	// While new, the droplet has a pending event.
	_, _, err = e.a.DropletActions.PowerOff(ctx, d.ID)
	if status, msg := errStatus(t, err); status != 422 || msg != "Droplet already has a pending event." {
		t.Errorf("action on a new droplet: %d %q", status, msg)
	}
	e.Sim.Advance(30 * time.Second)
	d, _, err = e.a.Droplets.Get(ctx, d.ID)
	if err != nil || d.Status != "active" {
		t.Fatalf("after boot: %+v %v", d, err)
	}
	ip, _ := d.PublicIPv4()
	if !strings.HasPrefix(ip, "127.") {
		t.Errorf("public IPv4 %q, want 127.0.0.0/8", ip)
	}
	if a, _, _ := e.a.Actions.Get(ctx, createID); a.Status != "completed" || a.CompletedAt == nil {
		t.Errorf("create action after boot: %+v", a)
	}

	off, _, err := e.a.DropletActions.PowerOff(ctx, d.ID)
	if err != nil || off.Status != "in-progress" || off.Type != "power_off" || off.ResourceType != "droplet" || off.RegionSlug != "lon1" {
		t.Fatalf("power_off: %+v %v", off, err)
	}
	_, _, err = e.a.DropletActions.PowerOn(ctx, d.ID)
	if status, msg := errStatus(t, err); status != 422 || msg != "Droplet already has a pending event." {
		t.Errorf("second action: %d %q", status, msg)
	}
	if got, _, _ := e.a.DropletActions.Get(ctx, d.ID, off.ID); got.Status != "in-progress" {
		t.Errorf("power_off before the delay: %s", got.Status)
	}
	e.Sim.Advance(9 * time.Second)
	if got, _, _ := e.a.Actions.Get(ctx, off.ID); got.Status != "in-progress" {
		t.Errorf("power_off 1s before the delay: %s", got.Status)
	}
	e.Sim.Advance(time.Second)
	got, _, err := e.a.DropletActions.Get(ctx, d.ID, off.ID)
	if err != nil || got.Status != "completed" || !got.CompletedAt.Time.Equal(epoch.Add(40*time.Second)) {
		t.Errorf("power_off after the delay: %+v %v", got, err)
	}
	// GetByURI, as godo uses with links.actions hrefs.
	if got, _, err := e.a.DropletActions.GetByURI(ctx, fmt.Sprintf("%sv2/droplets/%d/actions/%d", e.URL, d.ID, off.ID)); err != nil || got.ID != off.ID {
		t.Errorf("GetByURI: %+v %v", got, err)
	}
	if d, _, _ = e.a.Droplets.Get(ctx, d.ID); d.Status != "off" {
		t.Errorf("after power_off: %s", d.Status)
	}
	on, _, err := e.a.DropletActions.PowerOn(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.Sim.Advance(10 * time.Second)
	if d, _, _ = e.a.Droplets.Get(ctx, d.ID); d.Status != "active" {
		t.Errorf("after power_on: %s", d.Status)
	}
	for _, fn := range []func(context.Context, int) (*godo.Action, *godo.Response, error){
		e.a.DropletActions.Reboot, e.a.DropletActions.PowerCycle, e.a.DropletActions.Shutdown,
	} {
		a, _, err := fn(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		e.Sim.Advance(10 * time.Second)
		if a, _, _ = e.a.Actions.Get(ctx, a.ID); a.Status != "completed" {
			t.Errorf("%s: %s", a.Type, a.Status)
		}
	}
	if d, _, _ = e.a.Droplets.Get(ctx, d.ID); d.Status != "off" {
		t.Errorf("after shutdown: %s", d.Status)
	}
	acts, resp, err := e.a.Actions.List(ctx, &godo.ListOptions{PerPage: 2})
	if err != nil || len(acts) != 2 || resp.Meta.Total != 6 || acts[0].Type != "shutdown" {
		t.Errorf("actions list: %d %+v %v", len(acts), resp.Meta, err)
	}
	dacts, _, err := e.a.Droplets.Actions(ctx, d.ID, &godo.ListOptions{PerPage: 200})
	if err != nil || len(dacts) != 6 || dacts[len(dacts)-1].ID != createID {
		t.Errorf("droplet actions: %d %v", len(dacts), err)
	}
	_ = on
	// Unsupported and unknown action types are refused with a clear message.
	r := e.raw(t, "POST", fmt.Sprintf("v2/droplets/%d/actions", d.ID), tokenA, `{"type":"resize","size":"s-2vcpu-4gb"}`)
	if r.status != 422 || !strings.Contains(r.body, `not supported`) {
		t.Errorf("resize: %d %s", r.status, r.body)
	}
}

func TestSnapshotAndCreateFromIt(t *testing.T) {
	disks := t.TempDir()
	e := start(t, func(c *dosim.Config) { c.DiskRoot = disks })
	ctx := context.Background()
	d := e.create(e.a, "keeper", "genesis", "genesis:ws:keep")
	e.Sim.Advance(30 * time.Second)
	dir := filepath.Join(disks, "droplets", strconv.Itoa(d.ID))
	if err := os.WriteFile(filepath.Join(dir, "state.db"), []byte("agent state"), 0o600); err != nil {
		t.Fatal(err)
	}
	off, _, err := e.a.DropletActions.PowerOff(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.Sim.Advance(10 * time.Second)
	if a, _, _ := e.a.Actions.Get(ctx, off.ID); a.Status != "completed" {
		t.Fatalf("power off: %s", a.Status)
	}
	snapAct, _, err := e.a.DropletActions.Snapshot(ctx, d.ID, "keeper-hibernate")
	if err != nil || snapAct.Type != "snapshot" || snapAct.Status != "in-progress" {
		t.Fatalf("snapshot: %+v %v", snapAct, err)
	}
	// Not listed until the action completes.
	if snaps, _, _ := e.a.Snapshots.ListDroplet(ctx, nil); len(snaps) != 0 {
		t.Errorf("snapshot listed while in progress: %+v", snaps)
	}
	e.Sim.Advance(10 * time.Second)
	snaps, resp, err := e.a.Snapshots.ListDroplet(ctx, &godo.ListOptions{PerPage: 200})
	if err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots: %+v %v", snaps, err)
	}
	s := snaps[0]
	want := godo.Snapshot{ID: s.ID, Name: "keeper-hibernate", ResourceID: strconv.Itoa(d.ID), ResourceType: "droplet",
		Regions: []string{"fra1"}, MinDiskSize: 25, SizeGigaBytes: 0.01, Created: epoch.Add(50 * time.Second).Format(time.RFC3339),
		Tags: []string{"genesis", "genesis:ws:keep"}}
	if diff := cmp.Diff(s, want); diff != "" {
		t.Errorf("snapshot (-got +want):\n%s", diff)
	}
	if resp.Links == nil || !resp.Links.IsLastPage() {
		t.Errorf("snapshot links: %+v", resp.Links)
	}
	if vol, _, err := e.a.Snapshots.ListVolume(ctx, nil); err != nil || len(vol) != 0 {
		t.Errorf("volume snapshots: %+v %v", vol, err)
	}
	got, _, err := e.a.Snapshots.Get(ctx, s.ID)
	if err != nil || got.Name != "keeper-hibernate" {
		t.Errorf("get snapshot: %+v %v", got, err)
	}
	if d, _, _ := e.a.Droplets.Get(ctx, d.ID); !slices.Contains(d.SnapshotIDs, mustAtoi(t, s.ID)) {
		t.Errorf("droplet snapshot_ids = %v", d.SnapshotIDs)
	}
	// Hibernate: destroy, then wake from the snapshot by its integer id.
	if _, err := e.a.Droplets.Delete(ctx, d.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("destroyed droplet's disk still there: %v", err)
	}
	woke, _, err := e.a.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "keeper", Region: "fra1", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{ID: mustAtoi(t, s.ID)}, Tags: []string{"genesis"}})
	if err != nil {
		t.Fatal(err)
	}
	if woke.Image == nil || woke.Image.ID != mustAtoi(t, s.ID) || woke.Image.Type != "snapshot" {
		t.Errorf("woken droplet image: %+v", woke.Image)
	}
	b, err := os.ReadFile(filepath.Join(disks, "droplets", strconv.Itoa(woke.ID), "state.db"))
	if err != nil || string(b) != "agent state" {
		t.Errorf("disk of droplet created from snapshot: %q %v", b, err)
	}
	// Another account cannot use or see the snapshot.
	_, _, err = e.b.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "thief", Region: "fra1", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{ID: mustAtoi(t, s.ID)}})
	if status, _ := errStatus(t, err); status != 422 {
		t.Errorf("foreign snapshot image: %d", status)
	}
	if _, _, err := e.b.Snapshots.Get(ctx, s.ID); err == nil {
		t.Errorf("foreign snapshot visible")
	}
	if _, err := e.a.Snapshots.Delete(ctx, s.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.a.Snapshots.Get(ctx, s.ID); err == nil {
		t.Errorf("deleted snapshot still there")
	} else if status, msg := errStatus(t, err); status != 404 || msg != "The resource you requested could not be found." {
		t.Errorf("deleted snapshot: %d %q", status, msg)
	}
	if _, err := os.Stat(filepath.Join(disks, "snapshots", s.ID)); !os.IsNotExist(err) {
		t.Errorf("deleted snapshot's disk still there: %v", err)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("snapshot id %q is not numeric: %v", s, err)
	}
	return n
}

func TestDeleteByTagWithColon(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.create(e.a, "gone-1", "genesis:ws:gone")
	e.create(e.a, "gone-2", "genesis:ws:gone", "x")
	e.create(e.a, "stays", "genesis:ws:stays")
	e.create(e.b, "bravo-gone", "genesis:ws:gone")
	resp, err := e.a.Droplets.DeleteByTag(ctx, "genesis:ws:gone")
	if err != nil || resp.StatusCode != 204 {
		t.Fatalf("delete by tag: %v %v", resp, err)
	}
	names := func(c *godo.Client) []string {
		ds, _, err := c.Droplets.List(ctx, &godo.ListOptions{PerPage: 200})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range ds {
			out = append(out, d.Name)
		}
		return out
	}
	if diff := cmp.Diff(names(e.a), []string{"stays"}); diff != "" {
		t.Errorf("alpha after delete (-got +want):\n%s", diff)
	}
	if diff := cmp.Diff(names(e.b), []string{"bravo-gone"}); diff != "" {
		t.Errorf("bravo after alpha's delete (-got +want):\n%s", diff)
	}
	// Escaped works too, and a tag with nothing on it is a no-op.
	if r := e.raw(t, "DELETE", "v2/droplets?tag_name=genesis%3Aws%3Astays", tokenA, ""); r.status != 204 {
		t.Errorf("escaped delete: %d %s", r.status, r.body)
	}
	if got := names(e.a); len(got) != 0 {
		t.Errorf("after escaped delete: %v", got)
	}
}

func TestAccountIsolation(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	d := e.create(e.a, "mine")
	e.Sim.Advance(30 * time.Second)
	act, _, err := e.a.DropletActions.Snapshot(ctx, d.ID, "mine-snap")
	if err != nil {
		t.Fatal(err)
	}
	e.Sim.Advance(10 * time.Second)
	snaps, _, _ := e.a.Snapshots.List(ctx, nil)
	if len(snaps) != 1 {
		t.Fatalf("alpha snapshots: %v", snaps)
	}

	notFound := func(what string, err error) {
		t.Helper()
		if status, _ := errStatus(t, err); status != 404 {
			t.Errorf("bravo %s: %d, want 404", what, status)
		}
	}
	_, _, err = e.b.Droplets.Get(ctx, d.ID)
	notFound("get droplet", err)
	_, err = e.b.Droplets.Delete(ctx, d.ID)
	notFound("delete droplet", err)
	_, _, err = e.b.DropletActions.Reboot(ctx, d.ID)
	notFound("reboot droplet", err)
	_, _, err = e.b.Actions.Get(ctx, act.ID)
	notFound("get action", err)
	_, _, err = e.b.DropletActions.Get(ctx, d.ID, act.ID)
	notFound("get droplet action", err)
	_, err = e.b.Snapshots.Delete(ctx, snaps[0].ID)
	notFound("delete snapshot", err)
	for what, n := range map[string]func() (int, error){
		"droplets":  func() (int, error) { l, _, err := e.b.Droplets.List(ctx, nil); return len(l), err },
		"actions":   func() (int, error) { l, _, err := e.b.Actions.List(ctx, nil); return len(l), err },
		"snapshots": func() (int, error) { l, _, err := e.b.Snapshots.List(ctx, nil); return len(l), err },
	} {
		if got, err := n(); err != nil || got != 0 {
			t.Errorf("bravo lists %d %s (%v), want 0", got, what, err)
		}
	}
	if _, _, err := e.a.Droplets.Get(ctx, d.ID); err != nil {
		t.Errorf("alpha lost its droplet: %v", err)
	}
}

func TestUnauthorized(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	_, _, err := dosimtest.NewClient(e.URL, "wrong").Account.Get(ctx)
	if status, msg := errStatus(t, err); status != 401 || msg != "Unable to authenticate you" {
		t.Errorf("godo with a wrong token: %d %q", status, msg)
	}
	for _, token := range []string{"", "wrong"} {
		r := e.raw(t, "GET", "v2/droplets", token, "")
		want := fmt.Sprintf(`{"id":"Unauthorized","message":"Unable to authenticate you","request_id":%q}`+"\n", r.header.Get("x-request-id"))
		if r.status != 401 || r.body != want {
			t.Errorf("token %q: %d %s, want 401 %s", token, r.status, r.body, want)
		}
		for _, h := range []string{"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "X-Request-Id"} {
			if r.header.Get(h) == "" {
				t.Errorf("401 without %s", h)
			}
		}
	}
}

func TestErrorBodies(t *testing.T) {
	e := start(t)
	d := e.create(e.a, "target")
	tests := []struct {
		name, method, path, body string
		status                   int
		id, msg                  string
	}{
		{"unknown route", "GET", "v2/volumes", "", 404, "not_found", "The resource you requested could not be found."},
		{"unknown version", "GET", "v1/droplets", "", 404, "not_found", "The resource you requested could not be found."},
		{"wrong method", "PUT", "v2/droplets", "{}", 404, "not_found", "The resource you requested could not be found."},
		{"missing droplet", "GET", "v2/droplets/1", "", 404, "not_found", "The resource you requested could not be found."},
		{"non-numeric id", "GET", "v2/droplets/abc", "", 404, "not_found", "The resource you requested could not be found."},
		{"malformed json", "POST", "v2/droplets", `{"name":`, 400, "bad_request", "malformed JSON body: unexpected EOF"},
		{"not an object", "POST", "v2/droplets", `["a"]`, 400, "bad_request", "request body must be a JSON object"},
		{"empty body", "POST", "v2/droplets", ``, 400, "bad_request", "request body is required"},
		{"wrong type", "POST", "v2/droplets", `{"name":"x","size":1,"image":"debian-12-x64"}`, 422, "unprocessable_entity", `invalid value for "size": expected string, got number`},
		{"tags not array", "POST", "v2/droplets", `{"name":"x","size":"s-1vcpu-1gb","image":"debian-12-x64","tags":"a"}`, 422, "unprocessable_entity", `invalid value for "tags": expected array, got string`},
		{"missing size", "POST", "v2/droplets", `{"name":"x","image":"debian-12-x64"}`, 422, "unprocessable_entity", "size is required"},
		{"missing image", "POST", "v2/droplets", `{"name":"x","size":"s-1vcpu-1gb"}`, 422, "unprocessable_entity", "image is required"},
		{"fractional image", "POST", "v2/droplets", `{"name":"x","size":"s-1vcpu-1gb","image":1.5}`, 422, "unprocessable_entity", "image: must be a slug or a positive integer image id, got 1.5"},
		{"action without type", "POST", fmt.Sprintf("v2/droplets/%d/actions", d.ID), `{}`, 422, "unprocessable_entity", "type is required"},
		{"unknown action", "POST", fmt.Sprintf("v2/droplets/%d/actions", d.ID), `{"type":"explode"}`, 422, "unprocessable_entity", `type "explode" is not a valid droplet action`},
		{"bad page", "GET", "v2/droplets?page=0", "", 400, "bad_request", `page: must be a positive integer, got "0"`},
		{"bad per_page", "GET", "v2/droplets?per_page=x", "", 400, "bad_request", `per_page: must be a positive integer, got "x"`},
		{"delete without tag", "DELETE", "v2/droplets", "", 400, "bad_request", "tag_name is required"},
		{"too big", "POST", "v2/droplets", `{"user_data":"` + strings.Repeat("x", 1<<20) + `"}`, 413, "request_entity_too_large", "The request body exceeds 1048576 bytes."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.raw(t, tc.method, tc.path, tokenA, tc.body)
			want := fmt.Sprintf(`{"id":%q,"message":%q,"request_id":%q}`+"\n", tc.id, tc.msg, r.header.Get("x-request-id"))
			if r.status != tc.status || r.body != want {
				t.Errorf("got %d %s\nwant %d %s", r.status, r.body, tc.status, want)
			}
			if r.header.Get("RateLimit-Remaining") == "" || r.header.Get("x-request-id") == "" {
				t.Errorf("headers missing: %v", r.header)
			}
		})
	}
}

func TestFaultInjection(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	for i := range 5 {
		e.create(e.a, fmt.Sprintf("f-%d", i))
	}

	t.Run("error absorbed by retries", func(t *testing.T) {
		e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "GET /v2/droplets", Count: 2, Status: 503})
		before := e.contract.statusCount(503)
		if ds, _, err := e.a.Droplets.List(ctx, nil); err != nil || len(ds) != 5 {
			t.Fatalf("list: %d %v", len(ds), err)
		}
		if got := e.contract.statusCount(503) - before; got != 2 {
			t.Errorf("%d injected 503s served, want 2", got)
		}
	})
	t.Run("error outlasting retries", func(t *testing.T) {
		e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "POST /v2/droplets", Count: 4, Status: 500})
		_, _, err := e.a.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "nope", Region: "fra1", Size: "s-1vcpu-1gb", Image: godo.DropletCreateImage{Slug: "debian-12-x64"}})
		if err == nil {
			t.Fatal("create succeeded through 4 injected 500s")
		}
		if ds, _, _ := e.a.Droplets.ListByName(ctx, "nope", nil); len(ds) != 0 {
			t.Errorf("failed create made a droplet")
		}
	})
	t.Run("non-retried status for one account", func(t *testing.T) {
		e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "GET /v2/droplets/*", Account: "alpha", Status: 403, Message: "nope"})
		// bravo is not affected.
		if _, _, err := e.b.Droplets.Get(ctx, 1); err == nil {
			t.Fatal("bravo got a droplet it does not have")
		} else if status, _ := errStatus(t, err); status != 404 {
			t.Errorf("bravo: %d", status)
		}
		_, _, err := e.a.Droplets.Get(ctx, 1)
		if status, msg := errStatus(t, err); status != 403 || msg != "nope" {
			t.Errorf("alpha: %d %q", status, msg)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultTimeout, Route: "GET /v2/account"})
		tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, _, err := e.a.Account.Get(tctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("timeout fault: %v", err)
		}
		if _, _, err := e.a.Account.Get(ctx); err != nil {
			t.Errorf("after the timeout: %v", err)
		}
	})
	t.Run("timeout with hold", func(t *testing.T) {
		e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultTimeout, Route: "GET /v2/account", Hold: dosim.Duration(time.Millisecond), Count: 4})
		_, _, err := e.a.Account.Get(ctx)
		if err == nil {
			t.Fatal("held request succeeded")
		}
	})
	t.Run("partial list", func(t *testing.T) {
		e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultPartialList, Route: "GET /v2/droplets", OKPages: 1, Truncate: true, Count: 4})
		ds, resp, err := e.a.Droplets.List(ctx, &godo.ListOptions{PerPage: 2})
		if err != nil || len(ds) != 1 || resp.Meta.Total != 5 || resp.Links.IsLastPage() {
			t.Fatalf("first page: %d droplets, %v", len(ds), err)
		}
		_, _, err = e.a.Droplets.List(ctx, &godo.ListOptions{PerPage: 2, Page: 2})
		if err == nil {
			t.Fatal("second page succeeded")
		}
		if ds, _, err := e.a.Droplets.List(ctx, &godo.ListOptions{PerPage: 2, Page: 2}); err != nil || len(ds) != 2 {
			t.Errorf("after the fault: %d %v", len(ds), err)
		}
	})
	t.Run("action error", func(t *testing.T) {
		e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultActionError, Account: "alpha"})
		d := e.create(e.a, "doomed")
		e.Sim.Advance(30 * time.Second)
		d, _, _ = e.a.Droplets.Get(ctx, d.ID)
		if d.Status == "active" {
			t.Errorf("droplet with an errored create became active")
		}
		d2 := e.create(e.a, "fine")
		e.Sim.Advance(30 * time.Second)
		if d2, _, _ = e.a.Droplets.Get(ctx, d2.ID); d2.Status != "active" {
			t.Errorf("second droplet: %s", d2.Status)
		}
		e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultActionError})
		a, _, err := e.a.DropletActions.Reboot(ctx, d2.ID)
		if err != nil {
			t.Fatal(err)
		}
		e.Sim.Advance(10 * time.Second)
		if a, _, _ = e.a.Actions.Get(ctx, a.ID); a.Status != "errored" {
			t.Errorf("reboot: %s, want errored", a.Status)
		}
	})
	t.Run("random rate", func(t *testing.T) {
		l := e.Sim.Limits()
		l.FaultRate = 1
		e.Sim.SetLimits(l)
		_, _, err := e.a.Account.Get(ctx)
		if err == nil {
			t.Error("fault rate 1 let a request through")
		}
		l.FaultRate = 0
		e.Sim.SetLimits(l)
		if _, _, err := e.a.Account.Get(ctx); err != nil {
			t.Error(err)
		}
	})
	if f := e.Sim.Snapshot().Faults; len(f) != 0 {
		t.Errorf("faults left over: %+v", f)
	}
}

func (c *contract) statusCount(status int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.statuses[status]
}

var _ = http.MethodGet
