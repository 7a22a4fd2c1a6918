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
	if d := f.Spec.DNS; d == nil || d.Zone != "t.genesis.example" || d.Account != "dns-owner" || d.TTL != Duration(2*time.Minute) {
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
