package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"sort"
	"strings"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/reconciler/plan"
	"genesis.dev/fleet/tenants"

	"genesis.dev/fleet/internal/cliexit"
)

const planUsage = `Usage: genesis plan --state DIR [--reconciler URL [--max-observed-age D]] [--format text|markdown|json] [--allow-mass-change]

Prints what would happen if the state repository in DIR were merged: per
tenant the DigitalOcean actions (create, wake, hibernate, destroy, resize,
adopt, snapshot cleanup), the monthly cost change (from genesis.yaml
spec.sizes), the API calls they spend, orphans, and refusals by the fleet's
safety limits. DIR is read as it is on disk (a pull request's checkout).

With --reconciler, the fleet as the running reconciler observes it (its
GET /v1/observed: the leader's last stored observation, served by every
replica) is planned against; without it, an empty fleet. An observation
that is stale (older than --max-observed-age), unmarked (no observed_at and
leader: a reconciler too old to say), or empty because a DigitalOcean
listing failed is refused with exit status 1, instead of a plan that
would read "create every tenant".
--format markdown prints a pull-request comment (the example state
repository's CI posts it). Exit status 1 when DIR has invalid files (their
errors go to stderr; the plan of the valid tenants is still printed) or the
plan is refused by the safety limits.`

func runPlan(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("plan", planUsage)
	dir := fs.String("state", ".", "state repository folder to plan")
	url := fs.String("reconciler", "", "base URL of the running reconciler to read the observed fleet from")
	format := fs.String("format", "text", "output format: text, markdown or json")
	allow := fs.Bool("allow-mass-change", false, "plan as the reconciler would with --allow-mass-change")
	token := fs.String("token", "", "bearer token for the reconciler API (default $GENESIS_TOKEN)")
	maxAge := fs.Duration("max-observed-age", 10*time.Minute, "refuse a --reconciler observation older than this")
	applyTime := fs.Duration("rollout-apply-time", 2*time.Minute, "how long one droplet takes to apply a fleet-wide change, for the rollout's earliest finish")
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return cliexit.Usage("plan takes no arguments (use --state DIR), got %q", pos)
	}
	switch *format {
	case "text", "markdown", "json":
	default:
		return cliexit.Usage("plan: --format must be text, markdown or json, not %q", *format)
	}
	if _, err := loadRepo(*dir); err != nil {
		return err
	}
	src := tenants.NewDirSource(*dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	snap, err := src.Sync(ctx)
	if err != nil {
		return fmt.Errorf("read %s: %w", *dir, err)
	}
	if snap.Fleet == nil {
		for _, er := range snap.Errors {
			fmt.Fprintln(e.Stderr, er.Error())
		}
		return fmt.Errorf("no valid genesis.yaml in %s: nothing to plan", *dir)
	}
	var observed plan.Observed
	if *url != "" {
		tok := *token
		if tok == "" {
			tok = e.Getenv("GENESIS_TOKEN")
		}
		doc, err := fetchObserved(ctx, *url, tok)
		if err != nil {
			return err
		}
		if err := checkObserved(doc, time.Now(), *maxAge); err != nil {
			return &cliexit.Error{Code: 1, Msg: "plan: " + err.Error()}
		}
		observed = doc.Observed
	}
	d := snap.Desired()
	p := plan.Compute(d, observed, time.Now(), plan.Options{AllowMassChange: *allow})
	sum := plan.Summarize(p, d, observed)
	var latest *api.Rollout
	if *url != "" && snap.Fleet.Spec.Rollout != nil {
		tok := *token
		if tok == "" {
			tok = e.Getenv("GENESIS_TOKEN")
		}
		if latest, err = fetchLatestRollout(ctx, *url, tok); err != nil {
			return err
		}
	}
	waves, err := planRollout(snap, latest, *applyTime)
	if err != nil {
		return err
	}
	switch *format {
	case "json":
		enc := json.NewEncoder(e.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			Plan    plan.Plan    `json:"plan"`
			Summary plan.Summary `json:"summary"`
			Rollout *rolloutPlan `json:"rollout,omitempty"`
			Errors  any          `json:"errors"`
		}{p, sum, waves, snap.Errors}); err != nil {
			return err
		}
	case "markdown":
		plan.WriteMarkdown(e.Stdout, p, sum, snap.Commit)
		waves.write(e.Stdout, true)
		if len(snap.Errors) > 0 {
			fmt.Fprintf(e.Stdout, "\n**%d validation error(s)** — the tenants concerned are left out of this plan:\n\n```\n%s\n```\n", len(snap.Errors), snap.Errors.Error())
		}
	default:
		plan.WriteText(e.Stdout, p, sum, snap.Commit)
		waves.write(e.Stdout, false)
	}
	for _, er := range snap.Errors {
		fmt.Fprintln(e.Stderr, er.Error())
	}
	if len(snap.Errors) > 0 {
		return &cliexit.Error{Code: 1, Msg: fmt.Sprintf("%d validation error(s) in %s", len(snap.Errors), *dir)}
	}
	if len(p.Refused) > 0 && !*allow {
		return &cliexit.Error{Code: 1, Msg: "the plan is refused by the fleet's safety limits"}
	}
	return nil
}

// fetchObserved reads the observed fleet from a running reconciler.
func fetchObserved(ctx context.Context, base, token string) (api.Observed, error) {
	if _, err := url.Parse(base); err != nil {
		return api.Observed{}, cliexit.Usage("plan: bad --reconciler URL: %v", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	o, err := client.New(base, token, nil).Observed(ctx)
	if err != nil {
		return o, fmt.Errorf("read the observed fleet: %w", err)
	}
	return o, nil
}

// checkObserved refuses an observation a plan must not be made against: one
// without observed_at and leader (a reconciler too old to say what it
// serves; an old follower served an empty one), one older than maxAge, and
// an empty one that says a listing failed. An empty complete one is a new
// fleet.
func checkObserved(doc api.Observed, now time.Time, maxAge time.Duration) error {
	switch {
	case doc.ObservedAt.IsZero() || doc.Leader == "":
		return fmt.Errorf("the reconciler's observation is unmarked (no observed_at or leader): it cannot say when or by whom " +
			"the fleet was observed (an older reconciler's follower answers an empty one); upgrade the reconciler, or plan without --reconciler")
	case doc.Status == nil:
		return fmt.Errorf("the reconciler's observation has no Status (fleet_status): not an observation to plan against")
	case now.Sub(doc.ObservedAt) > maxAge:
		return fmt.Errorf("the reconciler's observation is stale: observed_at %s by leader %s, %s ago, more than --max-observed-age %s",
			doc.ObservedAt.UTC().Format(time.RFC3339), doc.Leader, now.Sub(doc.ObservedAt).Round(time.Second), maxAge)
	case !doc.Complete() && len(doc.Droplets) == 0:
		var why []string
		for name, reason := range doc.Incomplete {
			why = append(why, name+": "+reason)
		}
		sort.Strings(why)
		return fmt.Errorf("the reconciler's observation is empty and incomplete (DigitalOcean listing failed: %s): "+
			"a plan against it would create every tenant", strings.Join(why, "; "))
	}
	return nil
}
