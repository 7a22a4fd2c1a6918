package schema

import (
	"strings"
	"testing"
)

func TestSpareWorkspace(t *testing.T) {
	tests := []struct {
		id     string
		region string
		slot   int
		ok     bool
	}{
		{"spare-nyc1-1", "nyc1", 1, true},
		{"spare-sfo3-12", "sfo3", 12, true},
		{"spare-nyc1-0", "", 0, false},
		{"spare-nyc1-01", "", 0, false},
		{"spare-nyc1-x", "", 0, false},
		{"spare--1", "", 0, false},
		{"spare-1", "", 0, false},
		{"ws-acme", "", 0, false},
		{"spare-", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			region, slot, ok := ParseSpareWorkspace(tt.id)
			if region != tt.region || slot != tt.slot || ok != tt.ok {
				t.Fatalf("ParseSpareWorkspace(%q) = %q, %d, %v; want %q, %d, %v", tt.id, region, slot, ok, tt.region, tt.slot, tt.ok)
			}
			if ok && SpareWorkspace(region, slot) != tt.id {
				t.Fatalf("SpareWorkspace(%q, %d) = %q, want %q", region, slot, SpareWorkspace(region, slot), tt.id)
			}
		})
	}
}

// A tenant may not take the spare prefix: a spare's agent adopts a tenant
// workspace only when its own id is a spare's.
func TestTenantIDSparePrefixReserved(t *testing.T) {
	body := strings.ReplaceAll(string(mustRead(t, "testdata/tenants/ws-min.good.yaml")), "ws-min", "spare-nyc1-1")
	_, errs := DecodeTenant("tenants/spare-nyc1-1.yaml", []byte(body))
	if errs == nil || !strings.Contains(errs.Error(), `metadata.id: "spare-nyc1-1": the prefix "spare-" is reserved for hot spares`) {
		t.Fatalf("errors = %v, want the reserved prefix named", errs)
	}
}
