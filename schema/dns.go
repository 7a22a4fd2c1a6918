package schema

import (
	"net/netip"
	"time"
)

// DNS bounds and default (spec.dns.ttl).
const (
	DefaultDNSTTL = time.Minute
	MinDNSTTL     = 30 * time.Second
	MaxDNSTTL     = 24 * time.Hour
)

// DNS is spec.dns: the fleet's DNS zone, managed through DigitalOcean's
// Domains API, in which every tenant gets a stable name
// <workspace>.<zone> that follows its current droplet (wake, resize,
// rebuild). Customers point their CNAMEs at it and n8n's webhook URL uses
// it. Absent, tenants have no stable name (only <ip>.sslip.io).
type DNS struct {
	// Zone is the DNS zone (a domain the fleet's DigitalOcean account
	// hosts), e.g. t.genesis.example.
	Zone string `yaml:"zone" json:"zone"`
	// Account names the spec.accounts entry whose token manages the
	// zone; default the first account.
	Account string `yaml:"account" json:"account,omitempty"`
	// TTL is the records' time to live; default 60s, 30s to 24h.
	TTL Duration `yaml:"ttl" json:"ttl,omitempty"`
	// Activator is the public IPv4 address of the activator (the HTTPS
	// front that wakes a hibernated tenant on its first request, behind
	// a load balancer when several replicas run one). A hibernated
	// tenant's stable name points here; without it the name keeps its
	// last address while the tenant sleeps.
	Activator string `yaml:"activator" json:"activator,omitempty"`
	// ActivatorIPv6 is the activator's IPv6 address (optional): the AAAA
	// record of a hibernated tenant's name.
	ActivatorIPv6 string `yaml:"activatorIPv6" json:"activatorIPv6,omitempty"`
}

// StableName is workspace's stable name in the fleet's zone ("" without
// spec.dns, and for a spare, which serves no customer).
func (f *Fleet) StableName(workspace string) string {
	if f == nil || f.Spec.DNS == nil || f.Spec.DNS.Zone == "" || IsSpareWorkspace(workspace) {
		return ""
	}
	return workspace + "." + f.Spec.DNS.Zone
}

// validateDNS judges spec.dns.
func (f *Fleet) validateDNS(c *errorf) {
	d := f.Spec.DNS
	if d == nil {
		return
	}
	at := func(path, format string, args ...any) { c.at(f.pos.at(path), format, args...) }
	switch {
	case d.Zone == "":
		at("spec.dns", "spec.dns.zone is required (the DNS zone tenants' stable names live in, e.g. t.genesis.example)")
	case checkDomain(d.Zone) != "":
		at("spec.dns.zone", "spec.dns.zone: %q %s", d.Zone, checkDomain(d.Zone))
	case len(d.Zone) > 200:
		// <workspace id, up to 40>.<zone> must stay within 253.
		at("spec.dns.zone", "spec.dns.zone: %q is longer than 200 characters (a stable name adds a workspace id)", d.Zone)
	}
	if d.Account != "" {
		if _, ok := f.Account(d.Account); !ok {
			at("spec.dns.account", "spec.dns.account: %q is not in spec.accounts", d.Account)
		}
	}
	if d.Activator != "" {
		if a, err := netip.ParseAddr(d.Activator); err != nil || !a.Is4() {
			at("spec.dns.activator", "spec.dns.activator: %q is not an IPv4 address", d.Activator)
		}
	}
	if d.ActivatorIPv6 != "" {
		if a, err := netip.ParseAddr(d.ActivatorIPv6); err != nil || !a.Is6() || a.Is4In6() {
			at("spec.dns.activatorIPv6", "spec.dns.activatorIPv6: %q is not an IPv6 address", d.ActivatorIPv6)
		} else if d.Activator == "" {
			at("spec.dns.activatorIPv6", "spec.dns.activatorIPv6 needs spec.dns.activator (the IPv4 address) too")
		}
	}
	if f.has("spec.dns.ttl") && (d.TTL < Duration(MinDNSTTL) || d.TTL > Duration(MaxDNSTTL)) {
		at("spec.dns.ttl", "spec.dns.ttl: %s is outside %s to %s", d.TTL, Duration(MinDNSTTL), Duration(MaxDNSTTL))
	}
}

// setDefaults fills what a valid spec.dns left out.
func (d *DNS) setDefaults(accounts []Account) {
	if d == nil {
		return
	}
	if d.TTL == 0 {
		d.TTL = Duration(DefaultDNSTTL)
	}
	if d.Account == "" && len(accounts) > 0 {
		d.Account = accounts[0].Name
	}
}

// DefaultReservedIPMonthUSD is spec.pricing.reservedIPMonthUSD's default:
// DigitalOcean bills a reserved IPv4 that no droplet holds.
const DefaultReservedIPMonthUSD = 5.0

// TierPolicy is spec.tiers.<tier>.
type TierPolicy struct {
	// ReservedIP gives each tenant of the tier a DigitalOcean reserved
	// IPv4 that moves to its droplet on every create, wake, resize and
	// rebuild (customers may use it in an A record); its stable name then
	// says the reserved IP. It stays reserved (and billed) while the
	// tenant hibernates, and is released at state: absent.
	ReservedIP bool `yaml:"reservedIP" json:"reservedIP,omitempty"`
}

// ReservedIP reports whether tenants of tier get a reserved IP.
func (f *Fleet) ReservedIP(tier Tier) bool {
	return f != nil && f.Spec.Tiers[tier].ReservedIP
}

// validateTiers judges spec.tiers.
func (f *Fleet) validateTiers(c *errorf) {
	for _, t := range sortedKeys(f.Spec.Tiers) {
		if !t.valid() {
			c.at(f.pos.at("spec.tiers."+string(t)), "spec.tiers: %q is not one of starter, pro, enterprise", t)
		}
	}
}
