package schema

import (
	"strings"
	"testing"
	"time"
)

func TestDecodedDNS(t *testing.T) {
	f, errs := DecodeFleet(FleetFile, mustRead(t, "testdata/fleets/dns.good.yaml"))
	if errs != nil {
		t.Fatal(errs)
	}
	if d := f.Spec.DNS; d == nil || d.Zone != "t.genesis.example" || d.Account != "dns-owner" || d.TTL != Duration(2*time.Minute) || d.Activator != "203.0.113.10" {
		t.Errorf("spec.dns = %+v", d)
	}
	if got := f.StableName("ws-acme"); got != "ws-acme.t.genesis.example" {
		t.Errorf("StableName = %q", got)
	}
	// Defaults: the first account, 60 s.
	minimal := strings.Replace(string(mustRead(t, "testdata/fleets/dns.good.yaml")), "    account: dns-owner\n    ttl: 2m\n", "", 1)
	if f, errs = DecodeFleet(FleetFile, []byte(minimal)); errs != nil {
		t.Fatal(errs)
	}
	if d := f.Spec.DNS; d.Account != "a" || d.TTL != Duration(DefaultDNSTTL) {
		t.Errorf("defaults: %+v", d)
	}
	plain, errs := DecodeFleet(FleetFile, mustRead(t, "testdata/fleets/backup.good.yaml"))
	if errs != nil {
		t.Fatal(errs)
	}
	if plain.Spec.DNS != nil || plain.StableName("ws-acme") != "" {
		t.Errorf("no spec.dns: %+v, %q", plain.Spec.DNS, plain.StableName("ws-acme"))
	}
}

// TestTenantDomainInFleetZone: a tenant's own domain in the fleet's zone
// is refused by the rules that see genesis.yaml (it could take another
// tenant's stable name); one outside it is fine.
func TestTenantDomainInFleetZone(t *testing.T) {
	f, errs := DecodeFleet(FleetFile, mustRead(t, "testdata/fleets/dns.good.yaml"))
	if errs != nil {
		t.Fatal(errs)
	}
	const file = "tenants/ws-acme.yaml"
	tenant := func(domain string) *Tenant {
		tn, errs := DecodeTenant(file, []byte("apiVersion: genesis.dev/v1\nkind: Tenant\nmetadata: {id: ws-acme, name: Acme, tier: pro}\n"+
			"spec:\n  state: running\n  droplet: {region: nyc3}\n  domains: ["+domain+"]\n"))
		if errs != nil {
			t.Fatal(errs)
		}
		return tn
	}
	errs = tenant("ws-other.t.genesis.example").Check(file, Context{Fleet: f})
	if len(errs) != 1 || !strings.Contains(errs.Error(), "7:") || !strings.Contains(errs.Error(), "is in the fleet's zone t.genesis.example") ||
		!strings.Contains(errs.Error(), "ws-acme.t.genesis.example") {
		t.Errorf("a domain in the zone: %v", errs)
	}
	if errs := tenant("track.acme.com").Check(file, Context{Fleet: f}); len(errs) != 0 {
		t.Errorf("a domain outside the zone: %v", errs)
	}
}

// TestTierPolicy: spec.tiers decodes by tier, reservedIP defaults off, and
// the reserved IP price defaults to DefaultReservedIPMonthUSD.
func TestTierPolicy(t *testing.T) {
	f, errs := DecodeFleet(FleetFile, mustRead(t, "testdata/fleets/tiers.good.yaml"))
	if errs != nil {
		t.Fatal(errs)
	}
	if !f.ReservedIP(TierEnterprise) || f.ReservedIP(TierStarter) || f.ReservedIP(TierPro) || f.Spec.Pricing.ReservedIPMonthUSD != 4 {
		t.Errorf("tiers %+v pricing %+v", f.Spec.Tiers, f.Spec.Pricing)
	}
	plain, errs := DecodeFleet(FleetFile, mustRead(t, "testdata/fleets/dns.good.yaml"))
	if errs != nil {
		t.Fatal(errs)
	}
	if plain.ReservedIP(TierEnterprise) || plain.Spec.Pricing.ReservedIPMonthUSD != DefaultReservedIPMonthUSD {
		t.Errorf("defaults: tiers %+v pricing %+v", plain.Spec.Tiers, plain.Spec.Pricing)
	}
}
