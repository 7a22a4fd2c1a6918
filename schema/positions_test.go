package schema

import "testing"

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
