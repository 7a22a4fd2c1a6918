package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/reconciler/rollout"
	"genesis.dev/fleet/schema"
	"genesis.dev/fleet/tenants"
)

// rolloutPlan is how spec.rollout would pace a fleet-wide change of the
// planned commit: its waves and earliest finish.
type rolloutPlan struct {
	// Inputs is the digest of the commit's fleet-wide inputs (default n8n
	// version, agent, templates).
	Inputs string `json:"inputs"`
	// Starts: a rollout starts when this commit is merged (the running
	// reconciler's newest rollout has other inputs); nil: unknown
	// (planned without --reconciler).
	Starts *bool `json:"starts,omitempty"`
	// Current is the running reconciler's newest rollout (id and state).
	Current string            `json:"current,omitempty"`
	Waves   []rolloutPlanWave `json:"waves"`
	// EarliestFinishSeconds is rollout.LowerBound at ApplySeconds per
	// droplet: maintenance windows and failures only add to it.
	EarliestFinishSeconds float64 `json:"earliest_finish_seconds"`
	ApplySeconds          float64 `json:"apply_seconds"`
}

type rolloutPlanWave struct {
	Name           string  `json:"name"`
	Tenants        int     `json:"tenants"`
	MaxUnavailable int     `json:"max_unavailable"`
	FailureBudget  int     `json:"failure_budget"`
	BakeSeconds    float64 `json:"bake_seconds"`
}

// planRollout is the rollout section of a plan (nil without spec.rollout).
// The wave sizes do not depend on the rollout id; which tenants are the
// canary does (the reconciler draws them when the rollout starts).
func planRollout(snap tenants.Snapshot, latest *api.Rollout, apply time.Duration) (*rolloutPlan, error) {
	policy := snap.Fleet.Spec.Rollout
	if policy == nil {
		return nil, nil
	}
	_, _, digest, err := rollout.FromDesired(snap.Fleet, snap.Templates)
	if err != nil {
		return nil, fmt.Errorf("fleet inputs: %w", err)
	}
	members := map[string]*schema.Tenant{}
	for ws, ts := range snap.Tenants {
		if ts.Tenant != nil && !schema.IsSpareWorkspace(ws) {
			members[ws] = ts.Tenant
		}
	}
	waves := rollout.Assign(policy, members, "plan")
	rp := &rolloutPlan{Inputs: digest, ApplySeconds: apply.Seconds(), EarliestFinishSeconds: rollout.LowerBound(waves, apply).Seconds()}
	for _, w := range waves {
		rp.Waves = append(rp.Waves, rolloutPlanWave{Name: w.Name, Tenants: len(w.Tenants), MaxUnavailable: w.MaxUnavailable,
			FailureBudget: w.FailureBudget, BakeSeconds: w.Bake.Seconds()})
	}
	if latest != nil {
		starts := latest.To.Digest != digest
		rp.Starts, rp.Current = &starts, latest.ID+" ("+latest.State+")"
	}
	return rp, nil
}

// fetchLatestRollout reads the running reconciler's newest rollout (nil:
// none yet).
func fetchLatestRollout(ctx context.Context, base, token string) (*api.Rollout, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	r, err := client.New(base, token, nil).Rollout(ctx, "latest")
	if errors.Is(err, api.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the newest rollout: %w", err)
	}
	return &r, nil
}

// write prints the section (markdown for a pull-request comment).
func (rp *rolloutPlan) write(w io.Writer, markdown bool) {
	if rp == nil {
		return
	}
	head, item := "\nRollout (spec.rollout)\n", "  "
	if markdown {
		head, item = "\n### Rollout (spec.rollout)\n\n", "- "
	}
	fmt.Fprint(w, head)
	switch {
	case rp.Starts == nil:
		fmt.Fprintf(w, "%sfleet inputs %s; a change of the default n8n version, the agent or a template is paced as below (plan with --reconciler to see whether this commit starts a rollout)\n", item, rp.Inputs[:12])
	case *rp.Starts:
		fmt.Fprintf(w, "%sthis commit changes the fleet inputs (to %s): merging it starts a rollout, superseding %s\n", item, rp.Inputs[:12], rp.Current)
	default:
		fmt.Fprintf(w, "%sno fleet-wide change: the newest rollout %s already has these inputs (%s)\n", item, rp.Current, rp.Inputs[:12])
	}
	for _, wv := range rp.Waves {
		fmt.Fprintf(w, "%swave %s: %d tenant(s), %d at a time, bake %s, pauses after %d failure(s)\n", item, wv.Name, wv.Tenants,
			wv.MaxUnavailable, time.Duration(wv.BakeSeconds*float64(time.Second)), wv.FailureBudget+1)
	}
	fmt.Fprintf(w, "%searliest finish: %s at %s per droplet (maintenance windows and failures only add to it)\n", item,
		time.Duration(rp.EarliestFinishSeconds*float64(time.Second)), time.Duration(rp.ApplySeconds*float64(time.Second)))
}
