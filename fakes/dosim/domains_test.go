package dosim_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"

	"genesis.dev/fleet/fakes/dosim"
)

type rec struct {
	Type, Name, Data string
	TTL              int
}

func records(t *testing.T, c *godo.Client, zone string) []rec {
	t.Helper()
	rs, _, err := c.Domains.Records(context.Background(), zone, &godo.ListOptions{PerPage: 200})
	if err != nil {
		t.Fatalf("records of %s: %v", zone, err)
	}
	var out []rec
	for _, r := range rs {
		out = append(out, rec{r.Type, r.Name, r.Data, r.TTL})
	}
	return out
}

func (e *env) createDomain(c *godo.Client, name, ip string) {
	e.t.Helper()
	if _, _, err := c.Domains.Create(context.Background(), &godo.DomainCreateRequest{Name: name, IPAddress: ip}); err != nil {
		e.t.Fatalf("create domain %s: %v", name, err)
	}
}

func (e *env) createRecord(c *godo.Client, zone string, r rec) godo.DomainRecord {
	e.t.Helper()
	got, _, err := c.Domains.CreateRecord(context.Background(), zone, &godo.DomainRecordEditRequest{Type: r.Type, Name: r.Name, Data: r.Data, TTL: r.TTL})
	if err != nil {
		e.t.Fatalf("create %s record %s in %s: %v", r.Type, r.Name, zone, err)
	}
	return *got
}

func TestDomainRecordsThroughGodo(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	d, _, err := e.a.Domains.Create(ctx, &godo.DomainCreateRequest{Name: "t.genesis.test", IPAddress: "127.1.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "t.genesis.test" || d.TTL != 1800 {
		t.Errorf("created domain %+v", d)
	}
	// A new zone holds DigitalOcean's SOA and NS records and the apex A.
	want := []rec{
		{"SOA", "@", "1800", 1800},
		{"NS", "@", "ns1.digitalocean.com", 1800},
		{"NS", "@", "ns2.digitalocean.com", 1800},
		{"NS", "@", "ns3.digitalocean.com", 1800},
		{"A", "@", "127.1.0.9", 1800},
	}
	if diff := cmp.Diff(records(t, e.a, "t.genesis.test"), want); diff != "" {
		t.Errorf("new zone (-got +want):\n%s", diff)
	}

	a := e.createRecord(e.a, "t.genesis.test", rec{Type: "A", Name: "ws-a", Data: "127.1.0.5", TTL: 60})
	e.createRecord(e.a, "t.genesis.test", rec{Type: "AAAA", Name: "ws-a", Data: "::1", TTL: 60})
	cname := e.createRecord(e.a, "t.genesis.test", rec{Type: "CNAME", Name: "www", Data: "ws-a.t.genesis.test."})
	e.createRecord(e.a, "t.genesis.test", rec{Type: "TXT", Name: "_acme-challenge.ws-a", Data: "token-1", TTL: 30})
	if cname.TTL != 1800 || cname.Name != "www" {
		t.Errorf("CNAME without ttl: %+v, want ttl 1800", cname)
	}

	// EditRecord (PUT) changes the fields it sends.
	edited, _, err := e.a.Domains.EditRecord(ctx, "t.genesis.test", a.ID, &godo.DomainRecordEditRequest{Type: "A", Data: "127.1.0.6"})
	if err != nil {
		t.Fatal(err)
	}
	if edited.Data != "127.1.0.6" || edited.Name != "ws-a" || edited.TTL != 60 {
		t.Errorf("edited record %+v", edited)
	}
	got, _, err := e.a.Domains.Record(ctx, "t.genesis.test", a.ID)
	if err != nil || got.Data != "127.1.0.6" {
		t.Errorf("record after edit: %+v, %v", got, err)
	}

	// The name filter takes the fully qualified name.
	byTypeName, _, err := e.a.Domains.RecordsByTypeAndName(ctx, "t.genesis.test", "A", "ws-a.t.genesis.test", nil)
	if err != nil || len(byTypeName) != 1 || byTypeName[0].ID != a.ID {
		t.Errorf("RecordsByTypeAndName(A, ws-a.t.genesis.test) = %+v, %v", byTypeName, err)
	}
	apex, _, err := e.a.Domains.RecordsByName(ctx, "t.genesis.test", "t.genesis.test", nil)
	if err != nil || len(apex) != 5 {
		t.Errorf("RecordsByName(apex) = %d records, %v; want 5", len(apex), err)
	}
	relative, _, err := e.a.Domains.RecordsByName(ctx, "t.genesis.test", "ws-a", nil)
	if err != nil || len(relative) != 0 {
		t.Errorf("RecordsByName with a relative name = %+v, %v; want none (DigitalOcean wants the full name)", relative, err)
	}
	aaaa, _, err := e.a.Domains.RecordsByType(ctx, "t.genesis.test", "AAAA", nil)
	if err != nil || len(aaaa) != 1 || aaaa[0].Data != "::1" {
		t.Errorf("RecordsByType(AAAA) = %+v, %v", aaaa, err)
	}

	// The zone file shows every record.
	d, _, err = e.a.Domains.Get(ctx, "t.genesis.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"$ORIGIN t.genesis.test.", "ws-a.t.genesis.test.\t60\tIN\tA\t127.1.0.6", "www.t.genesis.test.\t1800\tIN\tCNAME\tws-a.t.genesis.test.",
		"t.genesis.test.\t1800\tIN\tSOA\tns1.digitalocean.com. hostmaster.t.genesis.test."} {
		if !strings.Contains(d.ZoneFile, line) {
			t.Errorf("zone file lacks %q:\n%s", line, d.ZoneFile)
		}
	}

	if _, err := e.a.Domains.DeleteRecord(ctx, "t.genesis.test", a.ID); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.a.Domains.Record(ctx, "t.genesis.test", a.ID); err == nil {
		t.Error("deleted record still found")
	} else if st, _ := errStatus(t, err); st != http.StatusNotFound {
		t.Errorf("deleted record: status %d, want 404", st)
	}

	ds, resp, err := e.a.Domains.List(ctx, nil)
	if err != nil || len(ds) != 1 || resp.Meta == nil || resp.Meta.Total != 1 {
		t.Errorf("list domains: %+v %+v %v", ds, resp, err)
	}
	if _, err := e.a.Domains.Delete(ctx, "t.genesis.test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.a.Domains.Get(ctx, "t.genesis.test"); err == nil {
		t.Error("deleted domain still found")
	}
	if n := len(e.Sim.Snapshot().Domains); n != 0 {
		t.Errorf("control state lists %d domains after delete", n)
	}
	if e.contract.Checked() < 15 {
		t.Errorf("only %d responses checked against the OpenAPI description", e.contract.Checked())
	}
}

func TestDomainRecordsPaginate(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.createDomain(e.a, "many.test", "")
	for i := range 246 {
		e.createRecord(e.a, "many.test", rec{Type: "A", Name: fmt.Sprintf("h%03d", i), Data: "127.1.0.1"})
	}
	// 4 default records + 246 = 250: two pages of 200.
	seen := map[int]int{}
	var pages []int
	opt := &godo.ListOptions{Page: 1, PerPage: 200}
	for {
		rs, resp, err := e.a.Domains.Records(ctx, "many.test", opt)
		if err != nil {
			t.Fatal(err)
		}
		pages = append(pages, len(rs))
		for _, r := range rs {
			seen[r.ID]++
		}
		if resp.Links == nil || resp.Links.IsLastPage() {
			break
		}
		cur, err := resp.Links.CurrentPage()
		if err != nil {
			t.Fatal(err)
		}
		opt.Page = cur + 1
	}
	if diff := cmp.Diff(pages, []int{200, 50}); diff != "" {
		t.Errorf("page sizes (-got +want):\n%s", diff)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("record %d seen %d times", id, n)
		}
	}
	if len(seen) != 250 {
		t.Errorf("saw %d records, want 250", len(seen))
	}
	r := e.raw(t, "GET", "v2/domains/many.test/records?per_page=200&page=2", tokenA, "")
	var body struct {
		Links struct{ Pages map[string]string }
		Meta  struct{ Total int }
	}
	if err := json.Unmarshal([]byte(r.body), &body); err != nil {
		t.Fatal(err)
	}
	u := func(page int) string {
		return fmt.Sprintf("%sv2/domains/many.test/records?page=%d&per_page=200", e.URL, page)
	}
	if diff := cmp.Diff(body.Links.Pages, map[string]string{"first": u(1), "prev": u(1)}); diff != "" || body.Meta.Total != 250 {
		t.Errorf("page 2: meta.total %d, links.pages (-got +want):\n%s", body.Meta.Total, diff)
	}
}

func TestDomainValidation(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.createDomain(e.a, "t.genesis.test", "")
	e.createRecord(e.a, "t.genesis.test", rec{Type: "A", Name: "ws-a", Data: "127.1.0.5"})
	e.createDomain(e.b, "bravo.test", "")

	domains := []struct {
		name   string
		req    godo.DomainCreateRequest
		status int
		msg    string
	}{
		{"no name", godo.DomainCreateRequest{}, 422, "name is required"},
		{"one label", godo.DomainCreateRequest{Name: "localhost"}, 422, `name "localhost" is invalid`},
		{"trailing dot", godo.DomainCreateRequest{Name: "x.test."}, 422, `name "x.test." is invalid`},
		{"bad ip", godo.DomainCreateRequest{Name: "x.test", IPAddress: "::1"}, 422, `ip_address "::1" is invalid: want an IPv4 address`},
		{"hosted by this account", godo.DomainCreateRequest{Name: "t.genesis.test"}, 422, `name "t.genesis.test" is already in use`},
		{"hosted by another account", godo.DomainCreateRequest{Name: "bravo.test"}, 422, `name "bravo.test" is already in use`},
	}
	for _, tc := range domains {
		t.Run("domain/"+tc.name, func(t *testing.T) {
			_, _, err := e.a.Domains.Create(ctx, &tc.req)
			if err == nil {
				t.Fatal("accepted")
			}
			st, msg := errStatus(t, err)
			if st != tc.status || !strings.Contains(msg, tc.msg) {
				t.Errorf("got %d %q, want %d containing %q", st, msg, tc.status, tc.msg)
			}
		})
	}

	recs := []struct {
		name string
		req  godo.DomainRecordEditRequest
		msg  string
	}{
		{"A with a name", godo.DomainRecordEditRequest{Type: "A", Name: "x", Data: "ws-a"}, `data "ws-a" is invalid: an A record's data must be an IPv4 address`},
		{"A with IPv6", godo.DomainRecordEditRequest{Type: "A", Name: "x", Data: "::1"}, "must be an IPv4 address"},
		{"AAAA with IPv4", godo.DomainRecordEditRequest{Type: "AAAA", Name: "x", Data: "127.0.0.1"}, "must be an IPv6 address"},
		{"CNAME without the dot", godo.DomainRecordEditRequest{Type: "CNAME", Name: "x", Data: "ws-a.t.genesis.test"}, `must be a fully qualified host name ending in a dot ("ws-a.t.genesis.test.")`},
		{"CNAME to an address", godo.DomainRecordEditRequest{Type: "CNAME", Name: "x", Data: "not a host."}, "must be a host name"},
		{"CNAME beside an A", godo.DomainRecordEditRequest{Type: "CNAME", Name: "ws-a", Data: "@"}, `name "ws-a" is invalid: a CNAME record cannot share its name with other records`},
		{"CNAME at the apex", godo.DomainRecordEditRequest{Type: "CNAME", Name: "@", Data: "other.test."}, `name "@" is invalid for a CNAME record`},
		{"fully qualified name", godo.DomainRecordEditRequest{Type: "A", Name: "x.t.genesis.test.", Data: "127.0.0.1"}, "record names are relative to the domain"},
		{"empty label", godo.DomainRecordEditRequest{Type: "A", Name: "a..b", Data: "127.0.0.1"}, `name "a..b" is invalid`},
		{"no name", godo.DomainRecordEditRequest{Type: "A", Data: "127.0.0.1"}, "name is required"},
		{"ttl below 30", godo.DomainRecordEditRequest{Type: "A", Name: "x", Data: "127.0.0.1", TTL: 29}, "ttl 29 is invalid: want at least 30 seconds"},
		{"no type", godo.DomainRecordEditRequest{Name: "x", Data: "127.0.0.1"}, "type is required"},
		{"unknown type", godo.DomainRecordEditRequest{Type: "PTR", Name: "x", Data: "x."}, `type "PTR" is invalid`},
		{"unsupported type", godo.DomainRecordEditRequest{Type: "MX", Name: "@", Data: "mail.test.", Priority: 10}, `type "MX" is not supported by the simulator`},
		{"SOA", godo.DomainRecordEditRequest{Type: "SOA", Name: "@", Data: "x", TTL: 60}, "only its ttl can be changed"},
		{"empty TXT", godo.DomainRecordEditRequest{Type: "TXT", Name: "x"}, "data is required for a TXT record"},
	}
	for _, tc := range recs {
		t.Run("record/"+tc.name, func(t *testing.T) {
			_, _, err := e.a.Domains.CreateRecord(ctx, "t.genesis.test", &tc.req)
			if err == nil {
				t.Fatal("accepted")
			}
			st, msg := errStatus(t, err)
			if st != 422 || !strings.Contains(msg, tc.msg) {
				t.Errorf("got %d %q, want 422 containing %q", st, msg, tc.msg)
			}
		})
	}

	// SOA: only the ttl changes, and it cannot be deleted.
	soa, _, err := e.a.Domains.RecordsByType(ctx, "t.genesis.test", "SOA", nil)
	if err != nil || len(soa) != 1 {
		t.Fatalf("SOA records %+v %v", soa, err)
	}
	upd, _, err := e.a.Domains.EditRecord(ctx, "t.genesis.test", soa[0].ID, &godo.DomainRecordEditRequest{Type: "SOA", TTL: 300})
	if err != nil || upd.TTL != 300 {
		t.Errorf("SOA ttl change: %+v %v", upd, err)
	}
	_, _, err = e.a.Domains.EditRecord(ctx, "t.genesis.test", soa[0].ID, &godo.DomainRecordEditRequest{Type: "SOA", Name: "x"})
	if st, msg := errStatus(t, err); st != 422 || !strings.Contains(msg, "only the ttl of the SOA record can be changed") {
		t.Errorf("SOA rename: %d %q", st, msg)
	}
	_, err = e.a.Domains.DeleteRecord(ctx, "t.genesis.test", soa[0].ID)
	if st, msg := errStatus(t, err); st != 422 || msg != "the SOA record cannot be deleted" {
		t.Errorf("SOA delete: %d %q", st, msg)
	}
	// A record's type does not change.
	all, _, _ := e.a.Domains.RecordsByName(ctx, "t.genesis.test", "ws-a.t.genesis.test", nil)
	_, _, err = e.a.Domains.EditRecord(ctx, "t.genesis.test", all[0].ID, &godo.DomainRecordEditRequest{Type: "AAAA", Data: "::1"})
	if st, msg := errStatus(t, err); st != 422 || !strings.Contains(msg, "type cannot be changed") {
		t.Errorf("type change: %d %q", st, msg)
	}
	// A bad filter or body is refused with the field named.
	for _, tc := range []struct{ method, path, body, want string }{
		{"GET", "v2/domains/t.genesis.test/records?type=BOGUS", "", `"message":"type: must be one of`},
		{"POST", "v2/domains/t.genesis.test/records", `{"type":"A","name":"x","data":"127.0.0.1","ttl":"60"}`, `invalid value for \"ttl\": expected number, got string`},
		{"POST", "v2/domains", `{"name":5}`, `invalid value for \"name\": expected string, got number`},
	} {
		if r := e.raw(t, tc.method, tc.path, tokenA, tc.body); r.status/100 != 4 || !strings.Contains(r.body, tc.want) {
			t.Errorf("%s %s: %d %s, want %q", tc.method, tc.path, r.status, r.body, tc.want)
		}
	}
}

func TestDomainNotFound(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.createDomain(e.a, "alpha.test", "")
	e.createDomain(e.a, "other.test", "")
	e.createDomain(e.b, "bravo.test", "")
	r := e.createRecord(e.a, "alpha.test", rec{Type: "A", Name: "x", Data: "127.0.0.1"})

	tests := []struct {
		name string
		call func() error
	}{
		{"unknown domain", func() error { _, _, err := e.a.Domains.Get(ctx, "nope.test"); return err }},
		{"another account's domain", func() error { _, _, err := e.a.Domains.Get(ctx, "bravo.test"); return err }},
		{"delete another account's domain", func() error { _, err := e.a.Domains.Delete(ctx, "bravo.test"); return err }},
		{"records of an unknown domain", func() error { _, _, err := e.a.Domains.Records(ctx, "nope.test", nil); return err }},
		{"record in another of its domains", func() error { _, _, err := e.a.Domains.Record(ctx, "other.test", r.ID); return err }},
		{"record by another account", func() error { _, _, err := e.b.Domains.Record(ctx, "alpha.test", r.ID); return err }},
		{"unknown record", func() error { _, _, err := e.a.Domains.Record(ctx, "alpha.test", 1); return err }},
		{"edit unknown record", func() error {
			_, _, err := e.a.Domains.EditRecord(ctx, "alpha.test", 1, &godo.DomainRecordEditRequest{Type: "A", Data: "127.0.0.2"})
			return err
		}},
		{"delete unknown record", func() error { _, err := e.a.Domains.DeleteRecord(ctx, "alpha.test", 1); return err }},
		{"create record in another account's domain", func() error {
			_, _, err := e.a.Domains.CreateRecord(ctx, "bravo.test", &godo.DomainRecordEditRequest{Type: "A", Name: "x", Data: "127.0.0.1"})
			return err
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if err == nil {
				t.Fatal("no error")
			}
			if st, _ := errStatus(t, err); st != http.StatusNotFound {
				t.Errorf("status %d, want 404", st)
			}
		})
	}
	if got := e.raw(t, "GET", "v2/domains/alpha.test/records/abc", tokenA, ""); got.status != 404 {
		t.Errorf("non-numeric record id: %d", got.status)
	}
}

func TestDomainRateLimitAndFaults(t *testing.T) {
	e := start(t, func(c *dosim.Config) { c.Limits.RatePerMinute, c.Limits.RatePerHour = 100, 1000 })
	ctx := context.Background()
	e.createDomain(e.a, "f.test", "")
	for _, path := range []string{"v2/domains", "v2/domains/f.test", "v2/domains/f.test/records", "v2/reserved_ips", "v2/domains/nope.test"} {
		r := e.raw(t, "GET", path, tokenA, "")
		for _, h := range []string{"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "X-Request-Id"} {
			if r.header.Get(h) == "" {
				t.Errorf("GET %s: no %s header", path, h)
			}
		}
		if got := r.header.Get("RateLimit-Limit"); got != "1000" {
			t.Errorf("GET %s: RateLimit-Limit %q, want 1000", path, got)
		}
	}
	_, resp, err := e.a.Domains.List(ctx, nil)
	if err != nil || resp.Rate.Limit != 1000 || resp.Rate.Remaining >= 1000 {
		t.Errorf("godo rate: %+v %v", resp.Rate, err)
	}

	// Two 503s on record creation: godo's retries see them and then succeed.
	e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "POST /v2/domains/*/records", Count: 2, Status: 503})
	if _, _, err := e.a.Domains.CreateRecord(ctx, "f.test", &godo.DomainRecordEditRequest{Type: "A", Name: "x", Data: "127.0.0.1"}); err != nil {
		t.Errorf("create after two 503s: %v", err)
	}
	// More failures than retries reach the caller, with the fault's status.
	e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "GET /v2/domains/*/records", Count: 4, Status: 500, Message: "zone store down"})
	_, _, err = e.a.Domains.Records(ctx, "f.test", nil)
	if st, msg := errStatus(t, err); st != 500 || msg != "zone store down" {
		t.Errorf("records under fault: %d %q", st, msg)
	}
	// A partial listing cuts the page.
	e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultPartialList, Route: "GET /v2/domains/f.test/records", OKPages: 1, Truncate: true, Count: 1})
	rs, _, err := e.a.Domains.Records(ctx, "f.test", nil)
	if err != nil || len(rs) != 2 {
		t.Errorf("truncated page: %d records, %v; want 2 of 5", len(rs), err)
	}
	// A fault limited to the reserved IP routes leaves domains alone.
	e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "* /v2/reserved_ips*", Status: 403, Count: 1})
	if _, _, err := e.a.Domains.Get(ctx, "f.test"); err != nil {
		t.Errorf("domain get under a reserved IP fault: %v", err)
	}
	_, _, err = e.a.ReservedIPs.List(ctx, nil)
	if st, _ := errStatus(t, err); st != 403 {
		t.Errorf("reserved IPs under fault: %d", st)
	}
}

func TestReservedIPs(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	web := e.create(e.a, "web", "genesis") // fra1
	other, _, err := e.a.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: "elsewhere", Region: "nyc3", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}})
	if err != nil {
		t.Fatal(err)
	}
	theirs := e.create(e.b, "theirs")
	e.Sim.Advance(30 * time.Second)

	rip, _, err := e.a.ReservedIPs.Create(ctx, &godo.ReservedIPCreateRequest{Region: "fra1"})
	if err != nil {
		t.Fatal(err)
	}
	if rip.IP != "127.2.0.1" || rip.Droplet != nil || rip.Region == nil || rip.Region.Slug != "fra1" || rip.Locked {
		t.Errorf("created %+v", rip)
	}

	act, _, err := e.a.ReservedIPActions.Assign(ctx, rip.IP, web.ID)
	if err != nil {
		t.Fatal(err)
	}
	if act.Type != "assign_ip" || act.Status != "in-progress" || act.ResourceType != "reserved_ip" {
		t.Errorf("assign action %+v", act)
	}
	got, _, err := e.a.ReservedIPs.Get(ctx, rip.IP)
	if err != nil || !got.Locked || got.Droplet != nil {
		t.Errorf("during assignment: %+v %v; want locked, not yet assigned", got, err)
	}
	_, _, err = e.a.ReservedIPActions.Unassign(ctx, rip.IP)
	if st, msg := errStatus(t, err); st != 422 || msg != "The reserved IP already has a pending event." {
		t.Errorf("second action: %d %q", st, msg)
	}
	e.Sim.Advance(10 * time.Second)
	done, _, err := e.a.ReservedIPActions.Get(ctx, rip.IP, act.ID)
	if err != nil || done.Status != "completed" {
		t.Errorf("assign after 10s: %+v %v", done, err)
	}
	if viaActions, _, err := e.a.Actions.Get(ctx, act.ID); err != nil || viaActions.Status != "completed" {
		t.Errorf("/v2/actions/%d: %+v %v", act.ID, viaActions, err)
	}
	got, _, err = e.a.ReservedIPs.Get(ctx, rip.IP)
	if err != nil || got.Locked || got.Droplet == nil || got.Droplet.ID != web.ID {
		t.Errorf("after assignment: %+v %v", got, err)
	}

	// 422s: another region, another account, a droplet that has one,
	// an unknown droplet; 404 for another account's address.
	second, _, err := e.a.ReservedIPs.Create(ctx, &godo.ReservedIPCreateRequest{Region: "fra1"})
	if err != nil || second.IP != "127.2.0.2" {
		t.Fatalf("second reserved IP %+v %v", second, err)
	}
	for _, tc := range []struct {
		name    string
		droplet int
		msg     string
	}{
		{"other region", other.ID, "the droplet is in nyc3 and the reserved IP in fra1"},
		{"other account", theirs.ID, "no such droplet"},
		{"unknown droplet", 12345, "no such droplet"},
		{"droplet has one", web.ID, "the droplet already has reserved IP 127.2.0.1"},
	} {
		_, _, err := e.a.ReservedIPActions.Assign(ctx, second.IP, tc.droplet)
		if st, msg := errStatus(t, err); st != 422 || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: %d %q, want 422 %q", tc.name, st, msg, tc.msg)
		}
	}
	if _, _, err := e.b.ReservedIPs.Get(ctx, rip.IP); err == nil {
		t.Error("another account sees the reserved IP")
	} else if st, _ := errStatus(t, err); st != 404 {
		t.Errorf("another account: %d, want 404", st)
	}
	_, _, err = e.a.ReservedIPs.Create(ctx, &godo.ReservedIPCreateRequest{Region: "mars1"})
	if st, msg := errStatus(t, err); st != 422 || !strings.Contains(msg, `region "mars1" is invalid`) {
		t.Errorf("bad region: %d %q", st, msg)
	}
	_, _, err = e.a.ReservedIPActions.Unassign(ctx, second.IP)
	if st, msg := errStatus(t, err); st != 422 || msg != "The reserved IP is not assigned to a Droplet." {
		t.Errorf("unassign unassigned: %d %q", st, msg)
	}

	// Unassign, then create one assigned to a droplet from the start.
	un, _, err := e.a.ReservedIPActions.Unassign(ctx, rip.IP)
	if err != nil || un.Type != "unassign_ip" {
		t.Fatalf("unassign %+v %v", un, err)
	}
	e.Sim.Advance(10 * time.Second)
	if got, _, _ := e.a.ReservedIPs.Get(ctx, rip.IP); got.Droplet != nil {
		t.Errorf("still assigned after unassign: %+v", got.Droplet)
	}
	withDroplet, _, err := e.a.ReservedIPs.Create(ctx, &godo.ReservedIPCreateRequest{DropletID: web.ID})
	if err != nil || withDroplet.Region.Slug != "fra1" || withDroplet.Droplet != nil || !withDroplet.Locked {
		t.Fatalf("create for droplet %+v %v", withDroplet, err)
	}
	e.Sim.Advance(10 * time.Second)
	if got, _, _ := e.a.ReservedIPs.Get(ctx, withDroplet.IP); got.Droplet == nil || got.Droplet.ID != web.ID {
		t.Errorf("created for droplet, after 10s: %+v", got)
	}

	// Destroying the droplet unassigns its reserved IP.
	if _, err := e.a.Droplets.Delete(ctx, web.ID); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := e.a.ReservedIPs.Get(ctx, withDroplet.IP); got.Droplet != nil {
		t.Errorf("reserved IP of a destroyed droplet: %+v", got.Droplet)
	}

	list, resp, err := e.a.ReservedIPs.List(ctx, nil)
	var ips []string
	for _, x := range list {
		ips = append(ips, x.IP)
	}
	if err != nil || resp.Meta.Total != 3 || !cmp.Equal(ips, []string{"127.2.0.1", "127.2.0.2", "127.2.0.3"}) {
		t.Errorf("list: %v total %+v %v", ips, resp.Meta, err)
	}
	for _, ip := range ips {
		if _, err := e.a.ReservedIPs.Delete(ctx, ip); err != nil {
			t.Errorf("delete %s: %v", ip, err)
		}
	}
	if _, _, err := e.a.ReservedIPs.Get(ctx, rip.IP); err == nil {
		t.Error("deleted reserved IP still found")
	}
}

func TestReservedIPActionFault(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	web := e.create(e.a, "web")
	e.Sim.Advance(30 * time.Second)
	rip, _, err := e.a.ReservedIPs.Create(ctx, &godo.ReservedIPCreateRequest{Region: "fra1"})
	if err != nil {
		t.Fatal(err)
	}
	e.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultActionError, Account: "alpha"})
	act, _, err := e.a.ReservedIPActions.Assign(ctx, rip.IP, web.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.Sim.Advance(10 * time.Second)
	got, _, err := e.a.ReservedIPActions.Get(ctx, rip.IP, act.ID)
	if err != nil || got.Status != "errored" {
		t.Errorf("faulted assign: %+v %v", got, err)
	}
	if r, _, _ := e.a.ReservedIPs.Get(ctx, rip.IP); r.Droplet != nil {
		t.Errorf("an errored assign assigned: %+v", r.Droplet)
	}
	// Another reserved IP's action id is not found under this address.
	if _, _, err := e.a.ReservedIPActions.Get(ctx, "127.2.0.99", act.ID); err == nil {
		t.Error("action found under another address")
	}
}

func TestDomainsAndReservedIPsSurviveRestart(t *testing.T) {
	statePath := t.TempDir() + "/state.json"
	cfg := func(c *dosim.Config) { c.StatePath = statePath }
	ctx := context.Background()
	e := start(t, cfg)
	e.createDomain(e.a, "keep.test", "127.0.0.7")
	e.createRecord(e.a, "keep.test", rec{Type: "CNAME", Name: "www", Data: "@"})
	if _, _, err := e.a.ReservedIPs.Create(ctx, &godo.ReservedIPCreateRequest{Region: "ams3"}); err != nil {
		t.Fatal(err)
	}
	want := records(t, e.a, "keep.test")
	if err := e.Sim.Close(); err != nil {
		t.Fatal(err)
	}

	e2 := start(t, cfg)
	if diff := cmp.Diff(records(t, e2.a, "keep.test"), want); diff != "" {
		t.Errorf("records after restart (-got +want):\n%s", diff)
	}
	rips, _, err := e2.a.ReservedIPs.List(ctx, nil)
	if err != nil || len(rips) != 1 || rips[0].IP != "127.2.0.1" {
		t.Errorf("reserved IPs after restart: %+v %v", rips, err)
	}
	// New ids and addresses continue where they stopped.
	if r, _, err := e2.a.ReservedIPs.Create(ctx, &godo.ReservedIPCreateRequest{Region: "ams3"}); err != nil || r.IP != "127.2.0.2" {
		t.Errorf("next reserved IP %+v %v", r, err)
	}
	r2 := e2.createRecord(e2.a, "keep.test", rec{Type: "TXT", Name: "t", Data: "x"})
	var ids []int
	for _, r := range e2.Sim.Snapshot().Domains[0]["records"].([]any) {
		ids = append(ids, r.(map[string]any)["id"].(int))
	}
	sort.Ints(ids)
	if ids[len(ids)-1] != r2.ID || len(ids) != len(want)+1 {
		t.Errorf("record ids after restart %v, new %d", ids, r2.ID)
	}
}
