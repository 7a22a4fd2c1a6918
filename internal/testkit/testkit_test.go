package testkit

import (
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/schema/sealing"
)

// TestMarshalRoundTrip: what the builder writes decodes, through the
// schema, to the typed value it was given (defaults aside).
func TestMarshalRoundTrip(t *testing.T) {
	ignore := cmpopts.IgnoreUnexported(schema.Fleet{}, schema.Tenant{})
	for name, f := range map[string]*schema.Fleet{"Fleet": Fleet(), "ExampleFleet": ExampleFleet(t)} {
		t.Run(name, func(t *testing.T) {
			got, errs := schema.DecodeFleet(schema.FleetFile, []byte(FleetYAML(f)))
			if len(errs) > 0 {
				t.Fatalf("decode:\n%s\n%v", []byte(FleetYAML(f)), errs)
			}
			want, _ := schema.DecodeFleet(schema.FleetFile, []byte(FleetYAML(f)))
			if diff := cmp.Diff(got, want, ignore); diff != "" {
				t.Errorf("decode twice (-got +want):\n%s", diff)
			}
			if got.Spec.Safety != f.Spec.Safety || got.Spec.Recipients[0] != f.Spec.Recipients[0] {
				t.Errorf("safety/recipients = %+v %v, want %+v %v", got.Spec.Safety, got.Spec.Recipients, f.Spec.Safety, f.Spec.Recipients)
			}
		})
	}
	// A section left at its zero values is absent from the file, so a test
	// can append its own (the reliability suite appends a watchdog): a
	// zero float or int written out would make that a duplicate field.
	plain := FleetYAML(Fleet())
	for _, section := range []string{"watchdog:", "pricing:"} {
		if strings.Contains(plain, section) {
			t.Errorf("Fleet() at zero %s is written out:\n%s", section, plain)
		}
	}
	if _, errs := schema.DecodeFleet(schema.FleetFile, []byte(plain+"  watchdog: {bootDeadline: 1h}\n")); len(errs) > 0 {
		t.Errorf("appending a watchdog section: %v", errs)
	}
	tn := Tenant("ws-a", "nyc3")
	tn.Spec.Domains = []string{"a.example.com"}
	got, errs := schema.DecodeTenant("tenants/ws-a.yaml", []byte(TenantYAML(tn)))
	if len(errs) > 0 {
		t.Fatalf("decode tenant:\n%s\n%v", []byte(TenantYAML(tn)), errs)
	}
	if diff := cmp.Diff(got, tn, ignore); diff != "" {
		t.Errorf("tenant round trip (-got +want):\n%s", diff)
	}
}

// TestStateRepo: a repository built, committed and pushed holds what was
// written, on main of the bare remote.
func TestStateRepo(t *testing.T) {
	r := NewStateRepo(t)
	r.CopyExample("templates")
	r.WriteFleet(Fleet())
	r.WriteTenant(Tenant("ws-a", "nyc3"))
	head := r.Commit("fleet")
	r.Push()
	if got := Git(t, r.Bare, "rev-parse", "main"); got != head {
		t.Errorf("remote main = %s, want %s", got, head)
	}
	if got := r.Git("show", "--name-only", "--format=", "HEAD"); !strings.Contains(got, "tenants/ws-a.yaml") || !strings.Contains(got, "genesis.yaml") {
		t.Errorf("commit holds %q", got)
	}
	r.Remove("tenants/ws-a.yaml")
	if r.Commit("offboard") == head {
		t.Error("second commit has the first one's hash")
	}
	if r.Push(); Git(t, r.Bare, "rev-parse", "main") != r.Head() {
		t.Error("second push did not move the remote")
	}
}

func TestSeal(t *testing.T) {
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := sealing.Decrypt(Seal(t, id.Recipient(), `{"k":"v"}`), id)
	if err != nil || string(plain) != `{"k":"v"}` {
		t.Fatalf("Decrypt = %q, %v", plain, err)
	}
	if len(DemoIdentities(t)) == 0 {
		t.Fatal("no demo identities")
	}
}

func TestFreeAddrAndWait(t *testing.T) {
	if a := FreeAddr(t); !strings.HasPrefix(a, "127.0.0.1:") {
		t.Errorf("FreeAddr = %q", a)
	}
	if p := FreePort(t); p <= 0 {
		t.Errorf("FreePort = %d", p)
	}
	n := 0
	WaitForFast(t, "three polls", func() bool { n++; return n >= 3 })
}
