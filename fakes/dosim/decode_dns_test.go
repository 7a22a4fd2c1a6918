package dosim

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// namesField fails unless an error message names one of fields, or is about
// the body as a whole (not an object, malformed JSON).
func namesField(t *testing.T, err *apiError, fields ...string) {
	t.Helper()
	if err.status != 400 && err.status != 422 {
		t.Fatalf("status %d: %v", err.status, err)
	}
	if strings.HasPrefix(err.message, "request body") || strings.HasPrefix(err.message, "malformed JSON body") {
		return
	}
	if strings.HasPrefix(err.message, "invalid value for ") {
		return // names the JSON field itself ("invalid value for \"ttl\"")
	}
	for _, f := range fields {
		if strings.Contains(err.message, f) {
			return
		}
	}
	t.Fatalf("error %q names none of %v", err.message, fields)
}

func FuzzDecodeCreateDomain(f *testing.F) {
	for _, s := range []string{`{"name":"t.genesis.test"}`, `{"name":"example.com","ip_address":"192.0.2.1"}`, `{"name":"x"}`,
		`{"name":"a.b","ip_address":"::1"}`, `{"name":"A.B."}`, `{}`, `[]`, `{"name":1}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeCreateDomain(body)
		if err != nil {
			namesField(t, err, "name", "ip_address")
			return
		}
		if !validZoneName(req.Name) || req.Name != strings.ToLower(req.Name) {
			t.Fatalf("accepted name %q", req.Name)
		}
	})
}

func FuzzDecodeRecord(f *testing.F) {
	for _, s := range []string{
		`{"type":"A","name":"ws-a","data":"127.1.0.5","priority":0,"port":0,"ttl":60,"weight":0,"flags":0}`,
		`{"type":"CNAME","name":"www","data":"ws-a.t.genesis.test."}`, `{"type":"TXT","name":"_acme-challenge","data":"x","tag":null}`,
		`{"type":"a","name":"x."}`, `{"ttl":1}`, `{"ttl":1e99}`, `{"name":"*.x"}`, `{"type":"SOA","ttl":300}`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRecord(body)
		if err != nil {
			namesField(t, err, "type", "name", "data", "ttl")
			return
		}
		if req.Type != nil && !knownRecordType(*req.Type) {
			t.Fatalf("accepted type %q", *req.Type)
		}
		if req.Name != nil && checkRecordName(*req.Name) != nil {
			t.Fatalf("accepted name %q", *req.Name)
		}
		if req.TTL != nil && (*req.TTL < minRecordTTL || *req.TTL > maxRecordTTL) {
			t.Fatalf("accepted ttl %d", *req.TTL)
		}
		if req.Type == nil || req.Name == nil || req.Data == nil {
			return
		}
		r := domainRecord{Type: *req.Type, Name: *req.Name, Data: *req.Data, TTL: 30}
		if verr := validateRecord("t.genesis.test", r); verr != nil {
			namesField(t, verr, "name", "data")
			return
		}
		// A valid record renders as a DNS record (writable types).
		if writableTypes[r.Type] && recordRR(&domain{Name: "t.genesis.test"}, &r) == nil {
			t.Fatalf("valid record %+v does not render", r)
		}
	})
}

func FuzzDecodeCreateReservedIP(f *testing.F) {
	for _, s := range []string{`{"region":"fra1"}`, `{"droplet_id":300000001}`, `{"region":"fra1","droplet_id":1}`, `{"droplet_id":-1}`,
		`{"droplet_id":"1"}`, `{"project_id":"x"}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeCreateReservedIP(body)
		if err != nil {
			namesField(t, err, "region", "droplet_id")
			return
		}
		if (req.Region == "") == (req.DropletID == 0) || req.DropletID < 0 {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func FuzzDecodeReservedIPAction(f *testing.F) {
	for _, s := range []string{`{"type":"assign","droplet_id":300000001}`, `{"type":"unassign"}`, `{"type":"assign"}`,
		`{"type":"unassign","droplet_id":1}`, `{"type":"reboot"}`, `{"type":null}`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeReservedIPAction(body)
		if err != nil {
			namesField(t, err, "type", "droplet_id")
			return
		}
		if (req.Type == "assign") != (req.DropletID > 0) || (req.Type != "assign" && req.Type != "unassign") {
			t.Fatalf("accepted %+v", req)
		}
	})
}

func TestAllocReservedIPIsApartFromDroplets(t *testing.T) {
	st := newState()
	seen := map[string]bool{}
	for range 1000 {
		ip := st.allocReservedIP()
		st.ReservedIPs[ip] = &reservedIP{IP: ip}
		if seen[ip] || !strings.HasPrefix(ip, "127.2.") || strings.HasSuffix(ip, ".0") || strings.HasSuffix(ip, ".255") {
			t.Fatalf("bad or repeated address %s", ip)
		}
		seen[ip] = true
		if d := st.allocIP(); !strings.HasPrefix(d, "127.1.") {
			t.Fatalf("droplet address %s", d)
		}
	}
}

// TestLoadsVersion1State: a state file written before domains and reserved
// IPs loads, with empty zones, and is written back as the current version.
func TestLoadsVersion1State(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	v1 := `{"version":1,"clock_offset":"0s","state":{"accounts":{"a":{"name":"a","token":"tok","droplet_limit":2}},
		"droplets":{},"actions":{},"snapshots":{},"next_id":300000001,"next_action":2000000001,"next_snapshot":170000001,"next_ip":0}}`
	if err := os.WriteFile(path, []byte(v1), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{StatePath: path, Now: func() time.Time { return time.Unix(1_900_000_000, 0) }})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.update(func(now time.Time) error {
		d := &domain{Name: "a.test", Account: "a", TTL: 1800}
		s.st.Domains[d.Name] = d
		if rec := s.addRecordLocked(d, domainRecord{Type: "A", Name: "@", Data: "127.0.0.1", TTL: 60}); rec.ID != 40000001 {
			t.Errorf("first record id %d", rec.ID)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Version != stateVersion {
		t.Errorf("written version %d, %v; want %d", f.Version, err, stateVersion)
	}
	if _, _, err := loadState(path); err != nil {
		t.Errorf("reload: %v", err)
	}
	if err := os.WriteFile(path, []byte(`{"version":3,"state":{}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadState(path); err == nil || !strings.Contains(err.Error(), "unsupported state file version 3") {
		t.Errorf("version 3: %v", err)
	}
}
