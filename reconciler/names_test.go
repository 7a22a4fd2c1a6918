package reconciler

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"

	"genesis.dev/fleet/fakes/dosim"

	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/schema"
)

const namesZone = "t.genesis.test"

// zoneA lists the A records of host in the test zone (data values).
func (h *harness) zoneA(host string) []string {
	h.t.Helper()
	rs, _, err := h.sim.Client("tok-a").Domains.RecordsByTypeAndName(h.t.Context(), namesZone, "A", host+"."+namesZone, &godo.ListOptions{PerPage: 200})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, r.Data)
	}
	slices.Sort(out)
	return out
}

// reservedIPs lists every account's reserved IPs: address → droplet id
// (0: unassigned).
func (h *harness) reservedIPs() map[string]int {
	h.t.Helper()
	h.sim.Sim.Advance(time.Minute) // pending assignments complete
	out := map[string]int{}
	for _, tok := range tokens {
		ips, _, err := h.sim.Client(tok).ReservedIPs.List(h.t.Context(), &godo.ListOptions{PerPage: 200})
		if err != nil {
			h.t.Fatal(err)
		}
		for _, ip := range ips {
			out[ip.IP] = 0
			if ip.Droplet != nil {
				out[ip.IP] = ip.Droplet.ID
			}
		}
	}
	return out
}

// TestNamesFollowTenants: with spec.dns, every action that moves a
// tenant's droplet writes its stable name in the zone — a create, a
// hibernation (the activator), a wake — and a reserved-IP tier's name
// says its reserved IP, which follows its droplet; a name changed by hand
// is found by the audit and put right, a record of no tenant is reported
// and left alone, and state: absent removes the name and releases the
// reserved IP.
func TestNamesFollowTenants(t *testing.T) {
	h := newHarness(t, dosim.Limits{})
	ctx := t.Context()
	if _, _, err := h.sim.Client("tok-a").Domains.Create(ctx, &godo.DomainCreateRequest{Name: namesZone}); err != nil {
		t.Fatal(err)
	}
	f := testFleet()
	f.Spec.DNS = &schema.DNS{Zone: namesZone, Account: "acct-a", TTL: schema.Duration(time.Minute), Activator: "203.0.113.10"}
	f.Spec.Tiers = map[schema.Tier]schema.TierPolicy{schema.TierEnterprise: {ReservedIP: true}}
	f.Spec.Safety.MaxHibernatePercent = 100
	h.state.WriteFleet(f)
	ent := tenant("ws-e", "running", "nyc3")
	ent.Metadata.Tier = schema.TierEnterprise
	h.state.WriteTenant(tenant("ws-a", "running", "nyc3"))
	h.state.WriteTenant(ent)
	h.state.Commit("two tenants with stable names")
	h.converge(ctx)

	st, err := h.store.LoadStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a := st["ws-a"]; a.IP == "" || !slices.Equal(h.zoneA("ws-a"), []string{a.IP}) || a.NameTarget != a.IP {
		t.Errorf("ws-a on %s: name says %v, recorded %q", a.IP, h.zoneA("ws-a"), a.NameTarget)
	}
	e := st["ws-e"]
	if e.ReservedIP == "" || !slices.Equal(h.zoneA("ws-e"), []string{e.ReservedIP}) || e.NameTarget != e.ReservedIP {
		t.Errorf("ws-e: reserved %q, name says %v, recorded %q", e.ReservedIP, h.zoneA("ws-e"), e.NameTarget)
	}
	if got := h.reservedIPs(); got[e.ReservedIP] != e.DropletID {
		t.Errorf("reserved IPs %v, want %s on droplet %d", got, e.ReservedIP, e.DropletID)
	}
	// Hibernate both: the names point at the activator; the reserved IP
	// stays (unassigned, billed: the plan said so).
	h.state.WriteTenant(tenant("ws-a", "hibernated", "nyc3"))
	ent.Spec.State = schema.StateHibernated
	h.state.WriteTenant(ent)
	h.state.Commit("hibernate both")
	h.converge(ctx)
	for _, ws := range []string{"ws-a", "ws-e"} {
		if got := h.zoneA(ws); !slices.Equal(got, []string{"203.0.113.10"}) {
			t.Errorf("hibernated %s: name says %v, want the activator", ws, got)
		}
	}
	if got := h.reservedIPs(); len(got) != 1 || got[e.ReservedIP] != 0 {
		t.Errorf("reserved IPs while hibernated %v, want %s kept unassigned", got, e.ReservedIP)
	}

	// By hand: ws-a's record changed, a record of no tenant added.
	recs, _, err := h.sim.Client("tok-a").Domains.RecordsByTypeAndName(ctx, namesZone, "A", "ws-a."+namesZone, nil)
	if err != nil || len(recs) != 1 {
		t.Fatalf("ws-a records %v %v", recs, err)
	}
	if _, _, err := h.sim.Client("tok-a").Domains.EditRecord(ctx, namesZone, recs[0].ID, &godo.DomainRecordEditRequest{Type: "A", Name: "ws-a", Data: "10.0.0.1", TTL: 60}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.sim.Client("tok-a").Domains.CreateRecord(ctx, namesZone, &godo.DomainRecordEditRequest{Type: "A", Name: "ws-ghost", Data: "10.9.9.9", TTL: 60}); err != nil {
		t.Fatal(err)
	}
	audit, err := h.rec.AuditNames(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(audit.Drifted, []string{"ws-a"}) || len(audit.Orphans) != 1 || !strings.Contains(audit.Orphans[0].Record, "ws-ghost."+namesZone+" A 10.9.9.9") {
		t.Fatalf("audit: drifted %v, orphans %+v", audit.Drifted, audit.Orphans)
	}
	p := h.converge(ctx)
	if got := h.zoneA("ws-a"); !slices.Equal(got, []string{"203.0.113.10"}) {
		t.Errorf("after the repair ws-a's name says %v", got)
	}
	if got := h.zoneA("ws-ghost"); !slices.Equal(got, []string{"10.9.9.9"}) {
		t.Errorf("the orphan record was touched: %v", got)
	}
	if !slices.ContainsFunc(h.rec.LastPlan().Orphans, func(o plan.Orphan) bool { return o.Record != "" }) {
		t.Errorf("the orphan record is not among the fleet's orphans: %+v (plan %+v)", h.rec.LastPlan().Orphans, p)
	}

	// Wake ws-e by commit: its reserved IP moves to the new droplet and
	// the name says it again.
	ent.Spec.State = schema.StateRunning
	h.state.WriteTenant(ent)
	h.state.Commit("wake ws-e")
	h.converge(ctx)
	st, _ = h.store.LoadStatus(ctx)
	if e2 := st["ws-e"]; e2.ReservedIP != e.ReservedIP || e2.DropletID == 0 || e2.DropletID == e.DropletID || h.reservedIPs()[e.ReservedIP] != e2.DropletID ||
		!slices.Equal(h.zoneA("ws-e"), []string{e.ReservedIP}) {
		t.Errorf("woken ws-e: %+v, reserved IPs %v, name %v", e2, h.reservedIPs(), h.zoneA("ws-e"))
	}

	// Absent: the droplet goes, then the name and the reserved IP.
	ent.Spec.State = schema.StateAbsent
	h.state.WriteTenant(ent)
	h.state.Commit("ws-e absent")
	h.converge(ctx)
	if got := h.zoneA("ws-e"); len(got) != 0 {
		t.Errorf("absent ws-e's name still says %v", got)
	}
	if got := h.reservedIPs(); len(got) != 0 {
		t.Errorf("absent ws-e's reserved IP kept: %v", got)
	}
	// DigitalOcean's Domains API down during a create: the droplet is
	// made and kept (no rollback for a record), the name is missing, the
	// point_name repair fails and backs off; once the API is back, a retry
	// (or the backoff's end) writes it.
	if _, err := h.sim.Sim.InjectFault(dosim.Fault{Kind: dosim.FaultError, Route: "POST /v2/domains/*/records", Count: 1000}); err != nil {
		t.Fatal(err)
	}
	h.state.WriteTenant(tenant("ws-f", "running", "nyc3"))
	h.state.Commit("ws-f while the Domains API fails")
	h.converge(ctx)
	st, _ = h.store.LoadStatus(ctx)
	if f := st["ws-f"]; f.DropletID == 0 || f.IP == "" || f.NameTarget != "" || len(h.zoneA("ws-f")) != 0 {
		t.Fatalf("ws-f with the Domains API down: %+v, name %v", f, h.zoneA("ws-f"))
	}
	if !slices.ContainsFunc(h.rec.LastPlan().Held, func(x plan.Held) bool { return x.Workspace == "ws-f" && x.Action == plan.PointName }) {
		t.Errorf("the failed repair is not backing off: held %+v", h.rec.LastPlan().Held)
	}
	h.sim.Sim.ClearFaults()
	if err := h.rec.Retry(ctx, "ws-f", "test", "the Domains API is back"); err != nil {
		t.Fatal(err)
	}
	h.converge(ctx)
	st, _ = h.store.LoadStatus(ctx)
	if f := st["ws-f"]; !slices.Equal(h.zoneA("ws-f"), []string{f.IP}) || f.NameTarget != f.IP {
		t.Errorf("ws-f after the API came back: %+v, name %v", f, h.zoneA("ws-f"))
	}

	// A tenant whose file is removed keeps its name (only absent removes).
	h.state.Remove("tenants/ws-a.yaml")
	h.state.Commit("ws-a's file removed")
	h.converge(ctx)
	if got := h.zoneA("ws-a"); !slices.Equal(got, []string{"203.0.113.10"}) {
		t.Errorf("a removed file's name: %v", got)
	}
}
