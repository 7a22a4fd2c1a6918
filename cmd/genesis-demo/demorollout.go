package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/reconciler/rollout"
)

// The n8n versions of the rollout story: one the docker emulator starts,
// migrates and then fails every webhook with (its pre-release says
// broken), and the fixed release.
const (
	demoBrokenN8N = "1.123.82-broken"
	demoFixedN8N  = "1.123.82"
)

// bakeLine is a wave's bake in genesis.yaml.
var bakeLine = regexp.MustCompile(`(?m)^(\s+bake:\s*)\S+\s*$`)

// demoRolloutTimes shortens the state repository's rollout bakes to a
// few seconds, so the story's rollout passes its waves in the demo's time.
func demoRolloutTimes(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, bakeLine.ReplaceAll(data, []byte("${1}5s")), 0o644)
}

// setDefaultN8N rewrites genesis.yaml's spec.defaults.n8nVersion.
func (d *demo) setDefaultN8N(version string) error {
	path := filepath.Join(d.repo, "genesis.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	re := regexp.MustCompile(`(?m)^(\s+n8nVersion:\s*)\S+`)
	if !re.Match(data) {
		return errors.New("genesis.yaml: no spec.defaults.n8nVersion to change")
	}
	return os.WriteFile(path, re.ReplaceAll(data, []byte("${1}"+version)), 0o644)
}

// rolloutSteps are the story's rollout: a broken n8n release stopped at
// the canary (its agent backs up, switches, fails the verification,
// restores the database and the previous image, and rejects the
// version), then the fixed release through every wave.
func (d *demo) rolloutSteps() []storyStep {
	var before string
	// was is what each running droplet reported before the change (a
	// tenant pinning its own version is not moved by a default's change).
	was := map[string]string{}
	return []storyStep{
		{title: "roll out n8n " + demoBrokenN8N + " (spec.rollout: a canary first; the release fails its checks there, the rollout pauses, nobody else gets it)",
			run: func(ctx context.Context) (string, error) {
				prev, err := d.latestRollout(ctx)
				if err != nil {
					return "", err
				}
				before = prev.To.N8NVersion
				f, err := d.fleetNow(ctx)
				if err != nil {
					return "", err
				}
				for _, t := range f.Tenants {
					if t.Lifecycle == "ACTIVE_HEALTHY" && t.N8NVersion != "" {
						was[t.Workspace] = t.N8NVersion
					}
				}
				if err := d.commitAndHook(ctx, "spec.defaults.n8nVersion: "+demoBrokenN8N, func() error { return d.setDefaultN8N(demoBrokenN8N) }); err != nil {
					return "", err
				}
				r, err := d.waitRollout(ctx, prev.ID, func(r api.Rollout) bool { return r.State == rollout.Paused })
				if err != nil {
					return "", err
				}
				return d.checkCanaryStop(ctx, r, before, was)
			}},
		{title: "roll out the fixed n8n " + demoFixedN8N + " (it supersedes the paused rollout and goes through every wave)",
			run: func(ctx context.Context) (string, error) {
				prev, err := d.latestRollout(ctx)
				if err != nil {
					return "", err
				}
				if err := d.commitAndHook(ctx, "spec.defaults.n8nVersion: "+demoFixedN8N, func() error { return d.setDefaultN8N(demoFixedN8N) }); err != nil {
					return "", err
				}
				r, err := d.waitRollout(ctx, prev.ID, func(r api.Rollout) bool { return r.State == rollout.Done })
				if err != nil {
					return "", err
				}
				var b strings.Builder
				fmt.Fprintf(&b, "rollout %s done (%s): ", r.ID, strings.Join(r.Changes, ", "))
				for i, w := range r.Waves {
					if i > 0 {
						b.WriteString(", ")
					}
					fmt.Fprintf(&b, "%s %d applied", w.Name, w.Applied)
				}
				moved := 0
				_, err = d.waitStates(ctx, func(f api.Fleet) bool {
					moved = 0
					for ws, v := range was {
						want := v
						if v == before {
							want = demoFixedN8N
						}
						if t := tenantIn(f, ws); t.Lifecycle == "ACTIVE_HEALTHY" && t.N8NVersion != want {
							return false
						}
						if want == demoFixedN8N {
							moved++
						}
					}
					return true
				})
				if err != nil {
					return "", fmt.Errorf("not every running droplet that ran %s reports n8n %s: %w", before, demoFixedN8N, err)
				}
				fmt.Fprintf(&b, "; every running droplet that ran %s (%d) reports n8n %s, a tenant pinning its own version kept it", before, moved, demoFixedN8N)
				return b.String(), nil
			}},
	}
}

// checkCanaryStop says what the paused rollout shows and checks what the
// story promises: the failure is the agent's own (the release was undone),
// no later wave released anybody, and every running droplet, the canary
// included, reports the version it had.
func (d *demo) checkCanaryStop(ctx context.Context, r api.Rollout, before string, was map[string]string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "rollout %s paused: %s\n", r.ID, r.Reason)
	if len(r.Failures) == 0 || !strings.Contains(r.Failures[0].Reason, "rejected") {
		return "", fmt.Errorf("rollout %s paused without an agent's rejection: %+v", r.ID, r.Failures)
	}
	canary := r.Failures[0].Workspace
	for i, w := range r.Waves {
		// Skipped members are released from the start: the change does
		// not alter their manifests (a tenant pinning its own version).
		if i > 0 && w.Released-w.Skipped > 0 {
			return "", fmt.Errorf("wave %s released %d tenants while the canary failed", w.Name, w.Released-w.Skipped)
		}
	}
	_, err := d.waitStates(ctx, func(f api.Fleet) bool {
		for ws, v := range was {
			if t := tenantIn(f, ws); t.Lifecycle == "ACTIVE_HEALTHY" && t.N8NVersion != v {
				return false
			}
		}
		return tenantIn(f, canary).N8NVersion == before
	})
	if err != nil {
		return "", fmt.Errorf("after the canary's undo not every droplet reports n8n %s: %w", before, err)
	}
	fmt.Fprintf(&b, "canary %s is back on n8n %s with its database restored; the other %d waves released nobody", canary, before, len(r.Waves)-1)
	return b.String(), nil
}

// latestRollout is the newest rollout.
func (d *demo) latestRollout(ctx context.Context) (api.Rollout, error) {
	return d.client.Rollout(ctx, "latest")
}

// waitRollout waits for a rollout newer than after that satisfies done.
func (d *demo) waitRollout(ctx context.Context, after string, done func(api.Rollout) bool) (api.Rollout, error) {
	var last api.Rollout
	for {
		r, err := d.latestRollout(ctx)
		if err == nil {
			if r.ID != after && (r.State != last.State || r.Wave != last.Wave || r.ID != last.ID) {
				d.say("  rollout %s: %s, wave %d/%d", r.ID, r.State, r.Wave+1, len(r.Waves))
			}
			if r.ID != after {
				last = r
				if done(r) {
					return r, nil
				}
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("rollout: still %s at wave %d (%s): %w", last.State, last.Wave, last.Reason, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}
