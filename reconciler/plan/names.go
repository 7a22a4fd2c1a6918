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
//     rebuilt): that IPv4;
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
func planName(p *Plan, d Desired, t *schema.Tenant, st Status, droplets int) {
	want, ok := NameTarget(d.Fleet, t, st, droplets)
	if !ok || want == st.NameTarget {
		return
	}
	a := Action{Kind: PointName, Workspace: t.Metadata.ID, Account: d.Fleet.Spec.DNS.Account, Target: want, APICalls: PointName.Info().APICalls}
	switch {
	case want == "":
		a.Reason = "tenant says state: absent; removing its stable name " + d.Fleet.StableName(t.Metadata.ID)
	case st.NameTarget == "":
		a.Reason = "stable name " + d.Fleet.StableName(t.Metadata.ID) + " has no record; pointing it at " + want
	default:
		a.Reason = "stable name " + d.Fleet.StableName(t.Metadata.ID) + " says " + st.NameTarget + "; pointing it at " + want
	}
	p.Actions = append(p.Actions, a)
}
