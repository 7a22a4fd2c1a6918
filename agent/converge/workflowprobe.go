package converge

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"genesis.dev/fleet/agent/n8n"
	"genesis.dev/fleet/schema"
)

// managedWorkflow is a workflow the converger made active: its manifest
// name and its n8n id.
type managedWorkflow struct {
	name, id string
}

// publishManaged makes rec.Workflows ProbeWorkflows's list; c.mu is held
// or c is new.
func (c *Converger) publishManaged() {
	list := make([]managedWorkflow, 0, len(c.rec.Workflows))
	for _, name := range slices.Sorted(maps.Keys(c.rec.Workflows)) {
		list = append(list, managedWorkflow{name: name, id: c.rec.Workflows[name].ID})
	}
	c.managed.Store(&list)
}

// maxNamed bounds the workflow names a detail lists.
const maxNamed = 10

// ProbeWorkflows reports whether every managed workflow (each one the
// manifest declares, by the ids the converger recorded) is active in n8n:
// it lists n8n's active workflows (GET /api/v1/workflows?active=true,
// every page) and names each managed one missing from them, deactivated
// or deleted behind the agent's back. The detail counts them ("3 of 3
// managed workflows active"). It does not activate anything: the next
// apply does, and until then the heartbeat says so. While n8n is down on
// purpose (a version switch, a hibernation, a backup) nothing is listed;
// while an apply converges the workflows, neither (they are being created
// and activated).
func (c *Converger) ProbeWorkflows(ctx context.Context) schema.ComponentHealth {
	if why, ok := c.N8NDownOnPurpose(); ok {
		return schema.ComponentHealth{OK: true, Detail: "not checked: n8n is down on purpose (" + why + ")"}
	}
	if c.converging.Load() {
		return schema.ComponentHealth{OK: true, Detail: "not checked: an apply is converging the workflows"}
	}
	var managed []managedWorkflow
	if p := c.managed.Load(); p != nil {
		managed = *p
	}
	if len(managed) == 0 {
		return schema.ComponentHealth{OK: true, Detail: "no managed workflows"}
	}
	api := c.keyed.Load()
	if api == nil {
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("%d managed workflows recorded but no n8n API key", len(managed))}
	}
	yes := true
	listed, err := api.ListWorkflows(ctx, n8n.WorkflowFilter{Active: &yes})
	if err != nil {
		return schema.ComponentHealth{OK: false, Detail: fmt.Sprintf("list active workflows: %v", err)}
	}
	active := map[string]bool{}
	for _, wf := range listed {
		if wf.Active {
			active[wf.ID] = true
		}
	}
	var inactive []string
	for _, w := range managed {
		if !active[w.id] {
			inactive = append(inactive, w.name)
		}
	}
	detail := fmt.Sprintf("%d of %d managed workflows active", len(managed)-len(inactive), len(managed))
	if len(inactive) == 0 {
		return schema.ComponentHealth{OK: true, Detail: detail}
	}
	named := inactive[:min(len(inactive), maxNamed)]
	more := ""
	if len(inactive) > maxNamed {
		more = fmt.Sprintf(" and %d more", len(inactive)-maxNamed)
	}
	return schema.ComponentHealth{OK: false, Detail: clipDetail(detail + "; not active: " + strings.Join(named, ", ") + more)}
}

// N8NDownOnPurpose says whether n8n is stopped on purpose now, and why:
// a version switch under way (for MaxSwitchQuiet at most), a hibernation,
// a backup or restore holding repairs, or a droplet whose n8n was never
// set up (it starts with the first manifest). The containers probe does
// not count n8n's container as down then.
func (c *Converger) N8NDownOnPurpose() (reason string, ok bool) {
	switch sw := c.switching.Load(); {
	case sw != nil && time.Since(sw.since) < MaxSwitchQuiet:
		return fmt.Sprintf("n8n %s -> %s switch", sw.from, sw.to), true
	case c.asleep.Load():
		return "hibernation", true
	case c.held.Load() > 0:
		return "backup or restore", true
	case c.keyed.Load() == nil:
		return "not set up yet: n8n starts with the first manifest", true
	}
	return "", false
}

// clipDetail bounds a component's detail to 1000 bytes.
func clipDetail(s string) string {
	if len(s) > 1000 {
		return s[:1000] + "…"
	}
	return s
}
