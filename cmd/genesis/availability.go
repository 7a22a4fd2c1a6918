package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"genesis.dev/fleet/api"
	"genesis.dev/fleet/api/client"
	"genesis.dev/fleet/internal/cliexit"
)

const availabilityUsage = `Usage: genesis availability [--worst N] [--reconciler URL] [--token T] [--json]

Shows the fleet's measured availability (GET /v1/availability): per tier and
for the N tenants with the lowest 30-day ratio, the share of minutes their
stable name answered over the last hour, day, week and 30 days, against the
99.5% objective. The reconciler URL defaults to $GENESIS_RECONCILER, the
token (scope admin) to $GENESIS_TOKEN. Exit status: 0 shown, 1 the API
refused or failed, 2 usage error.`

func runAvailability(ctx context.Context, e cliexit.Env, args []string) error {
	fs := e.Flags("availability", availabilityUsage)
	base := fs.String("reconciler", "", "base URL of a running reconciler (default $GENESIS_RECONCILER)")
	token := fs.String("token", "", "bearer token for the reconciler API, scope admin (default $GENESIS_TOKEN)")
	worst := fs.Int("worst", 10, "how many of the lowest tenants to list (0-100)")
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	pos, err := e.Parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return cliexit.Usage("availability: unexpected arguments %q", pos)
	}
	if *worst < 0 || *worst > 100 {
		return cliexit.Usage("availability: --worst %d is not from 0 to 100", *worst)
	}
	if *base == "" {
		*base = e.Getenv("GENESIS_RECONCILER")
	}
	if *base == "" {
		return cliexit.Usage("availability: give --reconciler URL (or set $GENESIS_RECONCILER)")
	}
	if *token == "" {
		*token = e.Getenv("GENESIS_TOKEN")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	a, err := client.New(*base, *token, nil).Availability(ctx, *worst)
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(e.Stdout).Encode(a)
	}
	fmt.Fprintf(e.Stdout, "availability at %s, objective %.1f%%\n\n", a.At.Format(time.RFC3339), 100*a.Objective)
	tw := tabwriter.NewWriter(e.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIER/TENANT\tTENANTS\t1h\t1d\t7d\t30d\t30d BUDGET LEFT")
	for _, t := range a.Tiers {
		fmt.Fprintf(tw, "%s\t%d\t%s\n", t.Tier, t.Tenants, windowCells(t.Windows))
	}
	if len(a.Worst) > 0 {
		fmt.Fprintln(tw, "\t\t\t\t\t\t")
		for _, t := range a.Worst {
			fmt.Fprintf(tw, "%s (%s)\t\t%s\n", t.Workspace, t.Tier, windowCells(t.Windows))
		}
	}
	return tw.Flush()
}

// windowCells renders the ratios and the 30-day budget left.
func windowCells(w api.AvailabilityWindows) string {
	pct := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f%%", 100**v)
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", pct(w.Hour.Ratio), pct(w.Day.Ratio), pct(w.Week.Ratio), pct(w.Month.Ratio), pct(w.Month.BudgetRemaining))
}
