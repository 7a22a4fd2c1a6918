package cloud

import (
	"context"
	"net"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
)

// zoneEnv is a simulator hosting zone t.genesis.test in account a, with
// its DNS served on loopback.
func zoneEnv(t *testing.T) (*env, *net.Resolver) {
	t.Helper()
	e := newEnv(t, envOpts{sim: unlimitedSim()})
	if _, _, err := e.client("a").Domains.Create(context.Background(), &godo.DomainCreateRequest{Name: "t.genesis.test"}); err != nil {
		t.Fatal(err)
	}
	return e, dosimtest.Resolver(dosimtest.StartDNS(t, e.sim))
}

func lookup(t *testing.T, res *net.Resolver, name string) []string {
	t.Helper()
	ips, err := res.LookupHost(context.Background(), name)
	if err != nil {
		return nil
	}
	sort.Strings(ips)
	return ips
}

// TestPointName: a name is created, moved, repeated without a second
// record, rid of a leftover duplicate, given and stripped of an AAAA, and
// removed — each seen by a client resolving it through DNS — and no other
// name of the zone is touched.
func TestPointName(t *testing.T) {
	e, res := zoneEnv(t)
	ctx := context.Background()
	n := Name{Account: "a", Zone: "t.genesis.test", Host: "ws-a", TTL: 60}
	other := &godo.DomainRecordEditRequest{Type: "A", Name: "ws-b", Data: "127.1.0.50", TTL: 60}
	if _, _, err := e.client("a").Domains.CreateRecord(ctx, "t.genesis.test", other); err != nil {
		t.Fatal(err)
	}
	records := func(typ string) []godo.DomainRecord {
		rs, _, err := e.client("a").Domains.RecordsByTypeAndName(ctx, "t.genesis.test", typ, "ws-a.t.genesis.test", &godo.ListOptions{PerPage: 200})
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	step := func(name, ipv4, ipv6 string, want []string) {
		t.Helper()
		if err := e.pool.PointName(ctx, n, ipv4, ipv6); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := lookup(t, res, n.FQDN()); !slices.Equal(got, want) {
			t.Errorf("%s: %s resolves to %v, want %v", name, n.FQDN(), got, want)
		}
		if a := records("A"); len(a) > 1 {
			t.Errorf("%s: %d A records", name, len(a))
		}
	}
	step("create", "127.1.0.7", "", []string{"127.1.0.7"})
	step("again", "127.1.0.7", "", []string{"127.1.0.7"})
	step("move", "127.1.0.8", "", []string{"127.1.0.8"})
	// A leftover of an interrupted try: a second A record of the name.
	if _, _, err := e.client("a").Domains.CreateRecord(ctx, "t.genesis.test", &godo.DomainRecordEditRequest{Type: "A", Name: "ws-a", Data: "127.1.0.99", TTL: 60}); err != nil {
		t.Fatal(err)
	}
	step("duplicate removed", "127.1.0.8", "", []string{"127.1.0.8"})
	step("with ipv6", "127.1.0.8", "2001:db8::8", []string{"127.1.0.8", "2001:db8::8"})
	step("ipv6 dropped", "127.1.0.8", "", []string{"127.1.0.8"})
	if rs := records("A"); len(rs) != 1 || rs[0].TTL != 60 {
		t.Errorf("A records %+v, want one with ttl 60", rs)
	}
	n.TTL = 300
	step("ttl changed", "127.1.0.8", "", []string{"127.1.0.8"})
	if rs := records("A"); len(rs) != 1 || rs[0].TTL != 300 {
		t.Errorf("after a ttl change %+v", rs)
	}
	step("removed", "", "", nil)
	if got := lookup(t, res, "ws-b.t.genesis.test"); !slices.Equal(got, []string{"127.1.0.50"}) {
		t.Errorf("another name: %v", got)
	}
	all, err := e.pool.ZoneRecords(ctx, "a", "t.genesis.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 1 || all[0].Host != "ws-b" || all[0].Data != "127.1.0.50" {
		t.Errorf("zone records %+v, want only ws-b", all)
	}
	// Bad input is refused before any request.
	if err := e.pool.PointName(ctx, n, "2001:db8::1", ""); err == nil || KindOf(err) != KindTerminal {
		t.Errorf("an IPv6 as the A record: %v", err)
	}
}

// TestZoneRecordsPaginates: a zone larger than one page is listed whole.
func TestZoneRecordsPaginates(t *testing.T) {
	e, _ := zoneEnv(t)
	ctx := context.Background()
	for i := range 230 {
		n := Name{Account: "a", Zone: "t.genesis.test", Host: "ws-" + string(rune('a'+i/26)) + string(rune('a'+i%26)), TTL: 60}
		if err := e.pool.PointName(ctx, n, "127.1.0.9", ""); err != nil {
			t.Fatal(err)
		}
	}
	all, err := e.pool.ZoneRecords(ctx, "a", "t.genesis.test")
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 230 {
		t.Errorf("zone records: %d, want 230", len(all))
	}
}

// TestPointNameRetriesAndFails: a 503 is retried; a persistent fault is
// the caller's error (the executor leaves the record for a repair).
func TestPointNameRetriesAndFails(t *testing.T) {
	e, res := zoneEnv(t)
	ctx := context.Background()
	n := Name{Account: "a", Zone: "t.genesis.test", Host: "ws-a", TTL: 60}
	if _, err := e.sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "POST /v2/domains/*/records", Count: 1}); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.PointName(ctx, n, "127.1.0.7", ""); err != nil {
		t.Fatalf("after one 503: %v", err)
	}
	if got := lookup(t, res, n.FQDN()); !slices.Equal(got, []string{"127.1.0.7"}) {
		t.Errorf("resolves to %v", got)
	}
	if _, err := e.sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "PUT /v2/domains/*/records/*", Count: 100}); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.PointName(ctx, n, "127.1.0.8", ""); err == nil {
		t.Fatal("a persistent fault: no error")
	}
	if got := lookup(t, res, n.FQDN()); !slices.Equal(got, []string{"127.1.0.7"}) {
		t.Errorf("after a failed move the name says %v, want the old address", got)
	}
}

// TestReservedIP: a reserved IP is made for a droplet, moved to the next
// one, kept when it is already there, replaced when it vanished, and
// released (twice is fine).
func TestReservedIP(t *testing.T) {
	e := newEnv(t, envOpts{sim: unlimitedSim()})
	ctx := context.Background()
	r1, err := e.pool.Execute(ctx, createAction("acme", "a"), ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a2 := createAction("acme", "a")
	a2.Droplet, a2.Gen = "genesis-acme-2", 2
	r2, err := e.pool.Execute(ctx, a2, ExecOptions{})
	if err != nil {
		t.Fatal(err)
	}
	assigned := func(ip string) int {
		t.Helper()
		e.sim.Advance(time.Minute) // the assign action completes
		r, _, err := e.client("a").ReservedIPs.Get(ctx, ip)
		if err != nil {
			t.Fatal(err)
		}
		if r.Droplet == nil {
			return 0
		}
		return r.Droplet.ID
	}
	ip, err := e.pool.HoldReservedIP(ctx, "a", "nyc3", "", r1.DropletID)
	if err != nil || ip == "" {
		t.Fatalf("reserve: %q %v", ip, err)
	}
	if got := assigned(ip); got != r1.DropletID {
		t.Errorf("reserved ip on droplet %d, want %d", got, r1.DropletID)
	}
	if again, err := e.pool.HoldReservedIP(ctx, "a", "nyc3", ip, r1.DropletID); err != nil || again != ip {
		t.Errorf("again: %q %v", again, err)
	}
	if moved, err := e.pool.HoldReservedIP(ctx, "a", "nyc3", ip, r2.DropletID); err != nil || moved != ip {
		t.Fatalf("move: %q %v", moved, err)
	}
	if got := assigned(ip); got != r2.DropletID {
		t.Errorf("after the move on droplet %d, want %d", got, r2.DropletID)
	}
	if err := e.pool.ReleaseReservedIP(ctx, "a", ip); err != nil {
		t.Fatal(err)
	}
	if err := e.pool.ReleaseReservedIP(ctx, "a", ip); err != nil {
		t.Errorf("second release: %v", err)
	}
	fresh, err := e.pool.HoldReservedIP(ctx, "a", "nyc3", ip, r2.DropletID)
	if err != nil || fresh == "" {
		t.Fatalf("a released ip is replaced: %q %v", fresh, err)
	}
	if got := assigned(fresh); got != r2.DropletID {
		t.Errorf("new reserved ip on droplet %d, want %d", got, r2.DropletID)
	}
}
