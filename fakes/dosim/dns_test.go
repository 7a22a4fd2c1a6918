package dosim_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/digitalocean/godo"
	"github.com/google/go-cmp/cmp"
	"github.com/miekg/dns"

	"genesis.dev/fleet/fakes/dosim"
	"genesis.dev/fleet/fakes/dosim/dosimtest"
)

// exchange sends one query the way Pebble does (plain DNS, no EDNS) over
// network ("udp" or "tcp").
func exchange(t *testing.T, addr, network, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: network}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return r
}

func sortedStrings(in []string) []string {
	out := slices.Clone(in)
	slices.Sort(out)
	return out
}

func TestDNSServesHostedZones(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	addr := dosimtest.StartDNS(t, e.Sim)
	res := dosimtest.Resolver(addr)

	// Two zones in two accounts: the server answers for both.
	e.createDomain(e.a, "t.genesis.test", "")
	wsA := e.createRecord(e.a, "t.genesis.test", rec{Type: "A", Name: "ws-a", Data: "127.1.0.5", TTL: 60})
	e.createRecord(e.a, "t.genesis.test", rec{Type: "AAAA", Name: "ws-a", Data: "::1", TTL: 60})
	e.createRecord(e.a, "t.genesis.test", rec{Type: "TXT", Name: "_acme-challenge.ws-a", Data: "challenge-token", TTL: 30})
	e.createRecord(e.a, "t.genesis.test", rec{Type: "CNAME", Name: "alias", Data: "ws-a.t.genesis.test."})
	e.createDomain(e.b, "acme.test", "127.3.0.1")
	e.createRecord(e.b, "acme.test", rec{Type: "CNAME", Name: "track", Data: "ws-a.t.genesis.test.", TTL: 120})
	e.createRecord(e.b, "acme.test", rec{Type: "CNAME", Name: "out", Data: "example.org."})

	t.Run("A and AAAA", func(t *testing.T) {
		got, err := res.LookupHost(ctx, "ws-a.t.genesis.test")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(sortedStrings(got), []string{"127.1.0.5", "::1"}); diff != "" {
			t.Errorf("(-got +want):\n%s", diff)
		}
	})
	t.Run("CNAME across two hosted zones", func(t *testing.T) {
		cname, err := res.LookupCNAME(ctx, "track.acme.test")
		if err != nil || cname != "ws-a.t.genesis.test." {
			t.Errorf("LookupCNAME = %q, %v", cname, err)
		}
		ips, err := res.LookupIP(ctx, "ip4", "track.acme.test")
		if err != nil || len(ips) != 1 || ips[0].String() != "127.1.0.5" {
			t.Errorf("LookupIP(track.acme.test) = %v, %v; want the A of ws-a", ips, err)
		}
		r := exchange(t, addr, "udp", "track.acme.test", dns.TypeA)
		var got []string
		for _, rr := range r.Answer {
			got = append(got, strings.ReplaceAll(rr.String(), "\t", " "))
		}
		want := []string{"track.acme.test. 120 IN CNAME ws-a.t.genesis.test.", "ws-a.t.genesis.test. 60 IN A 127.1.0.5"}
		if diff := cmp.Diff(got, want); diff != "" || !r.Authoritative || r.Rcode != dns.RcodeSuccess {
			t.Errorf("answer (-got +want):\n%s\naa=%v rcode=%s", diff, r.Authoritative, dns.RcodeToString[r.Rcode])
		}
	})
	t.Run("CNAME out of our zones is left to the resolver", func(t *testing.T) {
		r := exchange(t, addr, "udp", "out.acme.test", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*dns.CNAME).Target != "example.org." {
			t.Errorf("answer %v", r)
		}
	})
	t.Run("TXT", func(t *testing.T) {
		txt, err := res.LookupTXT(ctx, "_acme-challenge.ws-a.t.genesis.test")
		if err != nil || !cmp.Equal(txt, []string{"challenge-token"}) {
			t.Errorf("LookupTXT = %q, %v", txt, err)
		}
	})
	t.Run("TTL is the record's", func(t *testing.T) {
		r := exchange(t, addr, "udp", "ws-a.t.genesis.test", dns.TypeAAAA)
		if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 60 {
			t.Errorf("answer %v, want one AAAA with ttl 60", r.Answer)
		}
	})
	t.Run("NXDOMAIN with the SOA", func(t *testing.T) {
		_, err := res.LookupHost(ctx, "nope.t.genesis.test")
		var de *net.DNSError
		if !errors.As(err, &de) || !de.IsNotFound {
			t.Errorf("LookupHost(nope) = %v, want not found", err)
		}
		r := exchange(t, addr, "udp", "nope.t.genesis.test", dns.TypeA)
		if r.Rcode != dns.RcodeNameError || !r.Authoritative || len(r.Ns) != 1 {
			t.Fatalf("rcode %s aa %v authority %v", dns.RcodeToString[r.Rcode], r.Authoritative, r.Ns)
		}
		soa, ok := r.Ns[0].(*dns.SOA)
		if !ok || soa.Hdr.Name != "t.genesis.test." || soa.Ns != "ns1.digitalocean.com." || soa.Mbox != "hostmaster.t.genesis.test." {
			t.Errorf("authority %v", r.Ns[0])
		}
	})
	t.Run("known name without the type: NOERROR, empty", func(t *testing.T) {
		r := exchange(t, addr, "udp", "ws-a.t.genesis.test", dns.TypeMX)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 || len(r.Ns) != 1 {
			t.Errorf("rcode %s answer %v authority %v", dns.RcodeToString[r.Rcode], r.Answer, r.Ns)
		}
		// An empty non-terminal (a name above _acme-challenge.ws-a) exists too.
		r = exchange(t, addr, "udp", "_acme-challenge.ws-a.t.genesis.test", dns.TypeA)
		if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
			t.Errorf("TXT-only name asked for A: rcode %s answer %v", dns.RcodeToString[r.Rcode], r.Answer)
		}
	})
	t.Run("outside every zone: REFUSED", func(t *testing.T) {
		for _, name := range []string{"example.org", "genesis.test", "test"} {
			r := exchange(t, addr, "udp", name, dns.TypeA)
			if r.Rcode != dns.RcodeRefused || r.Authoritative || len(r.Answer) != 0 {
				t.Errorf("%s: rcode %s aa %v", name, dns.RcodeToString[r.Rcode], r.Authoritative)
			}
		}
		if _, err := res.LookupHost(ctx, "example.org"); err == nil {
			t.Error("resolved a name outside the hosted zones")
		}
	})
	t.Run("apex SOA and NS over TCP", func(t *testing.T) {
		r := exchange(t, addr, "tcp", "acme.test", dns.TypeNS)
		var ns []string
		for _, rr := range r.Answer {
			ns = append(ns, rr.(*dns.NS).Ns)
		}
		if diff := cmp.Diff(ns, []string{"ns1.digitalocean.com.", "ns2.digitalocean.com.", "ns3.digitalocean.com."}); diff != "" {
			t.Errorf("NS (-got +want):\n%s", diff)
		}
		r = exchange(t, addr, "tcp", "acme.test", dns.TypeSOA)
		if len(r.Answer) != 1 || r.Answer[0].Header().Rrtype != dns.TypeSOA || r.Answer[0].Header().Ttl != 1800 {
			t.Errorf("SOA %v", r.Answer)
		}
		ips, err := res.LookupHost(ctx, "acme.test")
		if err != nil || !cmp.Equal(ips, []string{"127.3.0.1"}) {
			t.Errorf("apex A (from ip_address) = %v, %v", ips, err)
		}
	})
	t.Run("an API change is seen by the next query", func(t *testing.T) {
		before := exchange(t, addr, "udp", "t.genesis.test", dns.TypeSOA).Answer[0].(*dns.SOA).Serial
		if _, _, err := e.a.Domains.EditRecord(ctx, "t.genesis.test", wsA.ID, &godo.DomainRecordEditRequest{Type: "A", Data: "127.1.0.99", TTL: 300}); err != nil {
			t.Fatal(err)
		}
		ips, err := res.LookupIP(ctx, "ip4", "track.acme.test")
		if err != nil || len(ips) != 1 || ips[0].String() != "127.1.0.99" {
			t.Errorf("after the edit: %v, %v", ips, err)
		}
		r := exchange(t, addr, "udp", "ws-a.t.genesis.test", dns.TypeA)
		if len(r.Answer) != 1 || r.Answer[0].Header().Ttl != 300 {
			t.Errorf("after the edit: %v", r.Answer)
		}
		after := exchange(t, addr, "udp", "t.genesis.test", dns.TypeSOA).Answer[0].(*dns.SOA).Serial
		if after <= before {
			t.Errorf("SOA serial %d after the edit, was %d", after, before)
		}
		if _, err := e.a.Domains.DeleteRecord(ctx, "t.genesis.test", wsA.ID); err != nil {
			t.Fatal(err)
		}
		if got, err := res.LookupIP(ctx, "ip4", "ws-a.t.genesis.test"); err == nil {
			t.Errorf("deleted A still resolves: %v", got)
		}
		if _, err := e.b.Domains.Delete(ctx, "acme.test"); err != nil {
			t.Fatal(err)
		}
		if r := exchange(t, addr, "udp", "track.acme.test", dns.TypeA); r.Rcode != dns.RcodeRefused {
			t.Errorf("deleted zone: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
		}
	})
}

func TestDNSNestedZonesAndLongAnswers(t *testing.T) {
	e := start(t)
	addr := dosimtest.StartDNS(t, e.Sim)
	// genesis.test (alpha) and t.genesis.test (bravo): the most specific
	// zone answers.
	e.createDomain(e.a, "genesis.test", "127.0.0.10")
	e.createRecord(e.a, "genesis.test", rec{Type: "A", Name: "x.t", Data: "127.0.0.11"})
	e.createDomain(e.b, "t.genesis.test", "")
	if r := exchange(t, addr, "udp", "x.t.genesis.test", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Errorf("x.t.genesis.test: rcode %s, want NXDOMAIN from the t.genesis.test zone", dns.RcodeToString[r.Rcode])
	}
	if r := exchange(t, addr, "udp", "genesis.test", dns.TypeA); len(r.Answer) != 1 {
		t.Errorf("apex of the parent: %v", r.Answer)
	}
	// A CNAME loop ends.
	e.createRecord(e.a, "genesis.test", rec{Type: "CNAME", Name: "l1", Data: "l2.genesis.test."})
	e.createRecord(e.a, "genesis.test", rec{Type: "CNAME", Name: "l2", Data: "l1.genesis.test."})
	if r := exchange(t, addr, "udp", "l1.genesis.test", dns.TypeA); len(r.Answer) != 2 {
		t.Errorf("loop: %v", r.Answer)
	}
	// Many records: a plain UDP answer is truncated, TCP carries it all.
	for i := range 60 {
		e.createRecord(e.a, "genesis.test", rec{Type: "TXT", Name: "big", Data: strings.Repeat("x", 40) + string(rune('a'+i%26))})
	}
	udp := exchange(t, addr, "udp", "big.genesis.test", dns.TypeTXT)
	tcp := exchange(t, addr, "tcp", "big.genesis.test", dns.TypeTXT)
	if !udp.Truncated || tcp.Truncated || len(tcp.Answer) != 60 {
		t.Errorf("udp truncated=%v, tcp truncated=%v with %d answers", udp.Truncated, tcp.Truncated, len(tcp.Answer))
	}
	// The Go resolver falls back to TCP by itself.
	txt, err := dosimtest.Resolver(addr).LookupTXT(context.Background(), "big.genesis.test")
	if err != nil || len(txt) != 60 {
		t.Errorf("LookupTXT: %d strings, %v", len(txt), err)
	}
}

func TestListenDNSRefusesNonLoopback(t *testing.T) {
	sim, err := dosim.New(dosim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sim.Close() })
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:53", "example.org:53", "127.0.0.1"} {
		if srv, err := sim.ListenDNS(addr); err == nil {
			srv.Close()
			t.Errorf("ListenDNS(%q) accepted", addr)
		}
	}
	srv, err := sim.ListenDNS("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Closed without being served: the port is free again.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := sim.ListenDNS(srv.Addr())
	if err != nil {
		t.Fatalf("port not released: %v", err)
	}
	again.Close()
}
