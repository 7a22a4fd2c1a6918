package plan

import (
	"genesis.dev/fleet/reconciler/lifecycle"
	"genesis.dev/fleet/schema"
)

// NameTarget is the address a tenant's stable DNS name should say, and
// whether the plan has an opinion at all (false: leave the record as it
// is). With spec.dns:
//
//   - a droplet we record with a known IPv4 (running, booting, degraded,
//     rebuilt): its reserved IP when it holds one, else that IPv4;
//   - hibernated (no droplet): spec.dns.activator, which wakes the tenant
//     on its first request; without an activator the name keeps its last
//     address (no opinion);
//   - state: absent once its droplets are gone: "" (the record goes; the
//     only case that removes one);
//   - anything else (pending, an action part way, a tenant whose file is
//     gone): no opinion.
//
// The action that moves a droplet writes the name itself (create, wake,
// resize, rebuild, spare assignment, hibernate, destroy); this is the
// repair when that write failed, or the record was changed by hand.
func NameTarget(f *schema.Fleet, t *schema.Tenant, st Status, droplets int) (string, bool) {
	if f == nil || f.Spec.DNS == nil || t == nil {
		return "", false
	}
	switch {
	case t.Spec.State == schema.StateAbsent:
		return "", droplets == 0 && st.DropletID == 0
	case st.DropletID != 0 && st.ReservedIP != "":
		return st.ReservedIP, true
	case st.DropletID != 0 && st.IP != "":
		return st.IP, true
	case droplets == 0 && st.DropletID == 0 && lifecycle.State(st.Lifecycle) == lifecycle.Hibernated && f.Spec.DNS.Activator != "":
		return f.Spec.DNS.Activator, true
	}
	return "", false
}

// planName adds a point_name action when the tenant's stable name says
// something else than NameTarget. It runs only for a tenant the plan has
// nothing else for: an action in flight writes the name itself.
//
// A tenant at state: absent whose droplets are gone and that still holds
// a reserved IP gets one too (with or without spec.dns): point_name to ""
// also releases the reserved IP.
func planName(p *Plan, d Desired, t *schema.Tenant, st Status, droplets int) {
	want, ok := NameTarget(d.Fleet, t, st, droplets)
	release := t.Spec.State == schema.StateAbsent && droplets == 0 && st.DropletID == 0 && st.ReservedIP != ""
	if release {
		want, ok = "", true
	}
	if !ok || (want == st.NameTarget && !release) {
		return
	}
	a := Action{Kind: PointName, Workspace: t.Metadata.ID, Target: want, APICalls: PointName.Info().APICalls}
	if d.Fleet.Spec.DNS != nil {
		a.Account = d.Fleet.Spec.DNS.Account
	}
	if release {
		a.CostDelta = -d.Fleet.Spec.Pricing.ReservedIPMonthUSD
	}
	switch {
	case release && st.NameTarget == "":
		a.Reason = "tenant says state: absent; releasing its reserved IP " + st.ReservedIP
	case want == "":
		a.Reason = "tenant says state: absent; removing its stable name " + d.Fleet.StableName(t.Metadata.ID)
	case st.NameTarget == "":
		a.Reason = "stable name " + d.Fleet.StableName(t.Metadata.ID) + " has no record; pointing it at " + want
	default:
		a.Reason = "stable name " + d.Fleet.StableName(t.Metadata.ID) + " says " + st.NameTarget + "; pointing it at " + want
	}
	p.Actions = append(p.Actions, a)
}

// reservedIPCost is what an action of kind changes in the monthly bill
// for the tenant's reserved IP (spec.tiers.<t>.reservedIP): DigitalOcean
// bills one no droplet holds, so a hibernation starts the charge and a
// wake ends it.
func reservedIPCost(f *schema.Fleet, t *schema.Tenant, st Status, kind Kind) float64 {
	if !f.ReservedIP(t.Metadata.Tier) {
		return 0
	}
	switch {
	case kind == Hibernate:
		return f.Spec.Pricing.ReservedIPMonthUSD
	case kind == Wake && st.ReservedIP != "":
		return -f.Spec.Pricing.ReservedIPMonthUSD
	}
	return 0
}
