package cloud

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/digitalocean/godo"
)

// Name is one stable name in a DigitalOcean-hosted zone: Host.Zone, whose
// A (and AAAA) record the reconciler keeps pointing at the tenant's
// current address.
type Name struct {
	// Account manages the zone.
	Account string
	Zone    string
	// Host is the record's name relative to Zone (the workspace id).
	Host string
	TTL  int
}

// FQDN is the name's fully qualified form, without the final dot.
func (n Name) FQDN() string { return n.Host + "." + n.Zone }

// NameRecord is one A or AAAA record seen in a zone.
type NameRecord struct {
	ID   int
	Type string
	// Host is relative to the zone ("@" for the apex).
	Host string
	Data string
	TTL  int
}

// PointName makes n's A record say ipv4 and its AAAA record say ipv6,
// each with n.TTL; an empty address removes that type's records. It is
// idempotent: it reads the name's records first, edits one that differs,
// creates one that is missing and removes duplicates (the name is ours:
// a second record of it is a leftover of an interrupted try), so calling
// it again after a crash part way converges instead of adding records.
// It touches no other name.
func (p *Pool) PointName(ctx context.Context, n Name, ipv4, ipv6 string) error {
	if err := leaseValid(ctx); err != nil {
		return fmt.Errorf("point %s: %w", n.FQDN(), err)
	}
	ac, err := p.account(n.Account, "point name "+n.FQDN())
	if err != nil {
		return err
	}
	for _, want := range []struct{ typ, data string }{{"A", ipv4}, {"AAAA", ipv6}} {
		if want.data != "" {
			if a, err := netip.ParseAddr(want.data); err != nil || (want.typ == "A") != a.Is4() {
				return terminalf(ac.name, "point name "+n.FQDN(), "%q is not an IPv%s address", want.data, map[bool]string{true: "4", false: "6"}[want.typ == "A"])
			}
		}
		if err := p.pointType(ctx, ac, n, want.typ, want.data); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pool) pointType(ctx context.Context, ac *account, n Name, typ, data string) error {
	op := fmt.Sprintf("point %s %s", typ, n.FQDN())
	recs, err := p.recordsOf(ctx, ac, n, typ)
	if err != nil {
		return err
	}
	keep := -1
	if data != "" {
		for i, r := range recs {
			if r.Data == data && r.TTL == n.TTL {
				keep = i
				break
			}
		}
		if keep < 0 && len(recs) > 0 {
			keep = 0
			id := recs[0].ID
			req := &godo.DomainRecordEditRequest{Type: typ, Name: n.Host, Data: data, TTL: n.TTL}
			if err := p.call(ctx, ac, op, func(ctx context.Context) (*godo.Response, error) {
				_, resp, err := ac.client.Domains.EditRecord(ctx, n.Zone, id, req)
				return resp, err
			}); err != nil {
				return err
			}
			p.log.Info("name moved", "name", n.FQDN(), "type", typ, "from", recs[0].Data, "to", data)
		}
		if keep < 0 {
			req := &godo.DomainRecordEditRequest{Type: typ, Name: n.Host, Data: data, TTL: n.TTL}
			if err := p.call(ctx, ac, op, func(ctx context.Context) (*godo.Response, error) {
				_, resp, err := ac.client.Domains.CreateRecord(ctx, n.Zone, req)
				return resp, err
			}); err != nil {
				return err
			}
			p.log.Info("name created", "name", n.FQDN(), "type", typ, "to", data)
		}
	}
	for i, r := range recs {
		if i == keep {
			continue
		}
		id := r.ID
		err := p.call(ctx, ac, op, func(ctx context.Context) (*godo.Response, error) {
			return ac.client.Domains.DeleteRecord(ctx, n.Zone, id)
		})
		if err != nil && !IsNotFound(err) {
			return err
		}
		p.log.Info("name record removed", "name", n.FQDN(), "type", typ, "data", r.Data)
	}
	return nil
}

// recordsOf lists n's records of type typ.
func (p *Pool) recordsOf(ctx context.Context, ac *account, n Name, typ string) ([]NameRecord, error) {
	var out []NameRecord
	for page := 1; ; page++ {
		var rs []godo.DomainRecord
		var resp *godo.Response
		err := p.call(ctx, ac, "list records of "+n.FQDN(), func(ctx context.Context) (*godo.Response, error) {
			var err error
			rs, resp, err = ac.client.Domains.RecordsByTypeAndName(ctx, n.Zone, typ, n.FQDN(), &godo.ListOptions{Page: page, PerPage: perPage})
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			// The filter is the server's; a record of another name or
			// type is never ours to touch.
			if r.Type == typ && sameHost(r.Name, n) {
				out = append(out, NameRecord{ID: r.ID, Type: r.Type, Host: r.Name, Data: r.Data, TTL: r.TTL})
			}
		}
		if lastPage(resp) || len(rs) == 0 {
			return out, nil
		}
	}
}

// sameHost reports whether a record name as DigitalOcean returns it
// (relative, or fully qualified with or without the final dot) is n.
func sameHost(name string, n Name) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	host := strings.ToLower(n.Host)
	return name == host || name == strings.ToLower(n.FQDN())
}

// ZoneRecords lists every A and AAAA record of zone in account (the
// orphan audit's view: which names match no tenant).
func (p *Pool) ZoneRecords(ctx context.Context, account, zone string) ([]NameRecord, error) {
	ac, err := p.account(account, "list zone "+zone)
	if err != nil {
		return nil, err
	}
	var out []NameRecord
	for page := 1; ; page++ {
		var rs []godo.DomainRecord
		var resp *godo.Response
		err := p.call(ctx, ac, "list zone "+zone, func(ctx context.Context) (*godo.Response, error) {
			var err error
			rs, resp, err = ac.client.Domains.Records(ctx, zone, &godo.ListOptions{Page: page, PerPage: perPage})
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			if r.Type == "A" || r.Type == "AAAA" {
				host := strings.TrimSuffix(strings.TrimSuffix(strings.ToLower(r.Name), "."), "."+strings.ToLower(zone))
				out = append(out, NameRecord{ID: r.ID, Type: r.Type, Host: host, Data: r.Data, TTL: r.TTL})
			}
		}
		if lastPage(resp) || len(rs) == 0 {
			return out, nil
		}
	}
}
