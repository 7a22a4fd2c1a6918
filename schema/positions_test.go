package schema

import (
	"runtime"
	"strings"
	"testing"
	"unique"
	"unsafe"
)

// TestPositionsTable: the compact table answers exactly what the map it
// was made from held, and at() falls back to the nearest recorded
// ancestor, then to 1:1.
func TestPositionsTable(t *testing.T) {
	m := map[string]Pos{
		"":                         {Line: 1, Col: 1},
		"spec":                     {Line: 3, Col: 1},
		"spec.domains":             {Line: 4, Col: 3},
		"spec.domains[0]":          {Line: 5, Col: 7},
		"spec.credentials[1].name": {Line: 12, Col: 13},
		"spec.params.greeting#key": {Line: 20, Col: 5},
	}
	p := compactPositions(m)
	for path, want := range m {
		if got, ok := p.get(path); !ok || got != want {
			t.Errorf("get(%q) = %v, %v; want %v", path, got, ok, want)
		}
	}
	for _, path := range []string{"spe", "spec.domains[1]", "zzz", "spec.credentials"} {
		if got, ok := p.get(path); ok {
			t.Errorf("get(%q) = %v: not recorded", path, got)
		}
	}
	for path, want := range map[string]Pos{
		"spec.domains[3]":           {Line: 4, Col: 3},
		"spec.credentials[1].type":  {Line: 3, Col: 1},
		"spec.credentials[1].name":  {Line: 12, Col: 13},
		"metadata.id":               {Line: 1, Col: 1},
		"spec.domains[0].something": {Line: 5, Col: 7},
	} {
		if got := p.at(path); got != want {
			t.Errorf("at(%q) = %v, want %v", path, got, want)
		}
	}
	var empty positions
	if got := empty.at("spec.x"); got != (Pos{Line: 1, Col: 1}) {
		t.Errorf("empty table: at = %v, want 1:1", got)
	}
}

// TestDecodeShares: tenants of one shape share their positions table;
// those whose lines differ share the paths; the short strings decoded are
// the interned copies and the long ones (sealed credentials) each file's
// own; the id is the file name's. What the tenants answer is unchanged.
func TestDecodeShares(t *testing.T) {
	// Held before decoding, so that the canonical copies outlive any
	// collection meanwhile.
	region, placeholder := unique.Make("nyc3"), unique.Make("TEMPLATE_GMAIL_UUID")
	defer runtime.KeepAlive(region)
	defer runtime.KeepAlive(placeholder)
	decode := func(file, data string) *Tenant {
		t.Helper()
		tn, errs := DecodeTenant(file, []byte(data))
		if errs != nil {
			t.Fatal(errs)
		}
		return tn
	}
	full := string(mustRead(t, "testdata/tenants/ws-full.good.yaml"))
	aFile := "tenants/ws-full.yaml"
	a := decode(aFile, full)
	b := decode("tenants/ws-other.yaml", strings.NewReplacer("id: ws-full", "id: ws-other", "name: Full Corp", "name: Other Corp").Replace(full))
	// One line more at the top moves every position down a line.
	c := decode("tenants/ws-full.yaml", "# A comment.\n"+full)

	if a.pos != b.pos {
		t.Error("two tenants of one shape have positions tables of their own")
	}
	if a.pos == c.pos {
		t.Error("tenants whose lines differ share a positions table")
	}
	if a.pos.h.Value().paths != c.pos.h.Value().paths {
		t.Error("tenants whose lines differ do not share their paths")
	}
	for _, path := range []string{"metadata.id", "spec.droplet.region", "spec.credentials[1].sealed", "spec.workflows[0].credentials.TEMPLATE_GMAIL_UUID#key"} {
		if got, want := c.Pos(path), (Pos{Line: a.Pos(path).Line + 1, Col: a.Pos(path).Col}); got != want || want.Line <= 2 {
			t.Errorf("Pos(%q) = %v with the comment, %v without", path, got, a.Pos(path))
		}
	}

	same := func(x, y string) bool { return unsafe.StringData(x) == unsafe.StringData(y) }
	for _, tn := range []*Tenant{a, b, c} {
		if !same(tn.Spec.Droplet.Region, region.Value()) {
			t.Errorf("%s: the region is a copy of its own", tn.Metadata.ID)
		}
		for k := range tn.Spec.Workflows[0].Credentials {
			if k == placeholder.Value() && !same(k, placeholder.Value()) {
				t.Errorf("%s: the map key %s is a copy of its own", tn.Metadata.ID, k)
			}
		}
	}
	if s := a.Spec.Credentials[0].Sealed; s != b.Spec.Credentials[0].Sealed || same(s, b.Spec.Credentials[0].Sealed) {
		t.Error("a sealed credential was interned (or decoded differently)")
	}
	if !same(a.Metadata.ID, aFile[len("tenants/"):]) {
		t.Error("the id is not the file name's")
	}
}
