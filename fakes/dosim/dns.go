package dosim

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// The DNS server answers, authoritatively and over UDP and TCP on a
// loopback address, for every zone hosted through /v2/domains by any
// account, from the records as they are at the moment of the query (an
// API change is seen by the next query):
//
//   - a name with records of the asked type: those records, TTL = the
//     record's ttl;
//   - a name holding a CNAME (asked for another type): the CNAME and, while
//     the target is in a hosted zone, the target's answer (chains are
//     followed up to 8 links, as one server hosting every zone would);
//   - a name that exists without records of the type: NOERROR, no answer,
//     the zone's SOA in the authority section;
//   - a name under a hosted zone that does not exist: NXDOMAIN with the SOA;
//   - a name outside every hosted zone: REFUSED (not authoritative, no
//     recursion).
//
// The SOA comes from the zone's SOA record: ns1.digitalocean.com.
// hostmaster.<zone>. with a serial bumped on every record change.

// maxCNAMEChain bounds CNAME chasing inside hosted zones.
const maxCNAMEChain = 8

// DNSServer serves the simulator's hosted zones over UDP and TCP on one
// loopback address. Build it with Sim.ListenDNS, run it with Serve.
type DNSServer struct {
	sim  *Sim
	addr string
	udp  *dns.Server
	tcp  *dns.Server

	closeOnce sync.Once
	pc        net.PacketConn
	ln        net.Listener
}

// ListenDNS binds UDP and TCP on addr, which must be a loopback address
// ("127.0.0.1:0" picks a free port, the same for both protocols). Queries
// are answered once Serve runs.
func (s *Sim) ListenDNS(addr string) (*DNSServer, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dns listen address %q: %w", addr, err)
	}
	if host != "localhost" {
		ip, perr := netip.ParseAddr(host)
		if perr != nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("dns listen address %q: not a loopback address (the simulator's DNS server only listens on 127.0.0.0/8 or ::1)", addr)
		}
	}
	// With port 0 the UDP port is picked first and TCP must get the same
	// one; another process may hold it, so try a few times.
	var pc net.PacketConn
	var ln net.Listener
	for attempt := 0; ; attempt++ {
		pc, err = net.ListenPacket("udp", net.JoinHostPort(host, port))
		if err != nil {
			return nil, fmt.Errorf("dns listen udp: %w", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
		if port != "0" || attempt == 10 {
			return nil, fmt.Errorf("dns listen tcp: %w", err)
		}
	}
	d := &DNSServer{sim: s, addr: pc.LocalAddr().String(), pc: pc, ln: ln}
	h := dns.HandlerFunc(d.handle)
	d.udp = &dns.Server{PacketConn: pc, Handler: h}
	d.tcp = &dns.Server{Listener: ln, Handler: h, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	return d, nil
}

// Addr is the bound address, host:port (use it as Pebble's -dnsserver or a
// resolver's Dial target).
func (d *DNSServer) Addr() string { return d.addr }

// Serve answers queries until ctx is done, then stops both listeners and
// returns nil, or returns the first error a listener fails with.
func (d *DNSServer) Serve(ctx context.Context) error {
	started := make(chan struct{}, 2)
	errc := make(chan error, 2)
	for _, srv := range []*dns.Server{d.udp, d.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { errc <- srv.ActivateAndServe() }()
	}
	var first error
	running := 2
	// Shutdown before a server has started would fail and leave it
	// running, so wait for both to start (or fail) first.
	for n := 0; n < 2; n++ {
		select {
		case <-started:
		case err := <-errc:
			running--
			if first == nil {
				first = err
			}
		}
	}
	if first == nil {
		select {
		case <-ctx.Done():
		case err := <-errc:
			running--
			first = err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.udp.ShutdownContext(sctx)
	_ = d.tcp.ShutdownContext(sctx)
	for ; running > 0; running-- {
		<-errc
	}
	d.Close()
	if first != nil {
		return fmt.Errorf("dns serve: %w", first)
	}
	return nil
}

// Close releases the sockets of a server that was never served (Serve
// closes them itself).
func (d *DNSServer) Close() error {
	var err error
	d.closeOnce.Do(func() {
		err = errors.Join(ignoreClosed(d.pc.Close()), ignoreClosed(d.ln.Close()))
	})
	return err
}

func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (d *DNSServer) handle(w dns.ResponseWriter, r *dns.Msg) {
	m := d.sim.answerDNS(r)
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if opt := r.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), dns.MinMsgSize)
		}
		m.Truncate(size)
	}
	if err := w.WriteMsg(m); err != nil {
		d.sim.log.Debug("dns write", "err", err)
	}
}

// answerDNS builds the reply to one query from the current records.
func (s *Sim) answerDNS(r *dns.Msg) *dns.Msg {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = false
	if opt := r.IsEdns0(); opt != nil {
		m.SetEdns0(dns.DefaultMsgSize, false)
	}
	if r.Opcode != dns.OpcodeQuery {
		m.Rcode = dns.RcodeNotImplemented
		return m
	}
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m
	}
	q := r.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return m
	}
	name := strings.TrimSuffix(strings.ToLower(q.Name), ".")

	s.mu.Lock()
	defer s.mu.Unlock()
	zone := s.zoneForLocked(name)
	if zone == nil {
		m.Rcode = dns.RcodeRefused
		return m
	}
	m.Authoritative = true
	seen := map[string]bool{name: true}
	for hop := 0; ; hop++ {
		rel, _ := relativeName(name, zone.Name)
		recs := s.nameRecordsLocked(zone.Name, rel)
		if len(recs) == 0 {
			if !s.hasDescendantLocked(zone.Name, rel) {
				m.Rcode = dns.RcodeNameError
			}
			m.Ns = append(m.Ns, s.soaLocked(zone)...)
			return m
		}
		var cname *domainRecord
		var match []*domainRecord
		for _, rec := range recs {
			if rec.Type == "CNAME" {
				cname = rec
			}
			if q.Qtype == dns.TypeANY || dns.StringToType[rec.Type] == q.Qtype {
				match = append(match, rec)
			}
		}
		if cname != nil && q.Qtype != dns.TypeCNAME && q.Qtype != dns.TypeANY {
			m.Answer = append(m.Answer, recordRR(zone, cname))
			target := strings.TrimSuffix(strings.ToLower(targetFQDN(zone, cname.Data)), ".")
			next := s.zoneForLocked(target)
			if next == nil || seen[target] || hop+1 >= maxCNAMEChain {
				// Outside our zones (the resolver follows it) or a loop.
				return m
			}
			seen[target] = true
			name, zone = target, next
			continue
		}
		if len(match) == 0 {
			m.Ns = append(m.Ns, s.soaLocked(zone)...)
			return m
		}
		for _, rec := range match {
			if rr := recordRR(zone, rec); rr != nil {
				m.Answer = append(m.Answer, rr)
			}
		}
		return m
	}
}

// zoneForLocked finds the most specific hosted zone containing name (lower
// case, no trailing dot).
func (s *Sim) zoneForLocked(name string) *domain {
	for cand := name; cand != ""; {
		if d := s.st.Domains[cand]; d != nil {
			return d
		}
		_, rest, ok := strings.Cut(cand, ".")
		if !ok {
			return nil
		}
		cand = rest
	}
	return nil
}

func (s *Sim) nameRecordsLocked(zone, rel string) []*domainRecord {
	var out []*domainRecord
	for _, rec := range s.zoneRecordsLocked(zone) {
		if rec.Name == rel {
			out = append(out, rec)
		}
	}
	return out
}

// hasDescendantLocked reports whether rel is an empty non-terminal: a name
// without records of its own above names with records (RFC 8020 says such
// a name exists).
func (s *Sim) hasDescendantLocked(zone, rel string) bool {
	if rel == "@" {
		return true
	}
	for _, rec := range s.st.Records {
		if rec.Domain == zone && strings.HasSuffix(rec.Name, "."+rel) {
			return true
		}
	}
	return false
}

func (s *Sim) soaLocked(zone *domain) []dns.RR {
	for _, rec := range s.nameRecordsLocked(zone.Name, "@") {
		if rec.Type == "SOA" {
			return []dns.RR{recordRR(zone, rec)}
		}
	}
	return nil
}

// ownerName is a record's fully qualified owner name.
func ownerName(zone *domain, rel string) string {
	if rel == "@" {
		return zone.Name + "."
	}
	return rel + "." + zone.Name + "."
}

// targetFQDN turns a CNAME or NS record's data into a fully qualified name:
// "@" is the apex, and data without the final dot (DigitalOcean's default
// NS records) is taken as already complete.
func targetFQDN(zone *domain, data string) string {
	if data == "@" {
		return zone.Name + "."
	}
	return dns.Fqdn(data)
}

// recordRR renders a record as a DNS resource record (nil when its data
// cannot be, which validation prevents).
func recordRR(zone *domain, rec *domainRecord) dns.RR {
	hdr := dns.RR_Header{Name: ownerName(zone, rec.Name), Class: dns.ClassINET, Ttl: uint32(rec.TTL)}
	switch rec.Type {
	case "A", "AAAA":
		ip, err := netip.ParseAddr(rec.Data)
		if err != nil {
			return nil
		}
		if rec.Type == "A" {
			hdr.Rrtype = dns.TypeA
			return &dns.A{Hdr: hdr, A: net.IP(ip.AsSlice())}
		}
		hdr.Rrtype = dns.TypeAAAA
		return &dns.AAAA{Hdr: hdr, AAAA: net.IP(ip.AsSlice())}
	case "CNAME":
		hdr.Rrtype = dns.TypeCNAME
		return &dns.CNAME{Hdr: hdr, Target: targetFQDN(zone, rec.Data)}
	case "NS":
		hdr.Rrtype = dns.TypeNS
		return &dns.NS{Hdr: hdr, Ns: targetFQDN(zone, rec.Data)}
	case "TXT":
		hdr.Rrtype = dns.TypeTXT
		return &dns.TXT{Hdr: hdr, Txt: splitTXT(rec.Data)}
	case "SOA":
		hdr.Rrtype = dns.TypeSOA
		return &dns.SOA{Hdr: hdr, Ns: dns.Fqdn(defaultNameServers[0]), Mbox: "hostmaster." + zone.Name + ".",
			Serial: zone.Serial, Refresh: 10800, Retry: 3600, Expire: 604800, Minttl: uint32(rec.TTL)}
	}
	return nil
}

// splitTXT cuts TXT data into the 255-byte character strings DNS carries.
func splitTXT(data string) []string {
	var out []string
	for len(data) > 255 {
		out = append(out, data[:255])
		data = data[255:]
	}
	return append(out, data)
}
