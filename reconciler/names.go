package reconciler

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"genesis.dev/fleet/reconciler/plan"
)

// DefaultNameAuditEvery is Config.NameAuditEvery's default.
const DefaultNameAuditEvery = 10 * time.Minute

// NameAudit is what one audit of the fleet's zone found.
type NameAudit struct {
	At time.Time
	// Records is how many A and AAAA records the zone holds.
	Records int
	// Orphans are records that match no declared tenant: reported (in
	// /v1/fleet's orphans and genesis_dns_orphan_records), never deleted.
	Orphans []plan.Orphan
	// Drifted are the tenants whose A record said something else than
	// recorded (or was missing): their record is marked so the next pass
	// repairs it with point_name.
	Drifted []string
}

// AuditNames lists the fleet's DNS zone (spec.dns) and compares it with
// the tenants, leading or not (it changes nothing on DigitalOcean). A
// record of no declared tenant is an orphan; a declared tenant's A record
// that differs from what fleet_status says it was written to (changed by
// hand, or lost) makes the record's target what the zone says, so the
// planner's point_name puts it right. Tenants with an action running are
// skipped: their action writes the name. It is the loop's slow check: the
// zone is listed in pages of 200 (75 requests for 15,000 tenants), so it
// runs every Config.NameAuditEvery, not every pass.
func (r *Reconciler) AuditNames(ctx context.Context) (NameAudit, error) {
	snap, ok := r.Snapshot()
	if !ok {
		return NameAudit{}, errNoSnapshot
	}
	f := snap.Fleet
	if f == nil || f.Spec.DNS == nil {
		return NameAudit{}, nil
	}
	c, err := r.cloudFor(f)
	if err != nil {
		return NameAudit{}, err
	}
	zone := f.Spec.DNS.Zone
	recs, err := c.ZoneRecords(ctx, f.Spec.DNS.Account, zone)
	if err != nil {
		return NameAudit{}, fmt.Errorf("audit zone %s: %w", zone, err)
	}
	status, err := r.cfg.Store.LoadStatus(ctx)
	if err != nil {
		return NameAudit{}, err
	}
	audit := NameAudit{At: r.cfg.Now(), Records: len(recs)}
	seenA := map[string]string{}
	for _, rec := range recs {
		ts, declared := snap.Tenants[rec.Host]
		if rec.Host == "@" || rec.Host == "" {
			continue // the zone's own apex
		}
		if !declared || ts.Tenant == nil {
			audit.Orphans = append(audit.Orphans, plan.Orphan{Workspace: rec.Host, Account: f.Spec.DNS.Account,
				Record: fmt.Sprintf("%s.%s %s %s", rec.Host, zone, rec.Type, rec.Data), Reason: "DNS record in the fleet's zone that matches no tenant"})
			continue
		}
		if rec.Type == "A" {
			seenA[rec.Host] = rec.Data
		}
	}
	r.mu.Lock()
	running := make(map[string]bool, len(r.running))
	for ws := range r.running {
		running[ws] = true
	}
	r.mu.Unlock()
	for ws, st := range status {
		if _, declared := snap.Tenants[ws]; !declared || running[ws] {
			continue
		}
		actual := seenA[ws]
		if st.NameTarget == actual || (st.NameTarget == "" && actual == "") {
			continue
		}
		if err := r.cfg.Store.SetNameTarget(ctx, ws, st.NameTarget, actual); err != nil {
			return audit, err
		}
		audit.Drifted = append(audit.Drifted, ws)
		r.cfg.Metrics.nameDrift.Inc()
		r.log.Warn("stable name drifted; repairing", "tenant", ws, "name", f.StableName(ws), "recorded", st.NameTarget, "zone_says", actual)
	}
	sort.Strings(audit.Drifted)
	sort.Slice(audit.Orphans, func(i, j int) bool { return audit.Orphans[i].Record < audit.Orphans[j].Record })
	r.cfg.Metrics.nameOrphans.Set(float64(len(audit.Orphans)))
	r.mu.Lock()
	old := r.nameAudit
	r.nameAudit = audit
	r.mu.Unlock()
	for _, o := range audit.Orphans {
		if !containsOrphan(old.Orphans, o) {
			r.log.Warn("orphan DNS record; not deleting it", "record", o.Record)
		}
	}
	if len(audit.Drifted) > 0 {
		r.passFor(audit.Drifted...)
	}
	return audit, nil
}

func containsOrphan(list []plan.Orphan, o plan.Orphan) bool {
	for _, x := range list {
		if strings.EqualFold(x.Record, o.Record) {
			return true
		}
	}
	return false
}

// LastNameAudit is the last AuditNames result (zero before the first).
func (r *Reconciler) LastNameAudit() NameAudit {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nameAudit
}
