// Package rollout divides a fleet into the waves of a progressive rollout
// (genesis.yaml spec.rollout): which tenants a fleet-wide change reaches
// first, how many of each wave's droplets change at once, how many may
// fail before the rollout pauses, and how long each wave bakes before the
// next starts.
//
// Assignment is pure and deterministic. The waves are taken in order, each
// from the tenants the earlier waves left: a wave's filters (tiers, labels)
// say which of those are eligible, and its percent how many of them it
// takes, rounded up (ceil(p% × eligible), so a 1% canary of a small fleet
// is still one tenant). Which ones is decided by the lowest
// sha256(rollout id, 0x00, workspace): the same rollout always picks the
// same canary, whatever the order the tenants were read in, and the next
// rollout picks another, so no tenant is always first to take the risk.
// The last wave (rest: true) takes every tenant left. Without a policy
// there is one wave of every tenant at once, today's behaviour.
//
// Nothing here acts: the executor applies a wave, watches it bake and
// counts its failures.
package rollout

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"math"
	"slices"
	"sort"
	"time"

	"genesis.dev/fleet/schema"
)

// AllAtOnce names the single wave of a fleet without spec.rollout.
const AllAtOnce = "all"

// Wave is one resolved wave of a rollout.
type Wave struct {
	Name string
	// Tenants are the wave's workspaces, sorted.
	Tenants []string
	// Bake is how long the applied wave must stay healthy before the next
	// starts.
	Bake time.Duration
	// MaxUnavailable is how many of the wave's droplets change at once:
	// the policy's count, or its percentage of the wave rounded down, at
	// most the wave's size and at least 1.
	MaxUnavailable int
	// FailureBudget is how many of the wave's droplets may fail: the
	// rollout pauses when more do (0: on the first failure). A percentage
	// is of the wave's size, rounded down.
	FailureBudget int
}

// Assign divides tenants (by workspace) into the waves of policy for the
// rollout rolloutID. Every tenant is in exactly one wave; waves that select
// nobody are kept, empty, so the executor can report them. A nil policy is
// one wave of every tenant, all changing at once, that never pauses.
//
// A policy is expected to have passed schema.DecodeFleet; a wave's Percent
// of 0 reads as its default, 100.
func Assign(policy *schema.Rollout, tenants map[string]*schema.Tenant, rolloutID string) []Wave {
	remaining := make([]string, 0, len(tenants))
	for ws := range tenants {
		remaining = append(remaining, ws)
	}
	sort.Strings(remaining)
	if policy == nil {
		n := len(remaining)
		return []Wave{{Name: AllAtOnce, Tenants: remaining, MaxUnavailable: max(1, n), FailureBudget: n}}
	}
	waves := make([]Wave, 0, len(policy.Waves))
	for _, pw := range policy.Waves {
		var take []string
		if pw.Rest {
			take, remaining = remaining, nil
		} else {
			take, remaining = pick(pw, tenants, remaining, rolloutID)
		}
		sort.Strings(take)
		if take == nil {
			take = []string{}
		}
		n := len(take)
		waves = append(waves, Wave{
			Name:           pw.Name,
			Tenants:        take,
			Bake:           pw.Bake.Std(),
			MaxUnavailable: max(1, min(pw.MaxUnavailable.Of(n), n)),
			FailureBudget:  pw.FailureBudget.Of(n),
		})
	}
	if len(remaining) > 0 {
		// Only a policy that skipped validation ends without a rest wave;
		// its tenants still change, last, one at a time.
		waves = append(waves, Wave{Name: "rest", Tenants: remaining, MaxUnavailable: 1})
	}
	return waves
}

// pick returns the tenants of remaining that wave w takes and those it
// leaves, both in the order of remaining.
func pick(w schema.RolloutWave, tenants map[string]*schema.Tenant, remaining []string, rolloutID string) (take, left []string) {
	var eligible []string
	for _, ws := range remaining {
		if selects(w, tenants[ws]) {
			eligible = append(eligible, ws)
		}
	}
	n := Size(w.Percent, len(eligible))
	order := make([]ranked, len(eligible))
	for i, ws := range eligible {
		order[i] = ranked{ws, Rank(rolloutID, ws)}
	}
	slices.SortFunc(order, func(a, b ranked) int {
		if c := bytes.Compare(a.rank[:], b.rank[:]); c != 0 {
			return c
		}
		return cmp.Compare(a.ws, b.ws)
	})
	chosen := make(map[string]bool, n)
	for _, r := range order[:n] {
		chosen[r.ws] = true
	}
	for _, ws := range remaining {
		if chosen[ws] {
			take = append(take, ws)
		} else {
			left = append(left, ws)
		}
	}
	return take, left
}

type ranked struct {
	ws   string
	rank [sha256.Size]byte
}

// Rank is workspace's place in the rollout rolloutID: a percent wave takes
// the eligible workspaces of lowest rank.
func Rank(rolloutID, workspace string) [sha256.Size]byte {
	return sha256.Sum256([]byte(rolloutID + "\x00" + workspace))
}

// Size is how many of eligible tenants a wave of percent takes:
// ceil(percent% × eligible), at least 1 when any is eligible, at most all.
// A percent of 0 or less reads as 100.
func Size(percent float64, eligible int) int {
	if eligible == 0 {
		return 0
	}
	if percent <= 0 || percent >= 100 {
		return eligible
	}
	// The small tolerance keeps an exact product (12.5% of 8) from
	// rounding up past itself through floating-point error.
	n := int(math.Ceil(percent*float64(eligible)/100 - 1e-9))
	return max(1, min(n, eligible))
}

// selects reports whether wave w's filters admit tenant t (a nil tenant
// has no tier and no labels).
func selects(w schema.RolloutWave, t *schema.Tenant) bool {
	var meta schema.TenantMeta
	if t != nil {
		meta = t.Metadata
	}
	if len(w.Tiers) > 0 && !slices.Contains(w.Tiers, meta.Tier) {
		return false
	}
	for k, v := range w.Labels {
		if got, ok := meta.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// LowerBound is the earliest a rollout of waves can finish when changing
// one droplet takes perDroplet: each wave changes its droplets
// MaxUnavailable at a time, ceil(size / MaxUnavailable) batches, then
// bakes. A wave with no tenants is skipped, bake included: there is
// nothing to watch. Maintenance windows and failures only add to it.
func LowerBound(waves []Wave, perDroplet time.Duration) time.Duration {
	var total time.Duration
	for _, w := range waves {
		n := len(w.Tenants)
		if n == 0 {
			continue
		}
		per := max(1, w.MaxUnavailable)
		batches := (n + per - 1) / per
		total += time.Duration(batches)*perDroplet + w.Bake
	}
	return total
}
